// The event core's door: the non-blocking twin of ConnectionGate (guarded_connection.h), shared by every
// server on the event core (the sender's SMTP, the retriever's HTTPS). It admits each accepted
// connection through the server's ConnectionLimiter or refuses it in the server's own words (the 421
// or 503 of its GuardedProtocol), over TLS within refusalTimeout counted from the accept and at most
// maxRefusalHandshakes refusals at once (past those the connection is just closed), and logs a trusted
// balancer's missing PROXY header. Every line goes through ConnectionLog, so both cores log alike.
#pragma once
#include "connection_guard.h"
#include "event_loop.h"
#include "guarded_call.h"
#include "guarded_connection.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace maillab::net {

// What every connection on a gated core is: admitted or refused, it logs under its one id.
class GatedProtocol : public Protocol {
public:
    virtual const ConnectionLog& log() const = 0;
    // Clear text on the TLS port: whether this connection answers it (a refused one is just closed,
    // as the thread core's gate refuses before it looks at the first bytes).
    virtual bool answersClearText() const { return true; }
};

// A gated connection whose loop callbacks each run inside the event core's exception barrier
// (guarded_call.h): an exception ends only this connection, in the protocol's own words (failed()),
// not the loop. The SMTP and POP3 connections give the five steps; the barrier is written once here.
class BarrierProtocol : public GatedProtocol {
public:
    void onReady(Connection& connection) final {
        barrier(connection, [&] { ready(connection); });
    }
    void onBytes(Connection& connection, const char* data, size_t size) final {
        barrier(connection, [&] { bytes(connection, data, size); });
    }
    void onWritten(Connection& connection, bool drained) final {
        barrier(connection, [&] { written(connection, drained); });
    }
    void onDeadline(Connection& connection) final {
        barrier(connection, [&] { deadline(connection); });
    }
    // The server stops: called through the loop for each open connection.
    void shutdown(Connection& connection) {
        barrier(connection, [&] { stop(connection); });
    }

protected:
    // Answers (421, -ERR [SYS/TEMP]) and closes; a throw out of it is the loop's to contain.
    virtual void failed(Connection& connection, const std::string& what) = 0;
    template <typename Call>
    void barrier(Connection& connection, Call&& call) {
        guardedCall(call, [&](const std::string& what) { failed(connection, what); });
    }

private:
    virtual void ready(Connection& connection) = 0;
    virtual void bytes(Connection& connection, const char* data, size_t size) = 0;
    virtual void written(Connection& connection, bool drained) = 0;
    virtual void deadline(Connection& connection) = 0;
    virtual void stop(Connection& connection) = 0;
};

struct EventGateSettings {
    Poco::Logger* logger = nullptr;
    std::atomic<unsigned long>* nextConnectionId = nullptr;  // the log lines' id=, shared by the server's services
    ConnectionLimiter* limiter = nullptr;
    bool overTls = true;  // refusals are answered inside a TLS session (and so cost a handshake)
    int maxRefusalHandshakes = 8;
    std::chrono::milliseconds refusalTimeout{1000};  // the refusal's handshake and answer, from the accept
    std::function<std::string(ConnectionLimiter::Verdict)> refusal;  // the refusal's bytes
    std::string refusedAs;  // how the log names an answered refusal ("421", "503")
};

class EventGate {
public:
    // Builds the protocol of an admitted connection (its Slot is its place in the limiter).
    using Admit = std::function<std::unique_ptr<GatedProtocol>(Connection&, ConnectionLimiter::Slot)>;

    // `service`: service= in the refusal's and proxy-refused lines, for a server's second protocol ("pop3").
    explicit EventGate(EventGateSettings settings, std::string service = "")
        : settings_(std::move(settings)), service_(std::move(service)) {}
    EventGate(const EventGate&) = delete;
    EventGate& operator=(const EventGate&) = delete;

    // Sets core.open and core.proxyRefused; the gate must outlive the core.
    void install(CoreSettings& core, Admit admit);
    // A new log line source with the next id, naming `peer`.
    ConnectionLog newLog(const proxy::Peer& peer) const;
    // The connection's own protocol as the gate made it (for the clear-text check's log line).
    static const GatedProtocol& protocolOf(const Connection& connection);

private:
    class Refusal;
    std::unique_ptr<Protocol> open(Connection& connection, const Admit& admit);

    EventGateSettings settings_;
    std::string service_;
    std::atomic<int> refusing_{0};  // refusals in their handshake or answer now (over TLS)
};

}  // namespace maillab::net
