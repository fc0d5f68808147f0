// The retriever's POP3 on the event-loop core: see pop3_event_server.h. The thread service
// (pop3_server.cpp) is the model for every reply, deadline and log line; sender/event_server.cpp for
// the core's use (work on the workers while the connection reads nothing, replies that wait to drain).
#include "pop3_event_server.h"

#include "mail_api.h"

#include "../common/lab/app_support.h"
#include "../common/lab/tls_provenance.h"
#include "../common/net/event_gate.h"
#include "../common/net/guarded_call.h"
#include "../common/net/worker_job.h"
#include "../common/net/log_text.h"
#include "../common/net/tls.h"

#include <cctype>
#include <ctime>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace maillab::pop3 {

namespace {
using namespace std::chrono;
class Pop3Connection;
}  // namespace

struct EventService::Shared {
    ServiceContext ctx;
    EventSettings events;
    MaildropLocks locks;
    http::ResponseBudget responses;
    SSL_CTX* tls = nullptr;  // POP3S and STLS
    // The POP3S port's and the STLS port's: each its own refusals (over TLS or not); both outlive the cores.
    std::unique_ptr<net::EventGate> implicitGate, plainGate;
    // Two lanes (EventSettings): logins on authWorkers, RETR, TOP and QUIT on retrievalWorkers; each
    // bounded by maxQueuedJobs and workerWait, past which a read is answered -ERR [SYS/TEMP] (RFC 3206).
    std::unique_ptr<net::WorkerPool> authWorkers, retrievalWorkers;
    // Set when stop() begins: a job not yet started runs nothing but the session's -ERR [SYS/TEMP]
    // (a queued QUIT enters no UPDATE state, RFC 1939 6: nothing is deleted).
    std::atomic<bool> dropUnstartedJobs{false};
    std::unique_ptr<net::EventCore> implicitCore, plainCore;
    std::atomic<bool> stopping{false};
    // The admitted connections (two cores: their connection ids may repeat, so keyed by the object):
    // stop() tells each to say so. Touched once when a connection opens and once when it ends.
    mutable std::mutex openMutex;
    std::unordered_map<Pop3Connection*, std::pair<net::EventLoop*, uint64_t>> open;
    Shared(ServiceContext context, EventSettings settings)
        : ctx(std::move(context)), events(settings), responses(ctx.maxResponseBytesInFlight) {}
};

namespace {

// Replies queued for a client that does not read them: past this, reading pauses until they have left
// (on threads the blocked send does the same). One batch of a pipelined RETR burst (Session::kBatchBytes).
constexpr size_t kMaxQueuedReplyBytes = Session::kBatchBytes;

// The first letters of a command that may wait: a login runs the password hash (scrypt), RETR and TOP
// read a message's text from the store, QUIT in the TRANSACTION state deletes (RFC 1939 6).
bool commandMayWait(const std::string& lowered) {
    for (const char* verb : {"pass", "auth", "retr", "top", "quit"})
        if (lowered.rfind(verb, 0) == 0) return true;
    return false;
}

// What a worker may still use after its connection has ended: the session, and what its callbacks
// reach (the connection's log and provenance). The connection and each job hold it.
struct Held {
    Held(Poco::Logger* logger, unsigned long id, Store* provenanceStore)
        : log(logger, id, "pop3"), provenance(provenanceStore, "pop3") {}
    ConnectionLog log;
    TlsProvenance provenance;
    std::unique_ptr<Session> session;
    // Set by the loop when the connection ends: a job that has not started for it does nothing (no
    // password is hashed, no QUIT deletes) and lets go of the session.
    std::atomic<bool> gone{false};
};

// RFC 3206: the server's trouble, not the client's; the connection closes (the session never saw the
// read, so nothing it asked for was done, and nothing is deleted).
Output temporaryFailureAndClose(const std::string& text) {
    Output output;
    output.replies.push_back(Reply{"-ERR [SYS/TEMP] " + text, ""});
    output.close = true;
    return output;
}

// One admitted POP3 connection: the greeting on ready, bytes into the Session, the replies to one read
// in one send (RFC 2449 6.6 PIPELINING), slow reads on a worker, the autologout deadline (RFC 1939 3).
class Pop3Connection : public net::BarrierProtocol {
public:
    Pop3Connection(EventService::Shared& shared, ConnectionLimiter::Slot slot, net::Connection& connection, bool implicitTls)
        : shared_(shared), ctx_(shared.ctx), slot_(std::move(slot)),
          held_(std::make_shared<Held>(ctx_.logger, (*ctx_.nextId)++, ctx_.provenance ? ctx_.store : nullptr)),
          idle_(duration_cast<milliseconds>(microseconds(ctx_.idleTimeout.totalMicroseconds()))),
          sendTimeout_(milliseconds(ctx_.gate.sendTimeout.totalMilliseconds())) {
        if (sendTimeout_ <= milliseconds(0)) sendTimeout_ = milliseconds(60000);
        held_->log.setPeer(connection.peer());
        held_->log.peerEvent("connect", guardedProtocol(implicitTls).connectNote +
                                            " active=" + std::to_string(ctx_.limiter->active()));
        slot_.waiting(connection.fd());  // the handshake waits for the client: when full, the longest waiting give way
        std::lock_guard<std::mutex> lock(shared_.openMutex);
        shared_.open[this] = {&connection.loop(), connection.id()};
    }

