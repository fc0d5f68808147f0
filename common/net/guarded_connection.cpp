// The gate every accepted connection passes (guarded_connection.h): PROXY header, limits, clear text
// on a TLS port, the handshake under its deadline, then the protocol; one log emitter per connection.
#include "guarded_connection.h"

#include "log_text.h"

#include <Poco/Exception.h>
#include <Poco/Net/SecureStreamSocket.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace maillab {

namespace {
// A refusal waits this long after our close for the client's: enough for a client reading its
// 421/503/-ERR, short because a flood of refused connections is what it answers.
constexpr int kRefusalLingerMs = 100;

std::string firstLine(const std::string& bytes) { return bytes.substr(0, bytes.find_first_of("\r\n")); }

// A handshake cut short by its deadline says so: the watchdog's shutdown reads as a reset otherwise.
void completeHandshake(Poco::Net::StreamSocket& socket, const Watchdog::Guard& deadline) {
    try {
        Poco::Net::SecureStreamSocket(socket).completeHandshake();
    } catch (const Poco::Exception&) {
        if (deadline.expired()) throw Poco::TimeoutException("handshake");
        throw;
    }
}
}  // namespace

std::unique_ptr<ConnectionLimiter> connectionLimiterFrom(const Poco::Util::AbstractConfiguration& cfg,
                                                         const std::string& prefix) {
    return std::make_unique<ConnectionLimiter>(cfg.getInt(prefix + ".maxConnections"),
                                               cfg.getInt(prefix + ".maxConnectionsPerAddress"),
                                               std::chrono::milliseconds(cfg.getInt(prefix + ".minWaitToEvictMs")));
}

GateSettings gateSettingsFrom(const Poco::Util::AbstractConfiguration& cfg, const std::string& prefix) {
    GateSettings settings;
    settings.maxRefusalHandshakes = cfg.getInt(prefix + ".maxRefusalHandshakes");
    settings.handshakeTimeout = Poco::Timespan(cfg.getInt(prefix + ".timeout.handshake"), 0);
    settings.refusalTimeout = Poco::Timespan(0, cfg.getInt(prefix + ".timeout.refusalMs") * 1000);
    return settings;
}

std::string ConnectionLog::lineText(const std::string& text) const { return "id=" + std::to_string(id_) + " " + text; }

std::string ConnectionLog::eventText(const std::string& name, const std::string& detail) const {
    return lineText("event=" + name + (service_.empty() ? "" : " service=" + service_) +
                    (detail.empty() ? "" : " " + detail));
}

std::string ConnectionLog::peerEventText(const std::string& name, const std::string& detail) const {
    return eventText(name, peer_ + (detail.empty() ? "" : " " + detail));
}

AdmittedConnection::AdmittedConnection(Poco::Net::StreamSocket& s, bool isSecure, const proxy::Peer& peer,
                                       ConnectionLimiter::Slot& place, const ConnectionLog& connectionLog,
                                       const ConnectionGate& gate)
    : socket(s), fd(static_cast<int>(s.impl()->sockfd())), secure(isSecure), client(peer), slot(place),
      log(connectionLog), gate_(gate) {}

void AdmittedConnection::startTls(const Poco::Net::Context::Ptr& context) {
    Poco::Net::SecureStreamSocket upgraded = Poco::Net::SecureStreamSocket::attach(socket, context);
    upgraded.setReceiveTimeout(gate_.settings().handshakeTimeout);
    gate_.handshake(upgraded, gate_.settings().handshakeTimeout);
    socket = upgraded;
    fd = static_cast<int>(socket.impl()->sockfd());
    secure = true;
    tls = describeTls(socket);
    ssl_ = nullptr;
}

bool AdmittedConnection::tlsHoldsBytes() {
    if (!secure) return false;
    if (!ssl_) ssl_ = sslOf(socket);
    return ssl_ && SSL_has_pending(ssl_) == 1;
}

AdmittedConnection::Wait AdmittedConnection::waitForClient(std::chrono::steady_clock::time_point deadline, int stopFd) {
    if (tlsHoldsBytes() || socket.available() > 0) return Wait::Readable;
    struct Waiting {
        ConnectionLimiter::Slot& slot;
        ~Waiting() { slot.working(); }
    } waiting{slot};
    slot.waiting(fd);
    pollfd fds[2] = {{fd, POLLIN, 0}, {stopFd, POLLIN, 0}};
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Wait::Timeout;
        int rc = ::poll(fds, 2, static_cast<int>(std::min<long long>(left.count(), 3600 * 1000)));
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return Wait::Readable;  // let the read report the error
        if (rc == 0) continue;
        if (fds[1].revents) return Wait::Stopping;
        return Wait::Readable;
    }
}

void ConnectionGate::handshake(Poco::Net::StreamSocket& socket, Poco::Timespan within) const {
    completeHandshake(socket, watchdog_.arm(static_cast<int>(socket.impl()->sockfd()), within));
}

