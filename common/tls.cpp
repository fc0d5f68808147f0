// TLS 1.3 context set-up and the NSS key log (the format Wireshark reads: "CLIENT_RANDOM"-style lines).
#include "tls.h"

#include <Poco/Net/AcceptCertificateHandler.h>
#include <Poco/Net/RejectCertificateHandler.h>
#include <Poco/Net/SSLManager.h>
#include <Poco/Net/SecureStreamSocket.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <map>
#include <mutex>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace maillab {

namespace {
std::mutex keyLogMutex;
std::map<SSL_CTX*, FILE*>& keyLogFiles() {
    static std::map<SSL_CTX*, FILE*> files;
    return files;
}

void keyLogCallback(const SSL* ssl, const char* line) {
    std::lock_guard<std::mutex> lock(keyLogMutex);
    auto it = keyLogFiles().find(SSL_get_SSL_CTX(ssl));
    if (it == keyLogFiles().end()) return;
    std::fprintf(it->second, "%s\n", line);
    std::fflush(it->second);
}

thread_local std::string lastHandshake;
thread_local SSL* lastSsl = nullptr;

// Poco 1.11 gives no access to a socket's SSL*, so the handshake is described when it completes,
// on the thread that performed it.
void infoCallback(const SSL* ssl, int where, int) {
    if (where & SSL_CB_HANDSHAKE_DONE) {
        lastHandshake = describeTlsSession(const_cast<SSL*>(ssl));
        lastSsl = const_cast<SSL*>(ssl);
    }
}

void restrictToTls13(Poco::Net::Context& context) {
    SSL_CTX* ctx = context.sslContext();
    // RFC 8314 implicit TLS, lab rule: TLS 1.3 only.
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
        throw std::runtime_error("cannot require TLS 1.3");
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    SSL_CTX_set_info_callback(ctx, infoCallback);
}
}  // namespace

void initializeTls() {
    static std::once_flag once;
    std::call_once(once, [] {
        Poco::Net::initializeSSL();
        std::atexit([] { Poco::Net::uninitializeSSL(); });
    });
}

std::string enableKeyLog(Poco::Net::Context& context, const std::string& path) {
    std::string file = path;
    if (file.empty()) {
        const char* env = std::getenv("SSLKEYLOGFILE");
        if (env) file = env;
    }
    if (file.empty()) return "";
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) throw std::runtime_error("cannot open key log " + file);
    ::fchmod(fd, 0600);
    FILE* f = ::fdopen(fd, "a");
    {
        std::lock_guard<std::mutex> lock(keyLogMutex);
        keyLogFiles()[context.sslContext()] = f;
    }
    SSL_CTX_set_keylog_callback(context.sslContext(), keyLogCallback);
    return file;
}

Poco::Net::Context::Ptr makeServerContext(const TlsOptions& options) {
    initializeTls();
    Poco::Net::Context::Params params;
    params.privateKeyFile = options.keyFile;
    params.certificateFile = options.certFile;
    params.verificationMode = Poco::Net::Context::VERIFY_NONE;
    // No default CA store: a server that does not verify clients has no use for it, and loading it
    // costs on every handshake.
    params.loadDefaultCAs = false;
    params.cipherList = "DEFAULT";
    Poco::Net::Context::Ptr context = new Poco::Net::Context(Poco::Net::Context::TLS_SERVER_USE, params);
    restrictToTls13(*context);
    // Without a session cache, TLS 1.3 session tickets still allow stateless resumption. One ticket
    // is enough for a client that resumes once; each costs an encryption and a record per handshake.
    context->enableSessionCache(false);
    SSL_CTX_set_num_tickets(context->sslContext(), static_cast<size_t>(options.sessionTickets));
    static std::once_flag once;
    std::call_once(once, [&] {
        Poco::Net::SSLManager::instance().initializeServer(
            nullptr, new Poco::Net::RejectCertificateHandler(true), context);
    });
    return context;
}

Poco::Net::Context::Ptr makeClientContext(const TlsOptions& options) {
    initializeTls();
    Poco::Net::Context::Params params;
    params.caLocation = options.caFile;
    // VERIFY_STRICT: chain and hostname are checked even for localhost (VERIFY_RELAXED skips the
    // hostname check for localhost in Poco 1.11).
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    params.loadDefaultCAs = false;
    params.cipherList = "DEFAULT";
    Poco::Net::Context::Ptr context = new Poco::Net::Context(Poco::Net::Context::TLS_CLIENT_USE, params);
    restrictToTls13(*context);
    static std::once_flag once;
    std::call_once(once, [&] {
        Poco::Net::SSLManager::instance().initializeClient(
            nullptr, new Poco::Net::RejectCertificateHandler(false), context);
    });
    return context;
}

std::string lastHandshakeOnThisThread() { return lastHandshake; }

void closeTlsGracefully(int fd, int lingerMilliseconds) {
    SSL* ssl = lastSsl;
    lastSsl = nullptr;
    if (!ssl || SSL_get_fd(ssl) != fd) return;  // not this connection's TLS: leave it to Poco
    if (SSL_shutdown(ssl) < 0) return;           // our close_notify
    ::shutdown(fd, SHUT_WR);                     // then FIN; reading stays open
    timeval tv{lingerMilliseconds / 1000, (lingerMilliseconds % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
        // the client's last bytes, if any, before its close_notify or EOF
    }
    ERR_clear_error();
}

void closeGracefully(Poco::Net::StreamSocket& socket, bool tls, int lingerMilliseconds) {
    try {
        if (tls) {
            closeTlsGracefully(socket.impl()->sockfd(), lingerMilliseconds);
            Poco::Net::SecureStreamSocket(socket).shutdown();  // finds close_notify sent: nothing more
            return;
        }
        socket.shutdownSend();
        socket.setReceiveTimeout(Poco::Timespan(0, lingerMilliseconds * 1000));
        char buf[4096];
        while (socket.receiveBytes(buf, sizeof buf) > 0) {
        }
        socket.shutdown();
    } catch (const Poco::Exception&) {
    }
}

std::string describeTlsSession(SSL* ssl) {
    if (!ssl) return "no TLS session";
    std::string text = SSL_get_version(ssl);
    text += " ";
    text += SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
    int nid = SSL_get_negotiated_group(ssl);
    const char* name = nid ? OBJ_nid2sn(nid) : nullptr;
    text += " group=";
    text += name ? name : "unknown";
    return text;
}

}  // namespace maillab