    ~Pop3Connection() override {
        std::lock_guard<std::mutex> lock(shared_.openMutex);
        shared_.open.erase(this);
    }

    const ConnectionLog& log() const override { return held_->log; }

    void onClosed(net::Connection&, const net::Ending& ending) override {
        closed_ = true;
        held_->gone = true;  // a job still queued for it does nothing
        slot_.working();  // out of the waiting list before the socket is closed
        const ConnectionLog& log = held_->log;
        if (tlsStarting_) logDiscardedPlaintext();  // the handshake never came
        bool handshaking = ending.phase == net::Phase::Handshake || ending.phase == net::Phase::ClearTextCheck;
        std::string reason = slot_.evicted() ? "evicted" : ending.peerClosed || ending.reason.empty() ? "eof" : ending.reason;
        if (closing_ || ended_ || ending.reason == "server stopping") {
            // our own close: the reply (or a line already) said why
        } else if (handshaking) {
            if (ending.deadline) log.peerEvent("disconnect", "reason=handshake-timeout");
            else if (!ending.peerClosed) log.peerEvent("disconnect", "reason=" + logValue(ending.reason));
        } else if (busy_) {
            // Gone while a read of its was on a worker: the state when it went there. A job not yet
            // started does nothing; one running may still log in or delete (no reply reaches anyone).
            log.event("disconnect", "reason=" + logValue(reason) + " state=" + jobState_ + " working=yes");
        } else if (held_->session) {
            // Gone without QUIT: no UPDATE state, nothing deleted (RFC 1939 6).
            log.event("disconnect", "reason=" + logValue(reason) + " state=" + std::string(Session::stateName(held_->session->state())) +
                                        " deleted=none");
        }
        if (slot_.evicted())
            log.peerEvent("evicted", "reason=\"the server was full and this connection waited longest for its client\"");
        log.event("close");
    }

private:
    // Every call the loop makes into this connection goes through here, a worker's answer included: an
    // exception ends this connection with -ERR [SYS/TEMP] (RFC 3206), never the loop or the process,
    // and never leaves it paused with no one to resume it.
    void failed(net::Connection& connection, const std::string& what) override {
        try {
            held_->log.line("event=error reason=" + logValue(what) + " answered=-ERR");
            if (closed_ || closing_) return;
            ended_ = true;
            // The session is a worker's, or TLS is half set up: nothing more is said.
            if (busy_ || tlsStarting_ || !held_->session) return connection.close("local error");
            answer(connection, temporaryFailureAndClose("Local error in processing; closing connection"));
        } catch (...) {
            if (!closed_) connection.close("local error");  // not even the -ERR could be sent
        }
    }

    void ready(net::Connection& connection) override {
        SSL* ssl = connection.ssl();
        if (held_->session) {  // STLS done (RFC 2595 4: the session forgets what came before)
            // Never expected: no read goes to a worker once STLS is answered (bytes() drops them), and
            // STLS is answered only with no job running. Were one running, it has the session.
            if (busy_) return failed(connection, "the STLS handshake ended while a job had the session");
            tlsStarting_ = false;
            logDiscardedPlaintext();
            held_->log.event("tls", "stls=yes " + describeTlsSession(ssl));
            held_->provenance.noteSession(ssl, connection.peer().address);
            held_->session->onTlsStarted();
            lineStart_.clear();
            if (shutdownWhenDone_ || shared_.stopping) {  // stop() came during the handshake: said now, in TLS
                shutdownWhenDone_ = false;
                return stop(connection);
            }
            awaitClient(connection);
            return resume(connection);  // reading was paused if STLS was answered on a worker
        }
        if (ssl) {
            held_->log.event("tls", describeTlsSession(ssl));
            held_->provenance.noteSession(ssl, connection.peer().address);
        }
        held_->session = std::make_unique<Session>(*ctx_.auth, *ctx_.store, ctx_.limits, sessionEnv(connection, ssl != nullptr));
        idleDeadline_ = net::Clock::now() + idle_;
        if (shared_.stopping) {  // accepted while the server stops: it says so instead
            stopped_ = true;
            return answer(connection, held_->session->onShutdown());
        }
        answer(connection, held_->session->start());
    }

