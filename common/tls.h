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

// Installs a key log callback that appends one NSS line per secret, flushed at once, mode 0600.
// An empty path means: use SSLKEYLOGFILE when set. Returns the path in use, or "".
std::string enableKeyLog(Poco::Net::Context& context, const std::string& path);

// "TLSv1.3 TLS_AES_256_GCM_SHA384 group=X25519"
std::string describeTlsSession(SSL* ssl);

// The description of the last handshake completed on the calling thread (Poco 1.11 does not expose
// a socket's SSL*); "" before any.
std::string lastHandshakeOnThisThread();

// A clean TLS close for a server that speaks last (SMTP after 221): close_notify, then TCP FIN,
// then the client's close_notify read within `linger`, so that nothing arrives at a closed socket
// (which would answer with a TCP RST, visible in every capture). Uses the SSL of the last handshake
// on this thread. Poco's own shutdown() afterwards finds close_notify sent and does nothing more.
void closeTlsGracefully(int fd, int lingerMilliseconds);

// The lab's one way to end a connection without a TCP RST, TLS or not: our close (close_notify and
// FIN, or FIN alone), then whatever the peer still sends read until its own close, at most
// `lingerMilliseconds`. Errors are swallowed: the connection is ending anyway.
void closeGracefully(Poco::Net::StreamSocket& socket, bool tls, int lingerMilliseconds);

// Calls Poco::Net::initializeSSL() once and installs certificate handlers that reject, never prompt.
void initializeTls();

}  // namespace maillab
