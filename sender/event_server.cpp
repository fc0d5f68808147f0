// The sender's SMTP on the event-loop core: see event_server.h. The thread server (server.cpp) is the
// model for every reply, deadline and log line; retriever/event_server.cpp for the core's use.
#include "event_server.h"

#include "smtp_replies.h"

#include "../common/lab/tls_provenance.h"
#include "../common/net/event_gate.h"
#include "../common/net/log_text.h"
#include "../common/net/tls.h"

#include <mutex>
#include <thread>
#include <unordered_map>

namespace maillab::sender_events {

namespace {
using namespace std::chrono;
class SmtpConnection;
}  // namespace

struct EventServer::Shared {
    Settings settings;
    std::unique_ptr<net::EventGate> gate;  // admission, refusals (421) and the proxy-refused line; outlives the core
    std::unique_ptr<net::WorkerPool> workers;
    std::unique_ptr<net::EventCore> core;
    std::atomic<bool> stopping{false};
    // The admitted connections, by connection id: stop() tells each to say 421; the clear-text answer
    // logs under its connection's id. Touched once when a connection opens and once when it ends.
    mutable std::mutex openMutex;
    std::unordered_map<uint64_t, std::pair<net::EventLoop*, SmtpConnection*>> open;
};

namespace {

// Replies queued for a client that does not read them: past this, reading pauses until they have left
// (a client pipelining NOOPs without reading would otherwise grow our queue without end; on threads the
// blocked send does the same, within sender.timeout.send).
constexpr size_t kMaxQueuedReplyBytes = 64 * 1024;

std::string firstLine(const std::string& bytes) { return bytes.substr(0, bytes.find_first_of("\r\n")); }

// What a worker may still use after its connection has ended: the session, and what the session's
// callbacks reach (the connection's log and provenance). The connection and each job hold it.
struct Held {
    Held(Poco::Logger* logger, unsigned long id, Store* provenanceStore) : log(logger, id, ""), provenance(provenanceStore, "smtp") {}
    ConnectionLog log;
    TlsProvenance provenance;
    std::unique_ptr<smtp::Session> session;
};

// One admitted SMTP connection: banner on ready, bytes into the Session, its replies out in one send
// per read (RFC 2920), slow inputs on a worker.
class SmtpConnection : public net::GatedProtocol {
public:
    SmtpConnection(EventServer::Shared& shared, ConnectionLimiter::Slot slot, net::Connection& connection)
        : shared_(shared), s_(shared.settings), slot_(std::move(slot)),
          held_(std::make_shared<Held>(s_.logger, (*s_.nextConnectionId)++, s_.provenance ? s_.store : nullptr)),
          id_(connection.id()) {
        held_->log.setPeer(connection.peer());
        held_->log.peerEvent("connect", "active=" + std::to_string(s_.limiter->active()));
        slot_.waiting(connection.fd());  // the handshake waits for the client: when full, the longest waiting give way
        std::lock_guard<std::mutex> lock(shared_.openMutex);
        shared_.open[id_] = {&connection.loop(), this};
    }

    ~SmtpConnection() override {
        std::lock_guard<std::mutex> lock(shared_.openMutex);
        shared_.open.erase(id_);
    }

    const ConnectionLog& log() const override { return held_->log; }
    void answeredInClear() { answeredInClear_ = true; }

    void onReady(net::Connection& connection) override {
        SSL* ssl = connection.ssl();
        std::string tls = ssl ? describeTlsSession(ssl) : "";
        if (ssl) held_->provenance.noteSession(ssl, connection.peer().address);
        size_t group = tls.find(" group=");
        std::string description = tls.substr(0, group), groupName = group == std::string::npos ? "" : tls.substr(group + 7);
        if (held_->session) {  // STARTTLS done (RFC 3207 4.2: the session forgets what came before)
            held_->log.event("tls", "starttls=yes " + tls);
            held_->session->onTlsStarted(description, groupName);
            commandDeadline_ = net::Clock::now() + s_.commandTimeout;
            return awaitClient(connection);
        }
        if (ssl) held_->log.event("tls", tls);
        smtp::SessionEnv env = s_.env;
        env.peerAddress = connection.peer().host;
        env.tlsDescription = description;
        env.tlsGroup = groupName;
        Held* held = held_.get();  // the session lives inside it: its callbacks never outlive it
        bool verbose = s_.verbose;
        // State transitions are the per-command detail: shown with --verbose, beside the C:/S: lines.
        env.log = [held, verbose](const std::string& line) {
            if (verbose || line.rfind("event=state", 0) != 0) held->log.line(line);
        };
        if (verbose) env.trace = [held](const std::string& line) { held->log.line(line); };
        env.onLogin = [held, noteLogin = s_.onLogin](const std::string& account) {
            if (noteLogin) noteLogin(account);
            held->provenance.recordLogin(account, held->log);
        };
        held_->session = std::make_unique<smtp::Session>(*s_.auth, *s_.store, s_.limits, env);
        held_->session->setDeferSlowWork(!s_.everyInputOnWorkers);
        commandDeadline_ = net::Clock::now() + s_.commandTimeout;
        smtp::Output banner = held_->session->start();
        if (shared_.stopping) {  // accepted while the server stops: it says so instead
            smtp::Output last = held_->session->onShutdown();
            return respond(connection, std::move(last));
        }
        respond(connection, std::move(banner));
    }