    void bytes(net::Connection& connection, const char* data, size_t size) override {
        if (tlsStarting_) {
            // RFC 2595 4 / CVE-2011-0411: STLS is answered and the handshake has not begun (our +OK is
            // still queued): these octets came in clear and never reach the session (nor a worker).
            stlsDiscarded_ += size;
            return;
        }
        if (busy_ || continuing_ || drainingOut_ || closing_) {
            if (!closing_) early_.append(data, size);  // not expected (reading is paused): kept in order
            return;
        }
        slot_.working();
        onWorker_ = shared_.events.everyInputOnWorkers || mayWait(data, size);
        if (onWorker_) return runOnWorker(connection, std::string(data, size));
        Output output;
        if (run(connection, [&] { output = held_->session->onBytes(data, size); })) answer(connection, std::move(output));
    }

    // Our replies waited for the client to read them (drained: all have left).
    void written(net::Connection& connection, bool drained) override {
        if (drained) holds_.clear();  // the response budget's places, given back once sent
        if (!continuing_ && !drainingOut_) return;
        if (!drained) return connection.setDeadline(sendTimeout_);  // each write that goes on restarts it
        if (continuing_) {
            continuing_ = false;
            return nextBatch(connection);
        }
        drainingOut_ = false;
        awaitClient(connection);
        if (!busy_) resume(connection);
    }

    void deadline(net::Connection& connection) override {
        if (continuing_ || drainingOut_) {
            held_->log.peerEvent("disconnect", "reason=send-timeout");
            ended_ = true;
            return connection.close("deadline");
        }
        if (tlsStarting_) {  // the +OK to STLS was not read in time: the handshake never began
            held_->log.peerEvent("disconnect", "reason=handshake-timeout");
            ended_ = true;
            return connection.close("deadline");
        }
        if (closing_ || busy_ || !held_->session) return connection.close("deadline");  // our last reply was not read in time
        answer(connection, held_->session->onTimeout());  // RFC 1939 3: autologout, nothing deleted
    }

    // stop(): -ERR [SYS/TEMP] and close, nothing deleted; a session whose read is on a worker answers it
    // first, one in a STLS handshake once it is done (in TLS).
    void stop(net::Connection& connection) override {
        if (closing_) return;
        if (busy_ || tlsStarting_) {
            shutdownWhenDone_ = true;
            return;
        }
        if (!held_->session) return connection.close("server stopping");  // in its handshake
        stopped_ = true;
        continuing_ = drainingOut_ = false;  // what is queued goes first, then the last word
        answer(connection, held_->session->onShutdown());
    }

    // What came in clear after STLS, dropped unread: the session's count (the rest of STLS's read) and
    // ours (every read until the handshake began). One line, once the handshake has ended or failed.
    void logDiscardedPlaintext() {
        if (stlsDiscarded_) held_->log.line("event=stls-discarded-plaintext octets=" + std::to_string(stlsDiscarded_));
        stlsDiscarded_ = 0;
    }

    Env sessionEnv(net::Connection& connection, bool secure) {
        Env env;
        env.hostname = ctx_.hostname;
        env.peerAddress = connection.peer().host;
        env.tlsActive = secure;
        env.stlsOffered = !secure;
        env.implicitTlsPort = ctx_.implicitTlsPort;
        env.locks = &shared_.locks;
        http::ResponseBudget* budget = &shared_.responses;
        env.reserve = [budget](size_t bytes) { return budget->take(bytes); };
        Held* held = held_.get();  // the session lives inside it: its callbacks never outlive it
        ActivityRecorder* recorder = ctx_.activity;
        env.onLogin = [held, recorder](const std::string& account) {
            if (recorder) recorder->note(account, activity::kLogin, std::time(nullptr));
            held->provenance.recordLogin(account, held->log);
        };
        if (recorder) {
            env.onLoginFailed = [recorder](const std::string& account, bool knownSource) {
                recorder->note(account, activity::loginFailedKind(knownSource), std::time(nullptr));
            };
            env.onRetrieve = [recorder](const std::string& account) {
                recorder->note(account, activity::kMailboxRead, std::time(nullptr));
            };
        }
        bool verbose = ctx_.verbose;
        // State transitions are the per-command detail: shown with --verbose, beside the C:/S: lines.
        env.log = [held, verbose](const std::string& line) {
            if (verbose || line.rfind("event=state", 0) != 0) held->log.line(line);
        };
        if (verbose) env.trace = [held](const std::string& line) { held->log.line(line); };
        return env;
    }

