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
#include <openssl/x509v3.h>

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
#include <poll.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
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

// A client checks the server's name inside the handshake (RFC 6125 via OpenSSL), not only after it
// as Poco does: a certificate for another host then fails the handshake with the bad_certificate
// alert the server and a capture can see, instead of a completed handshake and a silent close.
void checkHostInHandshake(SSL* ssl) {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name || !*name) return;
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1) X509_VERIFY_PARAM_set1_host(param, name, 0);
}

void infoCallback(const SSL* ssl, int where, int) {
    if (!(where & SSL_CB_HANDSHAKE_START) || SSL_get_ex_data(ssl, sslFdIndex())) return;
    if (!SSL_is_server(ssl)) checkHostInHandshake(const_cast<SSL*>(ssl));
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
// protocols of the other lab service (or another mail protocol) gets the fatal no_application_protocol
// alert (RFC 7301 3.2), so that an HTTPS client on the SMTP port, or ours on the other port, fails at
// once and says so.
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
        // The lab's two protocols and the other mail ones (IANA ALPN ids): a client that speaks only
        // those has the wrong service; a client's own private names are not ours to judge.
        if (name == "smtp" || name == "http/1.1" || name == "h2" || name == "http/1.0" || name == "imap" ||
            name == "pop3")
            foreign = true;
        i += 1 + length;
    }
    return foreign ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

// A context of the lab's one kind, for the server or the client: OpenSSL's default ciphers, no
// default CA store (a server that does not verify clients has no use for it, and loading it costs
// on every handshake; a client trusts the lab CA alone) and TLS 1.3 only.
Poco::Net::Context::Ptr newTls13Context(Poco::Net::Context::Usage usage, Poco::Net::Context::Params params) {
    initializeTls();
    params.loadDefaultCAs = false;
    params.cipherList = "DEFAULT";
    Poco::Net::Context::Ptr context = new Poco::Net::Context(usage, params);
    SSL_CTX* ctx = context->sslContext();
    // RFC 8314 implicit TLS, lab rule: TLS 1.3 only.
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
        throw std::runtime_error("cannot require TLS 1.3");
    SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384");
    SSL_CTX_set_info_callback(ctx, infoCallback);
    return context;
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
    Poco::Net::Context::Params params;
    params.privateKeyFile = options.keyFile;
    params.certificateFile = options.certFile;
    params.verificationMode = Poco::Net::Context::VERIFY_NONE;
    Poco::Net::Context::Ptr context = newTls13Context(Poco::Net::Context::TLS_SERVER_USE, params);
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
    Poco::Net::Context::Params params;
    params.caLocation = options.caFile;
    // VERIFY_STRICT: chain and hostname are checked even for localhost (VERIFY_RELAXED skips the
    // hostname check for localhost in Poco 1.11).
    params.verificationMode = Poco::Net::Context::VERIFY_STRICT;
    Poco::Net::Context::Ptr context = newTls13Context(Poco::Net::Context::TLS_CLIENT_USE, params);
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

std::string clientRandomHex(SSL* ssl) {
    if (!ssl) return "";
    unsigned char random[SSL3_RANDOM_SIZE];
    return hex(random, SSL_get_client_random(ssl, random, sizeof random));
}

std::string clientRandomHex(const Poco::Net::StreamSocket& socket) { return clientRandomHex(sslOf(socket)); }

std::string serverRandomHex(SSL* ssl) {
    if (!ssl) return "";
    unsigned char random[SSL3_RANDOM_SIZE];
    return hex(random, SSL_get_server_random(ssl, random, sizeof random));
}

std::string serverRandomHex(const Poco::Net::StreamSocket& socket) { return serverRandomHex(sslOf(socket)); }

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

namespace {
// The methods of RFC 9110 9.3 (and PATCH, RFC 5789): a request line on a TLS port starts with one.
const char* const kHttpMethods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
constexpr unsigned char kTlsHandshakeRecord = 0x16;  // RFC 8446 5.1: ContentType handshake(22)
constexpr size_t kLongestMethod = 7;                 // "CONNECT", "OPTIONS"
constexpr size_t kPeekBytes = 64;
// After bytes that could still become a request line ("GE"), how long to wait for the rest: one
// segment normally carries the whole line, so this is only for a client typing by hand.
constexpr int kRequestLineWaitMilliseconds = 300;

bool isMethodPrefix(const std::string& token) {
    for (const char* method : kHttpMethods)
        if (std::string(method).compare(0, token.size(), token) == 0) return true;
    return false;
}
}  // namespace

bool mayBecomeHttpRequest(const std::string& bytes) {
    return !bytes.empty() && bytes.size() <= kLongestMethod && bytes.find(' ') == std::string::npos &&
           isMethodPrefix(bytes);
}

FirstBytes classifyFirstBytes(const std::string& bytes) {
    if (bytes.empty()) return FirstBytes::Silence;
    if (static_cast<unsigned char>(bytes[0]) == kTlsHandshakeRecord) return FirstBytes::Tls;
    size_t space = bytes.find(' ');
    if (space != std::string::npos && space > 0 && space <= kLongestMethod) {
        std::string method = bytes.substr(0, space);
        for (const char* known : kHttpMethods)
            if (method == known) return FirstBytes::HttpRequest;
    }
    return FirstBytes::Plaintext;
}

namespace {
// Waits up to `milliseconds` for the descriptor to be readable; false on timeout.
bool waitReadable(int fd, int milliseconds) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(milliseconds);
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd pfd{fd, POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
        if (rc < 0 && errno == EINTR) continue;
        return rc != 0;  // an error counts as readable: the read reports it
    }
}

std::string peekAvailable(int fd) {
    char buf[kPeekBytes];
    ssize_t n;
    do n = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}
}  // namespace

FirstBytes peekFirstBytes(int fd, int silenceMilliseconds, std::string& seen) {
    seen.clear();
    if (!waitReadable(fd, silenceMilliseconds)) return FirstBytes::Silence;
    seen = peekAvailable(fd);
    if (seen.empty()) return FirstBytes::Closed;
    // A request line typed by hand, or split by the client: wait a moment for its method to end.
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestLineWaitMilliseconds);
    while (mayBecomeHttpRequest(seen) && std::chrono::steady_clock::now() < until) {
        std::string before = seen;
        ::usleep(10 * 1000);  // MSG_PEEK keeps the descriptor readable: poll cannot wait for *more* bytes
        seen = peekAvailable(fd);
        if (seen.empty()) seen = before;
    }
    return classifyFirstBytes(seen);
}

std::string answerInClear(int fd, const std::string& answer, int lingerMilliseconds, size_t keep) {
    std::string received;
    char buf[4096];
    auto readWhatCame = [&] {
        ssize_t n;
        while ((n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0)
            if (received.size() < keep) received.append(buf, std::min(static_cast<size_t>(n), keep - received.size()));
        // The client closed, or the connection failed: nothing more will come.
        return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    };
    readWhatCame();
    size_t sent = 0;
    while (sent < answer.size()) {
        ssize_t n = ::send(fd, answer.data() + sent, answer.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        sent += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(lingerMilliseconds);
    while (!readWhatCame()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || !waitReadable(fd, static_cast<int>(left.count()))) break;
    }
    return received;
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