    void onBytes(net::Connection& connection, const char* data, size_t size) override {
        if (busy_ || drainingOut_ || closing_) {
            if (!closing_) early_.append(data, size);  // not expected (reading is paused): kept in order
            return;
        }
        slot_.working();
        if (s_.everyInputOnWorkers) return runOnWorker(connection, std::string(data, size));
        respond(connection, held_->session->onBytes(data, size));
    }

    // Our replies waited for the client to read them (drained: all have left).
    void onWritten(net::Connection& connection, bool drained) override {
        if (!drainingOut_) return;
        if (!drained) return connection.setDeadline(s_.sendTimeout);  // each write that goes on restarts it
        drainingOut_ = false;
        awaitClient(connection);
        if (!busy_) resume(connection);
    }

    void onDeadline(net::Connection& connection) override {
        if (drainingOut_) {
            held_->log.peerEvent("disconnect", "reason=send-timeout");
            timedOut_ = true;
            return connection.close("deadline");
        }
        if (closing_ || busy_) return connection.close("deadline");  // our last reply was not read in time
        timedOut_ = true;
        respond(connection, held_->session->onTimeout());  // RFC 5321 4.5.3.2: 421, then close
    }

    // stop(): RFC 5321 3.8, 421 and close; a session whose input is on a worker answers it first.
    void shutdown(net::Connection& connection) {
        if (closing_) return;
        if (busy_) {
            shutdownWhenDone_ = true;
            return;
        }
        if (!held_->session) return connection.close("server stopping");  // still in its handshake
        stopped_ = true;
        respond(connection, held_->session->onShutdown());
    }

    void onClosed(net::Connection&, const net::Ending& ending) override {
        closed_ = true;
        slot_.working();  // out of the waiting list before the socket is closed
        const ConnectionLog& log = held_->log;
        bool handshaking = ending.phase == net::Phase::Handshake || ending.phase == net::Phase::ClearTextCheck;
        if (answeredInClear_ || closing_ || timedOut_ || stopped_ || ending.reason == "server stopping") {
            // our own close: the reply said why
        } else if (handshaking) {
            if (ending.deadline) log.peerEvent("disconnect", "reason=handshake-timeout");
            else if (!ending.peerClosed) log.peerEvent("disconnect", "reason=" + logValue(ending.reason));
        } else if (!busy_ && held_->session) {
            // The client went away. In a message, what had arrived is dropped: nothing half-stored.
            const smtp::Session& session = *held_->session;
            std::string reason = slot_.evicted() ? "evicted" : ending.peerClosed || ending.reason.empty() ? "eof" : ending.reason;
            log.line("event=disconnect reason=" + logValue(reason) + " state=" + smtp::Session::stateName(session.state()) +
                     (session.inMessage() ? " stored=no" : ""));
        }
        if (slot_.evicted())
            log.peerEvent("evicted", "reason=\"the server was full and this connection waited longest for its client\"");
        log.event("close");
    }

private:
    // The replies to one read in one send (RFC 2920; also one TLS record per batch), then what the
    // output asks: close, STARTTLS, a slow input on a worker, or the next wait for the client.
    void respond(net::Connection& connection, smtp::Output output) {
        std::string wire;
        for (const smtp::Reply& reply : output.replies) {
            wire += reply.wire();
            if (s_.verbose) {
                std::string shown = reply.forLog();  // passwords redacted
                size_t start = 0;
                while (start < shown.size()) {
                    size_t end = shown.find("\r\n", start);
                    held_->log.line("S: " + shown.substr(start, end - start));
                    start = end + 2;
                }
            }
        }
        if (output.inputs) commandDeadline_ = net::Clock::now() + s_.commandTimeout;
        if (!wire.empty()) connection.send(std::move(wire));
        if (output.close) {
            closing_ = true;
            connection.setDeadline(s_.sendTimeout);  // for our last reply to be read; then the core's linger
            return connection.closeAfterSend();
        }
        if (output.startTls) {
            // RFC 3207 4: the handshake starts once the 220 has left; the session discarded what was
            // pipelined after STARTTLS.
            connection.setDeadline(s_.handshakeTimeout);
            return connection.startTlsAfterSend(s_.tls);
        }
        if (output.deferred) return runOnWorker(connection, "");
        if (shutdownWhenDone_) {
            shutdownWhenDone_ = false;
            return shutdown(connection);
        }
        if (connection.bytesQueued() > kMaxQueuedReplyBytes) {
            drainingOut_ = true;  // onWritten resumes reading once the client has read them
            connection.pauseReading();
            return connection.setDeadline(s_.sendTimeout);
        }
        awaitClient(connection);
    }