    // Whether the lines these bytes complete may wait (commandMayWait), the start of a line split
    // across reads included; in AUTH PLAIN's exchange the next line is the credentials.
    bool mayWait(const char* data, size_t size) {
        bool wait = held_->session->state() == Session::State::AuthPlain;
        for (size_t i = 0; i < size; ++i) {
            char c = data[i];
            if (c == '\n') {
                wait = wait || commandMayWait(lineStart_);
                lineStart_.clear();
            } else if (lineStart_.size() < 4) {
                lineStart_ += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            }
        }
        return wait;
    }

    // The session's call, or on an exception the thread service's answer: the line, and the socket closed.
    template <typename Call>
    bool run(net::Connection& connection, Call call) {
        try {
            call();
            return true;
        } catch (const std::exception& e) {
            held_->log.peerEvent("disconnect", "reason=" + logValue(e.what()));
            ended_ = true;
            connection.close(e.what());
            return false;
        }
    }

    // The replies to one read in one send, then what the output asks: close, STLS, the next batch
    // (Output::more, once this one has left), or the next wait for the client.
    void answer(net::Connection& connection, Output output) {
        std::string wire;
        for (const Reply& reply : output.replies) {
            wire += reply.wire();
            if (ctx_.verbose) held_->log.line("S: " + escapeControl(reply.forLog()));
        }
        for (auto& hold : output.holds) holds_.push_back(std::move(hold));
        // RFC 1939 3: the autologout timer runs from the last complete command.
        if (output.inputs) idleDeadline_ = net::Clock::now() + idle_;
        if (output.close) {
            closing_ = true;
            connection.setDeadline(sendTimeout_);  // for our last reply to be read; then the core's linger
        }
        // A last reply and its close_notify in one write.
        if (!wire.empty()) connection.send(std::move(wire), output.close);
        if (closed_) return;  // a send failed and ended the connection
        if (connection.bytesQueued() == 0) holds_.clear();
        if (output.close) return connection.closeAfterSend();
        if (output.startTls) {
            // RFC 2595 / CVE-2011-0411: what was pipelined after STLS arrived in clear and was never
            // executed; the session dropped it. The handshake starts once the +OK has left.
            // From here on bytes() drops every read until the handshake (no job runs now: STLS is
            // answered on the loop, or by a job that has ended); ready() logs the count.
            stlsDiscarded_ = output.discardedOctets + early_.size();  // early_: read while a worker had STLS
            early_.clear();
            tlsStarting_ = true;
            connection.setDeadline(milliseconds(ctx_.gate.handshakeTimeout.totalMilliseconds()));
            return connection.startTlsAfterSend(shared_.tls);
        }
        if (output.more) {
            // A batch of replies (Session::kBatchBytes) with lines still unanswered: the next once it has left.
            if (connection.bytesQueued() == 0) return nextBatch(connection);
            continuing_ = true;
            connection.pauseReading();
            return connection.setDeadline(sendTimeout_);
        }
        if (shutdownWhenDone_) {
            shutdownWhenDone_ = false;
            return shutdown(connection);
        }
        if (connection.bytesQueued() > kMaxQueuedReplyBytes) {
            drainingOut_ = true;  // onWritten resumes reading once the client has read them
            connection.pauseReading();
            return connection.setDeadline(sendTimeout_);
        }
        awaitClient(connection);
        if (!busy_) resume(connection);
    }

    // The lines left from a read that stopped at a batch: where the read ran.
    void nextBatch(net::Connection& connection) {
        if (shutdownWhenDone_) {
            shutdownWhenDone_ = false;
            return shutdown(connection);
        }
        if (onWorker_) return runOnWorker(connection, std::string());
        Output output;
        if (run(connection, [&] { output = held_->session->onBytes(nullptr, 0); })) answer(connection, std::move(output));
    }

