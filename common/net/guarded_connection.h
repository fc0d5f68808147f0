// The one way every server takes an accepted connection (SMTP, HTTPS, POP3): the PROXY header when a
// trusted balancer owes one, the connection limits (a refusal in the protocol's words, over TLS within
// a bounded number of refusal handshakes), the answer to clear text on an implicit-TLS port, the TLS
// handshake under its total deadline; then the protocol gets the ready socket, and on the way out the
// evicted, disconnect and close lines. Each protocol only describes itself (GuardedProtocol): the
// words of its refusal, what clear text gets, its service name. ConnectionLog is each connection's
// one log emitter ("id=N event=... service=... peer=... via=..."), used by the protocols too.
// Generic floor: nothing here knows of mail accounts or stores.
#pragma once
#include "connection_guard.h"
#include "proxy_protocol.h"
#include "tls.h"

#include <Poco/Logger.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/Timespan.h>
#include <Poco/Util/AbstractConfiguration.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace maillab {

// One connection's log lines, every one prefixed "id=N " so that a connection's lines can be found
// among thousands (the servers number their connections together: HTTPS and POP3 share one count).
class ConnectionLog {
public:
    ConnectionLog(Poco::Logger* logger, unsigned long id, std::string service)
        : logger_(logger), id_(id), service_(std::move(service)) {}

    void setPeer(const proxy::Peer& peer) { peer_ = peer.forLog(); }
    unsigned long id() const { return id_; }

    // The protocol's own lines, already key=value ("C: EHLO x", "event=state ...").
    void line(const std::string& text) const { write(lineText(text)); }
    // "id=N event=NAME service=S DETAIL": a protocol event (service= only for a server's second
    // protocol, POP3, so that the main protocol's lines read as they always did).
    void event(const std::string& name, const std::string& detail = "") const { write(eventText(name, detail)); }
    // The same with "peer=ADDRESS via=BALANCER" after the service: the lines that may be the only ones
    // of a connection (refused, proxy-refused, plaintext-on-tls, connect, disconnect, evicted).
    void peerEvent(const std::string& name, const std::string& detail = "") const {
        write(peerEventText(name, detail));
    }

    std::string lineText(const std::string& text) const;
    std::string eventText(const std::string& name, const std::string& detail) const;
    std::string peerEventText(const std::string& name, const std::string& detail) const;

private:
    void write(const std::string& text) const {
        if (logger_) logger_->information(text);
    }
    Poco::Logger* logger_;
    unsigned long id_;
    std::string service_;
    std::string peer_ = "peer=unknown";
};

// What a client that spoke in clear on an implicit-TLS port gets, on the raw socket.
struct ClearTextReply {
    std::string wire;      // sent in clear before our close; "" closes without a word
    std::string answered;  // the log's answered= ("421", "400", "closed")
};

// What a protocol says where the gate speaks for it.
struct GuardedProtocol {
    std::string service;      // service= in its lines ("pop3"); "" for the server's main protocol
    std::string connectNote;  // more on the connect line ("tls=implicit"); "" for none
    // connect, tls and close lines for every connection; false: only refusals and failures (HTTPS:
    // at tens of thousands of connections a second a line each is a cost, issue 22).
    bool logsEveryConnection = true;
    // SMTP and POP3 speak last (221, +OK) and then close gracefully (docs/design.md); HTTP's own loop
    // ends its connections.
    bool closesGracefully = true;
    // A connection past the limits gets these bytes (RFC 5321 3.8 421, RFC 9110 15.6.4 503, POP3
    // -ERR [SYS/TEMP] RFC 3206), and the log says answered=refusedAs.
    std::function<std::string(ConnectionLimiter::Verdict)> refusal;
    std::string refusedAs;
    // Clear text on an implicit-TLS port (RFC 8314 3.3: TLS comes first): the kind of the first
    // bytes, those bytes, and our port -> the reply, or none to leave it to the TLS handshake.
    // Empty: the first bytes are not looked at (OpenSSL's alert is the answer).
    std::function<std::optional<ClearTextReply>(FirstBytes, const std::string& seen, int port)> clearText;
    // A client silent this long gets clearText(Silence) (an SMTP client waits for a banner); -1, or
    // at or above the handshake's deadline: silence is left to the handshake's deadline.
    int silenceHintMs = -1;
};