    // RFC 5321 4.5.3.2: a command must arrive whole within sender.timeout.command of the previous reply
    // (bytes that do not finish a line do not restart the clock); while message octets arrive each
    // block must come within sender.timeout.data, and the whole message within sender.timeout.dataTotal.
    void awaitClient(net::Connection& connection) {
        if (closed_) return;  // a send failed and ended the connection
        const smtp::Session& session = *held_->session;
        auto now = net::Clock::now();
        bool nowInMessage = session.inMessage();
        if (nowInMessage && !inMessage_) dataDeadline_ = now + s_.dataTotalTimeout;
        inMessage_ = nowInMessage;
        net::Clock::time_point until = session.receivingMessage() ? std::min(now + s_.dataTimeout, dataDeadline_)
                                       : inMessage_              ? std::min(commandDeadline_, dataDeadline_)
                                                                 : commandDeadline_;
        connection.setDeadline(std::max(duration_cast<milliseconds>(until - now), milliseconds(1)));
        slot_.waiting(connection.fd());  // waiting for the client: when the server is full, the longest waiting give way
    }

    // The deferred input (and what followed it), or `bytes` when every input goes to the workers, on a
    // worker; the loop serves its other connections and this one reads nothing until the replies are sent.
    void runOnWorker(net::Connection& connection, std::string bytes) {
        if (closed_) return;  // a send failed and ended the connection: nothing more is done for it
        busy_ = true;
        slot_.working();
        connection.clearDeadline();  // the server is working: no client deadline meanwhile (as on threads)
        connection.pauseReading();
        net::EventLoop* loop = &connection.loop();
        uint64_t id = connection.id();
        std::shared_ptr<Held> held = held_;
        std::string hostname = s_.env.hostname;
        shared_.workers->run([loop, id, held, hostname, bytes = std::move(bytes), self = this] {
            auto output = std::make_shared<smtp::Output>();
            try {
                *output = bytes.empty() ? held->session->resumeDeferred() : held->session->onBytes(bytes);
            } catch (const std::exception& e) {
                held->log.line("event=error reason=" + logValue(e.what()));
                smtp::Reply reply;
                reply.code = smtp::LocalError.code;
                reply.status = smtp::LocalError.status;
                reply.lines.push_back(hostname + " Local error in processing; closing connection");
                output->replies.push_back(std::move(reply));
                output->close = true;
            }
            // Runs only while the connection is open, and so while this protocol object lives.
            loop->post(id, [self, output](net::Connection& connection) { self->workDone(connection, std::move(*output)); });
        });
    }

    void workDone(net::Connection& connection, smtp::Output output) {
        busy_ = false;
        respond(connection, std::move(output));  // answered first, then reading resumes (in order)
        if (busy_ || closing_ || drainingOut_) return;
        resume(connection);
    }

    void resume(net::Connection& connection) {
        if (!early_.empty()) {
            std::string early = std::move(early_);
            early_.clear();
            onBytes(connection, early.data(), early.size());
            if (busy_ || closing_ || drainingOut_) return;
        }
        connection.resumeReading();
    }