    void awaitClient(net::Connection& connection) {
        if (closed_) return;
        auto now = net::Clock::now();
        connection.setDeadline(std::max(duration_cast<milliseconds>(idleDeadline_ - now), milliseconds(1)));
        slot_.waiting(connection.fd());  // waiting for the client: when the server is full, the longest waiting give way
    }

    // `bytes` (or, empty, the next batch of the last read) into the session on a worker; the loop serves
    // its other connections and this one reads nothing until the replies are sent. A read that may log
    // in goes to the auth lane, any other to the retrieval lane; a full lane, or a job that waited past
    // auth.hashWaitMilliseconds, is answered -ERR [SYS/TEMP] (RFC 3206) and closed, nothing run.
    void runOnWorker(net::Connection& connection, std::string bytes) {
        if (closed_) return;
        const Session& session = *held_->session;
        bool auth = session.state() == Session::State::Authorization || session.state() == Session::State::AuthPlain;
        net::WorkerPool& lane = auth ? *shared_.authWorkers : *shared_.retrievalWorkers;
        const char* laneName = auth ? "auth" : "retrieval";
        jobState_ = Session::stateName(session.state());
        busy_ = true;
        slot_.working();
        connection.clearDeadline();  // the server is working: no client deadline meanwhile (as on threads)
        connection.pauseReading();
        net::EventLoop* loop = &connection.loop();
        uint64_t id = connection.id();
        std::shared_ptr<Held> held = held_;
        EventService::Shared* shared = &shared_;
        // Runs only while the connection is open, and so while this protocol object lives.
        auto post = [loop, id, self = this](std::shared_ptr<Output> output) {
            loop->post(id, [self, output](net::Connection& connection) {
                self->barrier(connection, [&] { self->workDone(connection, std::move(*output)); });
            });
        };
        // A job's exception ends its connection with -ERR [SYS/TEMP], never the worker or the process;
        // one around posting the answer (out of memory) tries once more with a bare close, so that the
        // paused connection is not left to wait for an answer that never comes (common/net/worker_job.h).
        auto onWorker = [held, post, laneName, loop, id](auto&& work) {
            net::answerFromWorker<Output>(*loop, id, work, [&](const std::string& what) {
                held->log.line("event=error reason=" + logValue(what) + " lane=" + laneName + " answered=-ERR");
                return temporaryFailureAndClose("Local error in processing; closing connection");
            }, post);
        };
        auto work = [held, shared, bytes = std::move(bytes), onWorker] {
            // Gone before its turn: no password is hashed, no message read, no QUIT deletes, and the
            // session's memory goes with this job.
            if (held->gone) return;
            onWorker([&]() -> Output {
                Session& session = *held->session;
                if (shared->dropUnstartedJobs) return session.onShutdown();  // the server stops: nothing run, nothing deleted
                return session.onBytes(bytes.data(), bytes.size());
            });
        };
        std::function<void()> late = [held, onWorker, laneName] {
            if (held->gone) return;
            held->log.line(std::string("event=workers-busy lane=") + laneName + " reason=late");
            onWorker([] { return temporaryFailureAndClose("The server is busy; try again shortly"); });
        };
        if (lane.run(std::move(work), std::move(late))) return;
        // pop3.events.maxQueuedJobs are waiting already: busy, at once.
        held_->log.line(std::string("event=workers-busy lane=") + laneName + " reason=full");
        workDone(connection, temporaryFailureAndClose("The server is busy; try again shortly"));
    }

    void workDone(net::Connection& connection, Output output) {
        busy_ = false;
        answer(connection, std::move(output));  // answered first, then reading resumes (in order)
    }

    void resume(net::Connection& connection) {
        if (!early_.empty()) {
            std::string early = std::move(early_);
            early_.clear();
            onBytes(connection, early.data(), early.size());
            if (busy_ || closing_ || continuing_ || drainingOut_ || closed_) return;
        }
        connection.resumeReading();
    }

    EventService::Shared& shared_;
    const ServiceContext& ctx_;
    ConnectionLimiter::Slot slot_;
    std::shared_ptr<Held> held_;
    milliseconds idle_, sendTimeout_;
    net::Clock::time_point idleDeadline_;
    std::string early_;
    std::string lineStart_;  // the first letters of the line being read, lower case (mayWait)
    std::vector<std::shared_ptr<void>> holds_;  // the budget's places for replies still queued
    bool onWorker_ = false;       // the last read went to a worker (its next batches do too)
    bool busy_ = false;           // a read is on a worker
    bool continuing_ = false;     // a batch waits to leave before the next one is made
    bool drainingOut_ = false;    // over kMaxQueuedReplyBytes queued: reading waits for the client to read
    bool closing_ = false;        // our last reply is queued: the connection closes after it
    bool tlsStarting_ = false;    // STLS answered: the handshake begins once the +OK has left
    bool stopped_ = false, shutdownWhenDone_ = false, ended_ = false, closed_ = false;
    size_t stlsDiscarded_ = 0;    // octets that came in clear after STLS (logged once the handshake ends)
    std::string jobState_;        // the session's state when its read went to a worker (the disconnect line)
};

}  // namespace