// What every connection of a server shares at its gate, read once at start-up.
struct GateSettings {
    proxy::Settings proxy;            // the balancers whose PROXY headers name the client
    Poco::Timespan handshakeTimeout;  // the TLS handshake in all, from the accept (the peek included)
    Poco::Timespan refusalTimeout;    // a refusal's handshake and reply in all
    Poco::Timespan sendTimeout;       // each write; 0: the protocol sets its own
    int maxRefusalHandshakes = 8;     // refusals over TLS at a time; past those a refused socket is closed
    int closeLingerMs = 1000;         // after our close, how long the client's is waited for
};

// A server's limits and deadlines, the same keys under its prefix ("sender", "retriever"):
// PREFIX.maxConnections, .maxConnectionsPerAddress, .minWaitToEvictMs, .maxRefusalHandshakes,
// .timeout.handshake (seconds) and .timeout.refusalMs. The proxy settings, the send timeout and the
// close linger are the server's own to set.
std::unique_ptr<ConnectionLimiter> connectionLimiterFrom(const Poco::Util::AbstractConfiguration& cfg,
                                                         const std::string& prefix);
GateSettings gateSettingsFrom(const Poco::Util::AbstractConfiguration& cfg, const std::string& prefix);

class ConnectionGate;

// An admitted connection, its TLS up when the port is implicit TLS: what the protocol serves.
class AdmittedConnection {
public:
    Poco::Net::StreamSocket& socket;  // replaced by startTls()
    int fd;
    bool secure;
    std::string tls;                  // "TLSv1.3 TLS_AES_256_GCM_SHA384 group=X25519" once secure
    const proxy::Peer& client;        // the socket's peer, or the client a balancer named
    ConnectionLimiter::Slot& slot;    // waiting while the client is to speak (eviction when full)
    const ConnectionLog& log;

    // STARTTLS (RFC 3207) or STLS (RFC 2595) on the open connection, under the handshake's total
    // deadline; the socket becomes the TLS one. Throws Poco::TimeoutException("handshake") when the
    // deadline passed, else what the handshake threw.
    void startTls(const Poco::Net::Context::Ptr& context);

    enum class Wait { Readable, Timeout, Stopping };
    // The client's next bytes, `deadline`, or the server's stop (`stopFd` readable), whichever comes
    // first; meanwhile the connection counts as waiting for its client (when the server is full, the
    // longest waiting give way). Bytes TLS already holds count as readable: decrypted ones, and with
    // read-ahead the records it read past the one it decrypted (SSL_has_pending), which poll() on
    // the socket would no longer see.
    Wait waitForClient(std::chrono::steady_clock::time_point deadline, int stopFd);

private:
    friend class ConnectionGate;
    AdmittedConnection(Poco::Net::StreamSocket& s, bool isSecure, const proxy::Peer& peer,
                       ConnectionLimiter::Slot& place, const ConnectionLog& connectionLog, const ConnectionGate& gate);
    bool tlsHoldsBytes();
    const ConnectionGate& gate_;
    SSL* ssl_ = nullptr;  // found once (sslOf takes a lock), again after startTls()
};

// The gate of one listening service (an implicit-TLS port, or a clear one). Thread-safe: each
// connection's pool thread calls run().
class ConnectionGate {
public:
    ConnectionGate(GateSettings settings, GuardedProtocol protocol, bool implicitTls, ConnectionLimiter& limiter,
                   Watchdog& watchdog, Poco::Logger& logger, std::atomic<unsigned long>& nextId)
        : settings_(std::move(settings)), protocol_(std::move(protocol)), implicitTls_(implicitTls),
          limiter_(limiter), watchdog_(watchdog), logger_(logger), nextId_(nextId) {}

    // Everything from the accept to the close; `serve` runs once the connection is admitted and its
    // TLS is up. Never throws: what ends the connection is logged.
    void run(Poco::Net::StreamSocket socket, const std::function<void(AdmittedConnection&)>& serve);

    // The TLS handshake on `socket` within `within` in all (a per-read timeout alone lets a client
    // sending a byte at a time stretch it without end).
    void handshake(Poco::Net::StreamSocket& socket, Poco::Timespan within) const;

    const GateSettings& settings() const { return settings_; }

private:
    void refuse(Poco::Net::StreamSocket& socket, ConnectionLimiter::Verdict verdict, const ConnectionLog& log);
    bool answeredInClear(Poco::Net::StreamSocket& socket, const ConnectionLog& log);

    const GateSettings settings_;
    const GuardedProtocol protocol_;
    const bool implicitTls_;
    ConnectionLimiter& limiter_;
    Watchdog& watchdog_;
    Poco::Logger& logger_;
    std::atomic<unsigned long>& nextId_;
    std::atomic<int> refusing_{0};  // refusal handshakes under way on this gate
};

}  // namespace maillab