    EventServer::Shared& shared_;
    const Settings& s_;
    ConnectionLimiter::Slot slot_;
    std::shared_ptr<Held> held_;
    uint64_t id_;
    std::string early_;
    net::Clock::time_point commandDeadline_, dataDeadline_;
    bool inMessage_ = false;
    bool busy_ = false;             // an input is on a worker
    bool closing_ = false;          // our last reply is queued: the connection closes after it
    bool drainingOut_ = false;      // over kMaxQueuedReplyBytes queued: reading waits for the client to read
    bool timedOut_ = false, stopped_ = false, shutdownWhenDone_ = false, answeredInClear_ = false, closed_ = false;
};

}  // namespace

EventServer::EventServer(Settings settings) : shared_(std::make_unique<Shared>()) { shared_->settings = std::move(settings); }

EventServer::~EventServer() { stop(milliseconds(0)); }

int EventServer::threads() const { return shared_->core ? shared_->core->threads() : 0; }

size_t EventServer::sessions() const {
    std::lock_guard<std::mutex> lock(shared_->openMutex);
    return shared_->open.size();
}

void EventServer::start(const std::vector<int>& listeners) {
    Shared& shared = *shared_;
    const Settings& s = shared.settings;
    shared.workers = std::make_unique<net::WorkerPool>(s.workers);
    net::CoreSettings core;
    core.threads = s.threads;
    core.tls = s.implicitTls ? s.tls : nullptr;
    core.handshakeTimeout = s.handshakeTimeout;
    core.proxy = s.proxy;
    core.lingerMilliseconds = s.closeLingerMs;
    if (s.implicitTls && s.words.clearText) {
        // RFC 8314 3.3: clear text ("EHLO"), or silence past the hint (a plain client waiting for a
        // banner), on the implicit-TLS port gets one line in clear naming what to use instead.
        core.silenceHint = milliseconds(std::max(0, s.words.silenceHintMs));
        core.clearText = [&shared](net::Connection& connection, const std::string& seen) {
            const Settings& s = shared.settings;
            bool silent = seen.empty();
            std::optional<ClearTextReply> reply =
                s.words.clearText(silent ? FirstBytes::Silence : classifyFirstBytes(seen), seen, connection.localPort());
            std::lock_guard<std::mutex> lock(shared.openMutex);  // the loop's own connection: it stays open meanwhile
            auto found = shared.open.find(connection.id());
            if (found == shared.open.end()) return reply ? reply->wire : std::string();
            SmtpConnection& smtp = *found->second.second;
            if (reply) smtp.answeredInClear();
            smtp.log().peerEvent("plaintext-on-tls", "first=" + (silent ? std::string("silence") : quotedLogValue(firstLine(seen))) +
                                                         " answered=" + (reply ? reply->answered : "closed") +
                                                         " waited_ms=" + std::to_string(silent ? s.words.silenceHintMs : 0));
            return reply ? reply->wire : std::string();
        };
    }
    // Admission and refusals (common/net/event_gate.h): the 421 in smtp_guard.cpp's words, RFC 5321 3.8.
    shared.gate = std::make_unique<net::EventGate>(net::EventGateSettings{
        s.logger, s.nextConnectionId, s.limiter, s.implicitTls, s.maxRefusalHandshakes, s.refusalTimeout, s.words.refusal, s.words.refusedAs});
    shared.gate->install(core, [&shared](net::Connection& connection, ConnectionLimiter::Slot slot) {
        return std::make_unique<SmtpConnection>(shared, std::move(slot), connection);
    });
    shared.core = std::make_unique<net::EventCore>(core);
    shared.core->start(listeners);
}

void EventServer::stop(milliseconds grace) {
    Shared& shared = *shared_;
    if (shared.core && !shared.stopping.exchange(true)) {
        {
            std::lock_guard<std::mutex> lock(shared.openMutex);
            for (auto& [id, where] : shared.open) {
                SmtpConnection* connection = where.second;
                // Runs only while that connection is open, and so while its protocol object lives.
                where.first->post(id, [connection](net::Connection& c) { connection->shutdown(c); });
            }
        }
        auto until = steady_clock::now() + grace;
        while (sessions() > 0 && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
    }
    if (shared.core) shared.core->stop();  // every connection still open ends; no loop takes a worker's answer
    shared.workers.reset();                // the jobs still queued run (a message is stored), answers dropped
    shared.core.reset();
}

}  // namespace maillab::sender_events
