// TLS 1.3 contexts for the lab's servers and clients (Poco NetSSL on OpenSSL 3), the NSS key log that
// lets Wireshark decrypt a capture, and a one-line description of a negotiated session.
#pragma once
#include <Poco/Net/Context.h>
#include <Poco/Net/StreamSocket.h>

#include <string>

typedef struct ssl_st SSL;

namespace maillab {

struct TlsOptions {
    std::string certFile;    // server: certificate chain (PEM)
    std::string keyFile;     // server: private key (PEM)
    std::string caFile;      // client: the lab CA to trust (no system store is loaded)
    std::string keyLogFile;  // NSS key log; empty means SSLKEYLOGFILE if set, else none
    int sessionTickets = 1;  // server: TLS 1.3 NewSessionTicket messages per handshake (OpenSSL's default is 2)
};

// TLS 1.3 only (RFC 8446); TLS 1.2 and below are refused in the handshake. The key log is the
// caller's to enable (enableKeyLog), so that it can say so.
Poco::Net::Context::Ptr makeServerContext(const TlsOptions& options);
// VERIFY_STRICT against the lab CA; the caller's hostname is checked by Poco after the handshake.
Poco::Net::Context::Ptr makeClientContext(const TlsOptions& options);
// The X509_V_ERR_* code of the last certificate a client context refused on this thread (0: none).
int lastCertificateVerifyError();

// Installs a key log callback that appends one NSS line per secret, flushed at once, mode 0600.
// An empty path means: use SSLKEYLOGFILE when set. Returns the path in use, or "".
std::string enableKeyLog(Poco::Net::Context& context, const std::string& path);

// "TLSv1.3 TLS_AES_256_GCM_SHA384 group=X25519"
std::string describeTlsSession(SSL* ssl);

// The OpenSSL object of a TLS socket (nullptr for a plain one), found through OpenSSL's own
// callbacks: Poco 1.11 to 1.14 expose no socket's SSL*. And its one-line description.
SSL* sslOf(const Poco::Net::StreamSocket& socket);
std::string describeTls(const Poco::Net::StreamSocket& socket);
// The ClientHello's random of the socket's TLS session, 64 lower-case hex digits (as Wireshark's
// tls.handshake.random shows it); "" without TLS. Names a TLS session for provenance.
std::string clientRandomHex(const Poco::Net::StreamSocket& socket);
// The ServerHello's random, the same way: the server's own choice, which a client cannot replay.
std::string serverRandomHex(const Poco::Net::StreamSocket& socket);
// The same of a TLS connection held by its SSL* (the event core's); "" for nullptr.
std::string clientRandomHex(SSL* ssl);
std::string serverRandomHex(SSL* ssl);

// ALPN (RFC 7301): a client offers the lab protocol it speaks ("smtp", "http/1.1"); a server
// accepts its own and refuses, with the no_application_protocol alert, a client that offers only
// the other lab protocol. Clients that offer none (openssl s_client, smtplib) are unaffected.
void offerAlpn(Poco::Net::Context& context, const std::string& protocol);
void acceptAlpn(Poco::Net::Context& context, const std::string& protocol);

// The lab's one way to end a connection without a TCP RST, TLS or not: our close (close_notify and
// FIN, or FIN alone), then whatever the peer still sends read until its own close, at most
// `lingerMilliseconds`. Errors are swallowed: the connection is ending anyway.
void closeGracefully(Poco::Net::StreamSocket& socket, bool tls, int lingerMilliseconds);

// Sends every byte (TLS or not: sendBytes may take part of a buffer); throws ConnectionResetException
// when the peer is gone.
void sendAll(Poco::Net::StreamSocket& socket, const std::string& bytes);

// Plaintext on a TLS port (a student's smtplib.SMTP or curl http:// on the implicit-TLS ports): what
// the client's first bytes, looked at before OpenSSL reads any, say. A TLS connection opens with a
// handshake record, content type 22 (0x16, RFC 8446 5.1); anything else is a client speaking in clear.
enum class FirstBytes {
    Tls,          // a handshake record: OpenSSL takes it from here
    HttpRequest,  // "GET / HTTP/1.1...": answered in clear with what to use instead
    Plaintext,    // other clear text ("EHLO ...", a stray line)
    Silence,      // nothing within the wait: a client waiting for a banner (SMTP)
    Closed,       // the client closed (or the socket was shut down) before sending anything
};
// Socket-free: the kind of `bytes` (the first bytes a client sent, not empty). "Incomplete" is
// Plaintext: the caller decides whether to wait for more (see peekFirstBytes).
FirstBytes classifyFirstBytes(const std::string& bytes);
// True while `bytes` could still become an HTTP request line (a method token, no space yet).
bool mayBecomeHttpRequest(const std::string& bytes);
// Waits up to `silenceMilliseconds` for the client's first bytes on the raw descriptor and looks at
// them with MSG_PEEK, so that OpenSSL later reads them whole: a TLS client, however slow after its
// first byte, is unaffected. `seen` gets what was looked at (at most 64 bytes).
FirstBytes peekFirstBytes(int fd, int silenceMilliseconds, std::string& seen);
// Answers a client that spoke in clear on a TLS port, on the raw descriptor (no TLS was started):
// what it sent is read (nobody else will read it, and unread bytes at close would make our close a
// TCP RST that can destroy the answer before the client reads it), `answer` is sent, then our FIN,
// and its own close is waited for at most `lingerMilliseconds`. Errors are swallowed: the connection
// is ending anyway. Returns the first bytes the client had sent (at most `keep`).
std::string answerInClear(int fd, const std::string& answer, int lingerMilliseconds, size_t keep = 200);

// Calls Poco::Net::initializeSSL() once and installs certificate handlers that reject, never prompt.
void initializeTls();

}  // namespace maillab