void ConnectionGate::run(Poco::Net::StreamSocket socket, const std::function<void(AdmittedConnection&)>& serve) {
    ConnectionLog log(&logger_, nextId_++, protocol_.service);
    ConnectionLimiter::Slot slot;
    try {
        int fd = static_cast<int>(socket.impl()->sockfd());
        // Behind a balancer the client is the one its PROXY header names, from here on.
        proxy::Peer client = proxy::readProxyHeader(fd, socket.peerAddress(), settings_.proxy);
        log.setPeer(client);
        if (!client.ok) {
            log.peerEvent("proxy-refused", "reason=" + logValue(client.error));
        } else {
            slot = limiter_.admit(client.host);
            socket.setNoDelay(true);  // replies are whole; never wait on Nagle (docs/design.md)
            if (settings_.sendTimeout.totalMicroseconds() > 0) socket.setSendTimeout(settings_.sendTimeout);
            socket.setReceiveTimeout(settings_.handshakeTimeout);
            if (!slot.admitted()) {
                refuse(socket, slot.verdict(), log);
            } else {
                slot.waiting(fd);  // the handshake waits for the client: when full, the longest waiting give way
                if (protocol_.logsEveryConnection)
                    log.peerEvent("connect", (protocol_.connectNote.empty() ? "" : protocol_.connectNote + " ") +
                                                 "active=" + std::to_string(limiter_.active()));
                AdmittedConnection admitted(socket, implicitTls_, client, slot, log, *this);
                bool answered = false;
                if (implicitTls_) {
                    // One deadline for the whole way to TLS, the look at the first bytes included: a
                    // client cannot add a silence to a handshake it then trickles.
                    Watchdog::Guard deadline = watchdog_.arm(fd, settings_.handshakeTimeout);
                    answered = answeredInClear(socket, log);
                    if (!answered) {
                        completeHandshake(socket, deadline);
                        admitted.tls = describeTls(socket);
                        if (protocol_.logsEveryConnection) log.event("tls", admitted.tls);
                    }
                }
                if (!answered) {
                    serve(admitted);
                    if (protocol_.closesGracefully) closeGracefully(socket, admitted.secure, settings_.closeLingerMs);
                }
            }
        }
    } catch (const Poco::TimeoutException&) {
        // A handshake's, the first or STARTTLS/STLS: the protocols answer their own read deadlines.
        log.peerEvent("disconnect", "reason=handshake-timeout");
    } catch (const Poco::Exception& e) {
        log.peerEvent("disconnect", "reason=" + logValue(e.displayText()));
    } catch (const std::exception& e) {
        log.peerEvent("disconnect", "reason=" + logValue(e.what()));
    }
    if (slot.evicted())
        log.peerEvent("evicted", "reason=\"the server was full and this connection waited longest for its client\"");
    slot.working();  // out of the waiting list before its descriptor is closed (and reused)
    try {
        socket.close();
    } catch (...) {
    }
    if (slot.admitted() && protocol_.logsEveryConnection) log.event("close");
}

// Over TLS a refusal needs a handshake: a few at a time get one, bounded by a short deadline; past
// those (a flood of sockets that never speak TLS) the connection is closed at once, so refusing
// costs no thread time (docs/design.md, Limits).
void ConnectionGate::refuse(Poco::Net::StreamSocket& socket, ConnectionLimiter::Verdict verdict,
                            const ConnectionLog& log) {
    bool answered = false;
    if (!implicitTls_ || ++refusing_ <= settings_.maxRefusalHandshakes) {
        try {
            Watchdog::Guard deadline = watchdog_.arm(static_cast<int>(socket.impl()->sockfd()), settings_.refusalTimeout);
            if (implicitTls_) Poco::Net::SecureStreamSocket(socket).completeHandshake();
            sendAll(socket, protocol_.refusal(verdict));
            answered = !deadline.expired();
            if (answered) closeGracefully(socket, implicitTls_, kRefusalLingerMs);
        } catch (const std::exception&) {
        }
    }
    if (implicitTls_) --refusing_;
    log.peerEvent("refused", std::string("reason=") + ConnectionLimiter::describe(verdict) +
                                 " answered=" + (answered ? protocol_.refusedAs : "closed"));
}

// Implicit TLS (RFC 8314 3.3): the client speaks TLS first. One that speaks in clear instead (an
// SMTP client's EHLO, curl http://) would get a TLS alert it cannot read, and one that waits for a
// banner would time out with no clue; the protocol words a clear-text answer that names what to use
// instead. The bytes are only peeked: a TLS client, however slow after its first byte, is
// unaffected. True when the client was answered so (the connection is then over).
bool ConnectionGate::answeredInClear(Poco::Net::StreamSocket& socket, const ConnectionLog& log) {
    if (!protocol_.clearText) return false;
    int fd = static_cast<int>(socket.impl()->sockfd());
    int handshakeMs = static_cast<int>(settings_.handshakeTimeout.totalMilliseconds());
    bool hint = protocol_.silenceHintMs >= 0 && protocol_.silenceHintMs < handshakeMs;
    std::string seen;
    FirstBytes kind = peekFirstBytes(fd, hint ? protocol_.silenceHintMs : handshakeMs, seen);
    if (kind == FirstBytes::Tls || kind == FirstBytes::Closed) return false;  // OpenSSL's, as before
    if (kind == FirstBytes::Silence && !hint) return false;  // the handshake's deadline says it
    std::optional<ClearTextReply> reply = protocol_.clearText(kind, seen, socket.address().port());
    if (!reply) return false;
    std::string received = answerInClear(fd, reply->wire, settings_.closeLingerMs);
    bool silent = kind == FirstBytes::Silence;
    log.peerEvent("plaintext-on-tls", "first=" + (silent ? std::string("silence") : quotedLogValue(firstLine(received))) +
                                          " answered=" + reply->answered +
                                          " waited_ms=" + std::to_string(silent ? protocol_.silenceHintMs : 0));
    return true;
}

}  // namespace maillab