EventService::EventService(ServiceContext context, EventSettings events)
    : shared_(std::make_unique<Shared>(std::move(context), events)) {}

EventService::~EventService() { stop(); }

int EventService::threads() const {
    return (shared_->implicitCore ? shared_->implicitCore->threads() : 0) + (shared_->plainCore ? shared_->plainCore->threads() : 0);
}

size_t EventService::sessions() const {
    std::lock_guard<std::mutex> lock(shared_->openMutex);
    return shared_->open.size();
}

void EventService::start(const std::vector<int>& implicitTls, const std::vector<int>& plain) {
    Shared& shared = *shared_;
    const ServiceContext& c = shared.ctx;
    shared.tls = c.tlsContext ? c.tlsContext->sslContext() : nullptr;
    const EventSettings& e = shared.events;
    shared.retrievalWorkers = std::make_unique<net::WorkerPool>(std::max(1, e.workers), e.maxQueuedJobs, e.workerWait);
    shared.authWorkers = std::make_unique<net::WorkerPool>(std::max(1, e.authWorkers), e.maxQueuedJobs, e.workerWait);
    auto startCore = [&shared, &c](const std::vector<int>& listeners, bool overTls) {
        net::CoreSettings core;
        core.threads = shared.events.threads;
        core.tls = overTls ? shared.tls : nullptr;  // clear text on POP3S gets OpenSSL's alert, as on threads
        core.handshakeTimeout = milliseconds(c.gate.handshakeTimeout.totalMilliseconds());
        core.proxy = c.gate.proxy;
        core.lingerMilliseconds = c.gate.closeLingerMs;
        GuardedProtocol words = guardedProtocol(overTls);
        // Admission and refusals (common/net/event_gate.h): RFC 3206 -ERR [SYS/TEMP], service=pop3.
        net::EventGateSettings gate{c.logger, c.nextId, c.limiter, overTls, c.gate.maxRefusalHandshakes,
                                    milliseconds(c.gate.refusalTimeout.totalMilliseconds()), words.refusal, words.refusedAs};
        auto& slot = overTls ? shared.implicitGate : shared.plainGate;
        slot = std::make_unique<net::EventGate>(gate, words.service);
        slot->install(core, [&shared, overTls](net::Connection& connection, ConnectionLimiter::Slot admitted) {
            return std::make_unique<Pop3Connection>(shared, std::move(admitted), connection, overTls);
        });
        auto started = std::make_unique<net::EventCore>(core);
        started->start(listeners);
        return started;
    };
    if (!implicitTls.empty()) shared.implicitCore = startCore(implicitTls, true);
    if (!plain.empty()) shared.plainCore = startCore(plain, false);
}

void EventService::stop() {
    Shared& shared = *shared_;
    bool running = shared.implicitCore || shared.plainCore;
    if (running && !shared.stopping.exchange(true)) {
        shared.dropUnstartedJobs = true;  // those running finish (a QUIT's UPDATE and its +OK), within grace
        {
            std::lock_guard<std::mutex> lock(shared.openMutex);
            for (auto& [connection, where] : shared.open) {
                Pop3Connection* pop3 = connection;
                // Runs only while that connection is open, and so while its protocol object lives.
                where.first->post(where.second, [pop3](net::Connection& c) { pop3->shutdown(c); });
            }
        }
        auto until = steady_clock::now() + shared.events.shutdownGrace;
        while (sessions() > 0 && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
    }
    // Every connection still open ends; no loop takes a worker's answer.
    if (shared.implicitCore) shared.implicitCore->stop();
    if (shared.plainCore) shared.plainCore->stop();
    // The jobs still queued do nothing (dropUnstartedJobs); the running ones end, their answers dropped.
    shared.authWorkers.reset();
    shared.retrievalWorkers.reset();
    shared.implicitCore.reset();
    shared.plainCore.reset();
}

}  // namespace maillab::pop3
