// TLS 1.3 context set-up and the NSS key log (the format Wireshark reads: "CLIENT_RANDOM"-style lines).
#include "tls.h"

#include <Poco/Net/InvalidCertificateHandler.h>
#include <Poco/Net/VerificationErrorArgs.h>

#include <Poco/Net/NetException.h>

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
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>
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

// The SSL object of each TLS connection, by socket descriptor. Poco gives no public access to a
// socket's SSL*, in any version from 1.11 to 1.14, so OpenSSL's public callbacks keep this table:
// an entry is made when a handshake starts and removed when OpenSSL frees the SSL object.
std::mutex sslTableMutex;
std::unordered_map<int, SSL*>& sslTable() {
    static auto* table = new std::unordered_map<int, SSL*>;  // never destroyed: used until the last SSL_free
    return *table;
}

void forgetSsl(void*, void* pointer, CRYPTO_EX_DATA*, int, long, void*) {
    if (!pointer) return;
    int fd = static_cast<int>(reinterpret_cast<intptr_t>(pointer)) - 1;
    std::lock_guard<std::mutex> lock(sslTableMutex);
    sslTable().erase(fd);
}

int sslFdIndex() {
    static int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, forgetSsl);
    return index;
}

void infoCallback(const SSL* ssl, int where, int) {
    if (!(where & SSL_CB_HANDSHAKE_START) || SSL_get_ex_data(ssl, sslFdIndex())) return;
    int fd = SSL_get_fd(ssl);
    if (fd < 0) return;
    SSL_set_ex_data(const_cast<SSL*>(ssl), sslFdIndex(), reinterpret_cast<void*>(static_cast<intptr_t>(fd) + 1));
    std::lock_guard<std::mutex> lock(sslTableMutex);
    sslTable()[fd] = const_cast<SSL*>(ssl);
}

// ALPN (RFC 7301) lists in wire form: one length octet before each name.
std::string alpnWire(const std::vector<std::string>& names) {
    std::string wire;
    for (const auto& name : names) wire += static_cast<char>(name.size()) + name;
    return wire;
}

// Server side of ALPN: the lab's protocol when the client offers it; a client that offers only
// protocols of the other lab service gets the fatal no_application_protocol alert (RFC 7301 3.2),
// so that an HTTPS client on the SMTP port, or ours on the other port, fails at once and says so.
// A client that offers nothing, or only names we do not know, is served as before.
int selectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
               void* arg) {
    const auto* wanted = static_cast<const std::string*>(arg);
    bool foreign = false;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int length = in[i];
        if (i + 1 + length > inlen) break;
        std::string name(reinterpret_cast<const char*>(in + i + 1), length);
        if (name == *wanted) {
            *out = in + i + 1;
            *outlen = static_cast<unsigned char>(length);
            return SSL_TLSEXT_ERR_OK;
        }
        if (name == "smtp" || name == "pop3" || name == "http/1.1" || name == "h2" || name == "http/1.0") foreign = true;
        i += 1 + length;
    }
    return foreign ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
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
        // Never uninitialised: Poco's SSLManager is a static that is destroyed at exit on its own,
        // and an atexit uninitializeSSL() ran after it in Poco 1.14 (a throw during exit: abort).
        Poco::Net::initializeSSL();
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
    // An idle connection (a student at a prompt, a keep-alive wait) keeps no 2 x 16 KiB record
    // buffers: they are freed while nothing is in flight and taken again at the next record.
    SSL_CTX_set_mode(context->sslContext(), SSL_MODE_RELEASE_BUFFERS);
    static std::once_flag once;
    std::call_once(once, [&] {
        Poco::Net::SSLManager::instance().initializeServer(
            nullptr, new Poco::Net::RejectCertificateHandler(true), context);
    });
    return context;
}

namespace {
thread_local int lastVerifyError = 0;

// Poco's RejectCertificateHandler, remembering why: the clients then say "expired" for an expired
// certificate instead of guessing from OpenSSL's one "certificate verify failed".
class RecordingRejectHandler : public Poco::Net::InvalidCertificateHandler {
public:
    RecordingRejectHandler() : InvalidCertificateHandler(false) {}
    void onInvalidCertificate(const void*, Poco::Net::VerificationErrorArgs& error) override {
        lastVerifyError = error.errorNumber();
        error.setIgnoreError(false);
    }
};
}  // namespace

int lastCertificateVerifyError() { return lastVerifyError; }

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
        Poco::Net::SSLManager::instance().initializeClient(nullptr, new RecordingRejectHandler, context);
    });
    return context;
}

SSL* sslOf(const Poco::Net::StreamSocket& socket) {
    int fd = static_cast<int>(socket.impl()->sockfd());
    std::lock_guard<std::mutex> lock(sslTableMutex);
    auto it = sslTable().find(fd);
    return it != sslTable().end() && SSL_get_fd(it->second) == fd ? it->second : nullptr;
}

std::string describeTls(const Poco::Net::StreamSocket& socket) { return describeTlsSession(sslOf(socket)); }

namespace {
std::string hex(const unsigned char* bytes, size_t n) {
    static const char* const kHex = "0123456789abcdef";
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        out += kHex[bytes[i] >> 4];
        out += kHex[bytes[i] & 15];
    }
    return out;
}
}  // namespace

std::string clientRandomHex(const Poco::Net::StreamSocket& socket) {
    SSL* ssl = sslOf(socket);
    if (!ssl) return "";
    unsigned char random[SSL3_RANDOM_SIZE];
    return hex(random, SSL_get_client_random(ssl, random, sizeof random));
}

std::string serverRandomHex(const Poco::Net::StreamSocket& socket) {
    SSL* ssl = sslOf(socket);
    if (!ssl) return "";
    unsigned char random[SSL3_RANDOM_SIZE];
    return hex(random, SSL_get_server_random(ssl, random, sizeof random));
}

void offerAlpn(Poco::Net::Context& context, const std::string& protocol) {
    std::string wire = alpnWire({protocol});
    SSL_CTX_set_alpn_protos(context.sslContext(), reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned int>(wire.size()));
}

void acceptAlpn(Poco::Net::Context& context, const std::string& protocol) {
    static std::mutex mutex;
    static std::map<std::string, std::string> names;  // stable storage for the callback's argument
    std::lock_guard<std::mutex> lock(mutex);
    SSL_CTX_set_alpn_select_cb(context.sslContext(), selectAlpn, &names.emplace(protocol, protocol).first->second);
}

namespace {
void closeTlsGracefully(SSL* ssl, int fd, int lingerMilliseconds) {
    if (SSL_shutdown(ssl) < 0) return;  // our close_notify
    ::shutdown(fd, SHUT_WR);            // then FIN; reading stays open
    timeval tv{lingerMilliseconds / 1000, (lingerMilliseconds % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
        // the peer's last bytes, if any, before its close_notify or EOF
    }
    ERR_clear_error();
}
}  // namespace

void sendAll(Poco::Net::StreamSocket& socket, const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
        int n = socket.sendBytes(bytes.data() + sent, static_cast<int>(bytes.size() - sent));
        if (n <= 0) throw Poco::Net::ConnectionResetException("send failed");
        sent += static_cast<size_t>(n);
    }
}

void closeGracefully(Poco::Net::StreamSocket& socket, bool tls, int lingerMilliseconds) {
    try {
        if (tls) {
            if (SSL* ssl = sslOf(socket))
                closeTlsGracefully(ssl, static_cast<int>(socket.impl()->sockfd()), lingerMilliseconds);
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
