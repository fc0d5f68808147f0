// The sender's SMTP on the event-loop core: see event_server.h. The thread server (server.cpp) is the
// model for every reply, deadline and log line; retriever/event_server.cpp for the core's use.
#include "event_server.h"

#include "smtp_replies.h"

#include "../common/lab/tls_provenance.h"
#include "../common/net/event_gate.h"
#include "../common/net/guarded_call.h"
#include "../common/net/worker_job.h"
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
    // Two lanes, so that deliveries never wait behind password checks (a flood of fresh-name AUTHs
    // each waits for a hash place): AUTH on authWorkers (one the credential cache answers at once
    // runs where its read is framed), the end of a message (and on PostgreSQL every read) on
    // deliveryWorkers. Each bounded by maxQueuedJobs and workerWait.
    std::unique_ptr<net::WorkerPool> authWorkers, deliveryWorkers;
    // Set when stop() begins: a job not yet started does nothing but tell its session 421 (RFC 5321
    // 3.8). A delivery that has not started gets no 250, so it stays the client's (RFC 5321 6.1) and
    // is not stored: a commit with no 250 would be stored again when the client retries.
    std::atomic<bool> dropUnstartedJobs{false};
    // Messages handed to the store's group commit from a loop whose answer has not been posted yet:
    // stop() waits for them before the loops go (a commit's answer is posted to its loop).
    std::atomic<int> commitsInFlight{0};
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
// A read goes to the session in slices of this size, so that framing stops once the replies of one
// read pass kMaxQueuedReplyBytes (an idle connection would otherwise keep the capacity of its largest
// batch); what is left waits in early_ until the replies have left.
constexpr size_t kFrameSlice = 4096;

// The replies to `from` after those of `into` (what Session's own append does).
void append(smtp::Output& into, smtp::Output&& from) {
    for (smtp::Reply& r : from.replies) into.replies.push_back(std::move(r));
    into.close = into.close || from.close;
    into.startTls = into.startTls || from.startTls;
    into.inputs += from.inputs;
    into.deferred = from.deferred;
    into.storing = into.storing || from.storing;
    into.discardedOctets += from.discardedOctets;
}

size_t wireSize(const smtp::Output& output) {
    size_t bytes = 0;
    for (const smtp::Reply& reply : output.replies)
        for (const std::string& line : reply.lines) bytes += line.size() + 12;  // "250-2.0.0 " and CRLF
    return bytes;
}

// An input that failed in a way the session did not foresee (an exception out of it, bad_alloc among
// them): the thread core's answer, 421 4.3.0 and close, so that one connection's failure ends only it.
smtp::Output localErrorAndClose(const std::string& hostname) {
    smtp::Output output;
    smtp::Reply reply;
    reply.code = 421;
    reply.status = smtp::LocalError.status;
    reply.lines.push_back(hostname + " Local error in processing; closing connection");
    output.replies.push_back(std::move(reply));
    output.close = true;
    return output;
}

std::string firstLine(const std::string& bytes) { return bytes.substr(0, bytes.find_first_of("\r\n")); }

// One read (or what is left of one), framed the same way on the loop and, on PostgreSQL, on a worker:
// in kFrameSlice slices, stopping at a close, before a deferred input, or once the replies pass
// kMaxQueuedReplyBytes; what is not framed is moved to `rest`, to be framed once these replies are
// sent (and the deferred input's job is done). After STARTTLS the rest of the read is given to the
// session, which discards it (RFC 3207 5 / CVE-2011-0411): never kept, to run once TLS is up.
smtp::Output frameRead(smtp::Session& session, const char* data, size_t size, std::string& rest) {
    smtp::Output all;
    size_t at = 0, replyBytes = 0;
    while (at < size) {
        size_t slice = std::min(kFrameSlice, size - at);
        smtp::Output out = session.onBytes(data + at, slice);
        replyBytes += wireSize(out);
        append(all, std::move(out));
        at += slice;
        if (all.close) {  // the session reads nothing after it
            at = size;
            break;
        }
        if (all.startTls) {
            if (at < size) append(all, session.onBytes(data + at, size - at));
            at = size;
            break;
        }
        if (all.deferred || replyBytes > kMaxQueuedReplyBytes) break;
    }
    rest.assign(data + at, size - at);
    return all;
}

// What a worker may still use after its connection has ended: the session, and what the session's
// callbacks reach (the connection's log and provenance). The connection and each job hold it.
struct Held {
    Held(ConnectionLog connectionLog, Store* provenanceStore) : log(std::move(connectionLog)), provenance(provenanceStore, "smtp") {}
    ConnectionLog log;
    TlsProvenance provenance;
    std::unique_ptr<smtp::Session> session;
    // Set by the loop when the connection ends: a job that has not started for it does nothing (an AUTH
    // is not hashed; a message with no 250 sent is not stored, RFC 5321 6.1) and lets go of the session.
    std::atomic<bool> gone{false};
};

// One admitted SMTP connection: banner on ready, bytes into the Session, its replies out in one send
// per read (RFC 2920), slow inputs on a worker.
class SmtpConnection : public net::BarrierProtocol {
public:
    SmtpConnection(EventServer::Shared& shared, ConnectionLimiter::Slot slot, net::Connection& connection)
        : shared_(shared), s_(shared.settings), slot_(std::move(slot)),
          held_(std::make_shared<Held>(shared.gate->newLog(connection.peer()), s_.provenance ? s_.store : nullptr)),
          id_(connection.id()) {
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
    void answeredInClear() const { answeredInClear_ = true; }  // on the loop thread, before any read

    void onClosed(net::Connection&, const net::Ending& ending) override {
        closed_ = true;
        held_->gone = true;  // a job still queued for it does nothing
        slot_.working();  // out of the waiting list before the socket is closed
        const ConnectionLog& log = held_->log;
        bool handshaking = ending.phase == net::Phase::Handshake || ending.phase == net::Phase::ClearTextCheck;
        std::string reason = slot_.evicted() ? "evicted" : ending.peerClosed || ending.reason.empty() ? "eof" : ending.reason;
        if (answeredInClear_ || closing_ || timedOut_ || stopped_ || ending.reason == "server stopping") {
            // our own close: the reply said why
        } else if (handshaking) {
            if (ending.deadline) log.peerEvent("disconnect", "reason=handshake-timeout");
            else if (!ending.peerClosed) log.peerEvent("disconnect", "reason=" + logValue(ending.reason));
        } else if (busy_) {
            // The client went away while an input of its was on a worker: the state when it went there.
            // A job not yet started stores nothing; one running may still store (no 250 reaches anyone).
            log.line("event=disconnect reason=" + logValue(reason) + " state=" + jobState_ + " working=yes");
        } else if (held_->session) {
            // The client went away. In a message, what had arrived is dropped: nothing half-stored.
            const smtp::Session& session = *held_->session;
            log.line("event=disconnect reason=" + logValue(reason) + " state=" + smtp::Session::stateName(session.state()) +
                     (session.inMessage() ? " stored=no" : ""));
        }
        if (slot_.evicted())
            log.peerEvent("evicted", "reason=\"the server was full and this connection waited longest for its client\"");
        log.event("close");
    }

private:
    // Every call the loop makes into this connection goes through here: an exception (bad_alloc, or a
    // failure the session did not foresee) ends this connection with 421 4.3.0, not the process.
    void failed(net::Connection& connection, const std::string& what) override {
        try {
            held_->log.line("event=error reason=" + logValue(what) + " answered=421");
            if (closed_ || closing_) return;
            if (busy_) return connection.close("local error");  // the session is a worker's: nothing more is said
            respond(connection, localErrorAndClose(s_.env.hostname));
        } catch (...) {
            if (!closed_) connection.close("local error");  // not even the 421 could be sent
        }
    }

    void ready(net::Connection& connection) override {
        handshaking_ = false;
        SSL* ssl = connection.ssl();
        std::string tls = ssl ? describeTlsSession(ssl) : "";
        if (ssl) held_->provenance.noteSession(ssl, connection.peer().address);
        size_t group = tls.find(" group=");
        std::string description = tls.substr(0, group), groupName = group == std::string::npos ? "" : tls.substr(group + 7);
        if (held_->session) {  // STARTTLS done (RFC 3207 4.2: the session forgets what came before)
            held_->log.event("tls", "starttls=yes " + tls);
            held_->session->onTlsStarted(description, groupName);
            commandDeadline_ = net::Clock::now() + s_.commandTimeout;
            connection.resumeReading();  // paused if a worker framed the STARTTLS (PostgreSQL): read in TLS now
            if (shutdownWhenDone_ || shared_.stopping) {  // stop() came during the handshake: said now, in TLS
                shutdownWhenDone_ = false;
                return stop(connection);
            }
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
        env.loginWouldWait = [held](const std::string& account) { return held->provenance.wouldRecord(account); };
        held_->session = std::make_unique<smtp::Session>(*s_.auth, *s_.store, s_.limits, env);
        // On PostgreSQL too: a read's job stops before an AUTH, which goes to the AUTH lane, unless the
        // credential cache answers it at once (Session::authAnswerableAtOnce: then inside the read's job;
        // on SQLite, on the loop).
        held_->session->setDeferSlowWork(true);
        commandDeadline_ = net::Clock::now() + s_.commandTimeout;
        smtp::Output banner = held_->session->start();
        if (shared_.stopping) {  // accepted while the server stops: it says so instead
            smtp::Output last = held_->session->onShutdown();
            return respond(connection, std::move(last));
        }
        respond(connection, std::move(banner));
    }

    void bytes(net::Connection& connection, const char* data, size_t size) override {
        if (busy_ || drainingOut_ || closing_ || handshaking_) {
            if (!closing_ && !handshaking_) early_.append(data, size);  // not expected (reading is paused): kept in order
            return;
        }
        slot_.working();
        if (s_.everyInputOnWorkers) return runOnWorker(connection, std::string(data, size));
        // The rest waits: behind the deferred input's job, or for these replies to leave.
        std::string rest;
        smtp::Output output = frameRead(*held_->session, data, size, rest);
        early_.insert(0, rest);
        respond(connection, std::move(output));
        if (!early_.empty() && !busy_ && !closing_ && !drainingOut_ && !handshaking_ && !closed_) resume(connection);
    }

    // Our replies waited for the client to read them (drained: all have left). sender.timeout.send has
    // the thread core's meaning: there a blocked send (SO_SNDTIMEO, sendAll's loop) fails once one send
    // call has waited that long in all without moving every byte; a call that moved some returns them
    // and the next call waits afresh. So here each sendTimeout window must move some bytes, for replies
    // that wait with reading paused and for our last reply alike: a write that goes on is noted, and the
    // deadline is re-armed when the window ends, not on every partial write.
    void written(net::Connection& connection, bool drained) override {
        if (!drainingOut_ && !closing_) return;
        if (!drained) {
            drainMoved_ = true;
            return;
        }
        if (closing_) return;  // the core closes now, after its linger
        drainingOut_ = false;
        awaitClient(connection);
        if (!busy_) resume(connection);
    }

    void deadline(net::Connection& connection) override {
        if ((drainingOut_ || closing_) && drainMoved_) {  // bytes left in this window: the next one (written())
            drainMoved_ = false;
            return connection.setDeadline(s_.sendTimeout);
        }
        if (drainingOut_) {
            held_->log.peerEvent("disconnect", "reason=send-timeout");
            timedOut_ = true;
            return connection.close("deadline");
        }
        if (closing_) return connection.close("deadline");  // our last reply was not read in time
        if (busy_) {
            // The backstop (runOnWorker): its job's answer never came. The session is still the
            // worker's, so the 421 is built here; the answer, if it comes, finds the connection closing.
            held_->log.line(std::string("event=error reason=\"no answer from its worker in time\" lane=") + laneName_ +
                            " state=" + jobState_ + " working=yes answered=421");
            return respond(connection, localErrorAndClose(s_.env.hostname));
        }
        timedOut_ = true;
        respond(connection, held_->session->onTimeout());  // RFC 5321 4.5.3.2: 421, then close
    }

    // stop(): RFC 5321 3.8, 421 and close; a session whose input is on a worker answers it first, one
    // in a STARTTLS handshake once it is done (in TLS).
    void stop(net::Connection& connection) override {
        if (closing_) return;
        if (busy_ || handshaking_) {
            shutdownWhenDone_ = true;
            return;
        }
        if (!held_->session) return connection.close("server stopping");  // still in its handshake
        stopped_ = true;
        respond(connection, held_->session->onShutdown());
    }

    // The replies to one read in one send (RFC 2920; also one TLS record per batch), then what the
    // output asks: close, STARTTLS, a slow input on a worker, or the next wait for the client.
    void respond(net::Connection& connection, smtp::Output output) {
        std::string wire;
        for (const smtp::Reply& reply : output.replies) {
            wire += reply.wire();
            if (s_.verbose)
                for (size_t i = 0; i < reply.lines.size(); ++i) held_->log.line("S: " + reply.line(i, true));  // passwords redacted
        }
        if (output.inputs) commandDeadline_ = net::Clock::now() + s_.commandTimeout;
        if (output.close) {
            closing_ = true;
            drainMoved_ = false;
            connection.setDeadline(s_.sendTimeout);  // for our last reply to be read (written()); then the core's linger
            if (!wire.empty()) connection.send(std::move(wire), true);  // its close_notify in the same write
            return connection.closeAfterSend();
        }
        if (!wire.empty()) connection.send(std::move(wire));
        if (output.startTls) {
            // RFC 3207 4: the handshake starts once the 220 has left. RFC 3207 5 / CVE-2011-0411: what
            // was pipelined after STARTTLS arrived in clear and never runs: the session dropped the rest
            // of its read, and early_ (read while a worker had the input before it) goes too. One line
            // per STARTTLS, however many slices or reads it came in.
            size_t discarded = output.discardedOctets + early_.size();
            early_.clear();
            if (discarded) held_->log.line("event=starttls-discarded-plaintext octets=" + std::to_string(discarded));
            // A stop() meanwhile (shutdownWhenDone_) is said once TLS is up: ready() checks it.
            handshaking_ = true;
            connection.setDeadline(s_.handshakeTimeout);
            return connection.startTlsAfterSend(s_.tls);
        }
        if (output.deferred) {
            bool commitHere = s_.commitFromLoop && !s_.everyInputOnWorkers && !held_->session->deferredIsAuth();
            return commitHere ? commitFromLoop(connection) : runOnWorker(connection, "");
        }
        if (shutdownWhenDone_) {
            shutdownWhenDone_ = false;
            return stop(connection);
        }
        if (connection.bytesQueued() > kMaxQueuedReplyBytes) {
            drainingOut_ = true;  // onWritten resumes reading once the client has read them
            drainMoved_ = false;
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

    // The deferred input alone, or `bytes` when every input goes to the workers, on a worker; the loop
    // serves its other connections and this one reads nothing until the replies are sent. What followed
    // the deferred input comes back unframed and is framed again here (frameRead, deferral on), so the
    // next slow input goes to the lane it needs and the framing limits hold for it.
    void runOnWorker(net::Connection& connection, std::string bytes) {
        if (closed_) return;  // a send failed and ended the connection: nothing more is done for it
        busy_ = true;
        slot_.working();
        // No client deadline while the server works (as on threads), but a backstop: a job's answer
        // comes within the longest a job may take (its wait for a worker, auth.hashWaitMilliseconds,
        // then the work itself, bounded here by sender.timeout.command). An answer that could not be
        // posted would otherwise leave this connection paused, and its slot working, for ever.
        connection.setDeadline(s_.workerWait + s_.commandTimeout);
        connection.pauseReading();
        smtp::Session& session = *held_->session;
        jobState_ = smtp::Session::stateName(session.state());
        bool raw = !bytes.empty();  // on PostgreSQL: a read, any of whose commands may query the store
        bool auth = !raw && session.deferredIsAuth();
        net::WorkerPool& lane = auth ? *shared_.authWorkers : *shared_.deliveryWorkers;
        net::EventLoop* loop = &connection.loop();
        uint64_t id = connection.id();
        std::shared_ptr<Held> held = held_;
        std::string hostname = s_.env.hostname;
        EventServer::Shared* shared = &shared_;
        // Runs only while the connection is open, and so while this protocol object lives.
        auto answer = [loop, id, self = this](std::shared_ptr<smtp::Output> output, std::shared_ptr<std::string> after) {
            loop->post(id, [self, output, after](net::Connection& connection) {
                self->barrier(connection, [&] { self->workDone(connection, std::move(*output), std::move(*after)); });
            });
        };
        // A worker's exception ends this connection (421 4.3.0), never the worker or the process
        // (common/net/worker_job.h: if not even that can be posted, a bare close; else the backstop
        // deadline ends it). `after`: the bytes that followed the deferred input, framed again on the loop.
        auto onWorker = [held, hostname, answer, loop, id](const char* lane, auto&& work) {
            auto after = std::make_shared<std::string>();
            net::answerFromWorker<smtp::Output>(
                *loop, id, [&] { return work(*after); },
                [&](const std::string& what) {
                    held->log.line("event=error reason=" + logValue(what) + " lane=" + lane + " answered=421");
                    return localErrorAndClose(hostname);
                },
                [&](std::shared_ptr<smtp::Output> output) { answer(std::move(output), after); });
        };
        const char* laneName = auth ? "auth" : "delivery";
        laneName_ = laneName;
        auto work = [held, shared, bytes = std::move(bytes), onWorker, laneName] {
            // Gone before its turn: nothing is checked or stored (RFC 5321 6.1: no 250 was sent, the
            // message is still the client's), and the session's memory goes with this job.
            if (held->gone) return;
            onWorker(laneName, [&](std::string& after) -> smtp::Output {
                smtp::Session& session = *held->session;
                if (shared->dropUnstartedJobs) return session.onShutdown();  // RFC 5321 3.8: 421, nothing run
                if (bytes.empty()) return session.resumeDeferred(after);
                // A read, framed as the loop frames one (the same slices and reply cap). A message's end
                // in it runs here, alone (this is its lane); an AUTH goes back to the loop, for the AUTH
                // lane; what follows either goes back to the loop too.
                smtp::Output output = frameRead(session, bytes.data(), bytes.size(), after);
                if (output.deferred && !output.close && !session.deferredIsAuth()) {
                    std::string following;
                    append(output, session.resumeDeferred(following));
                    after.insert(0, following);
                }
                return output;
            });
        };
        // Waited past auth.hashWaitMilliseconds: answered busy as the thread core answers a login that
        // found no hash place (454 4.7.0) or a delivery that failed (451 4.3.0), and nothing run; while
        // the server stops, 421 as every other session hears (RFC 5321 3.8).
        std::function<void()> late;
        if (!raw)
            late = [held, shared, onWorker, laneName] {
                if (held->gone) return;
                onWorker(laneName, [&](std::string& after) -> smtp::Output {
                    if (shared->dropUnstartedJobs) return held->session->onShutdown();
                    held->log.line(std::string("event=workers-busy lane=") + laneName + " reason=late");
                    return held->session->refuseDeferred(after);
                });
            };
        if (lane.run(std::move(work), std::move(late))) return;
        // sender.events.maxQueuedJobs are waiting already: busy, at once.
        held_->log.line(std::string("event=workers-busy lane=") + laneName + " reason=full");
        if (raw) return workDone(connection, localErrorAndClose(hostname), "");
        std::string after;
        smtp::Output refused = session.refuseDeferred(after);
        workDone(connection, std::move(refused), std::move(after));
    }

    // The end of a message, on the loop up to its commit: the checks and the message's making run
    // here (nothing in them waits but the quota's read, mostly from memory), the commit is the group
    // commit's (Store::deliverAsync), and its answer comes back to committed(). Reading waits
    // meanwhile, as for a worker's job, with the same backstop; a refusal on the way (quota, disk,
    // rates) is answered at once.
    void commitFromLoop(net::Connection& connection) {
        if (closed_) return;
        smtp::Session& session = *held_->session;
        jobState_ = smtp::Session::stateName(session.state());
        laneName_ = "commit";
        std::string after;
        smtp::Output output = session.resumeDeferredUntilStored(after);
        if (!output.storing) return workDone(connection, std::move(output), std::move(after));
        busy_ = true;
        slot_.working();
        connection.setDeadline(s_.workerWait + s_.commandTimeout);  // the backstop, as runOnWorker's
        connection.pauseReading();
        early_.insert(0, after);  // framed again once the 250 is sent
        net::EventLoop* loop = &connection.loop();
        uint64_t id = connection.id();
        std::atomic<int>* inFlight = &shared_.commitsInFlight;
        ++*inFlight;
        // On the committing thread; posted, it runs only while the connection is open (and so while
        // this protocol object lives). A connection gone meanwhile: its message is stored all the
        // same (it was begun, as a running job's; no 250 reaches anyone). The callback holds the
        // session, as a worker's job does: its share of smtp.maxDataInFlight counts the message's
        // bytes until the commit lets them go (a review found a client's reset gave them back early).
        auto done = [loop, id, self = this, inFlight, held = held_](std::vector<int64_t>, const std::string& error) mutable {
            try {
                loop->post(id, [self, error](net::Connection& c) {
                    self->barrier(c, [&] { self->committed(c, error); });
                });
            } catch (...) {
                // Not even the post: the backstop deadline ends the connection.
            }
            held.reset();  // here, not when the group commit lets the callback go
            --*inFlight;
        };
        try {
            s_.store->deliverAsync(session.pendingMessage(), std::move(done));
        } catch (...) {
            --*inFlight;  // not queued: its answer will never come
            throw;        // failed(): this connection ends (421 4.3.0 is not said while busy)
        }
    }

    void committed(net::Connection& connection, const std::string& error) {
        if (closing_ || closed_) return;  // the backstop answered 421 already
        workDone(connection, held_->session->messageStored(error), "");
    }

    // A job's answer (on the loop): its replies, then what followed its input, framed again.
    void workDone(net::Connection& connection, smtp::Output output, std::string after) {
        if (closing_ || closed_) return;  // the backstop answered 421 already: nothing more is said
        busy_ = false;
        early_.insert(0, after);
        // RFC 2920: what the client pipelined behind the job's input (QUIT after a message's content)
        // is answered in the same send: one TLS record and one segment for the 250 and the 221, not one
        // each. On PostgreSQL a read's commands go to a worker, never framed here.
        if (!early_.empty() && !output.close && !output.startTls && !output.deferred && !shutdownWhenDone_ &&
            !s_.everyInputOnWorkers) {
            slot_.working();
            try {
                std::string rest;
                smtp::Output more = frameRead(*held_->session, early_.data(), early_.size(), rest);
                early_ = std::move(rest);
                append(output, std::move(more));
            } catch (const std::exception& e) {
                // The job's reply goes first all the same (a 250 whose message is stored must not turn
                // into a 421 the client would retry), then failed()'s answer: 421 4.3.0 and close.
                early_.clear();
                held_->log.line("event=error reason=" + logValue(e.what()) + " answered=421");
                append(output, localErrorAndClose(s_.env.hostname));
            }
        }
        respond(connection, std::move(output));  // answered first, then reading resumes (in order)
        if (busy_ || closing_ || drainingOut_ || handshaking_) return;
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
    bool drainMoved_ = false;       // draining or closing: some bytes left in this sender.timeout.send window
    bool timedOut_ = false, stopped_ = false, shutdownWhenDone_ = false, closed_ = false;
    mutable bool answeredInClear_ = false;  // the core's clear-text check answered it (it sees a const protocol)
    bool handshaking_ = false;      // STARTTLS's handshake: ready() runs when it is done
    std::string jobState_;          // the session's state when its input went to a worker (the disconnect line)
    const char* laneName_ = "";     // the lane of the job that has it
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
    shared.deliveryWorkers = std::make_unique<net::WorkerPool>(s.workers, s.maxQueuedJobs, s.workerWait);
    shared.authWorkers = std::make_unique<net::WorkerPool>(s.authWorkers, s.maxQueuedJobs, s.workerWait);
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
            // A connection the limiter refused is just closed (its refusal line says answered=closed).
            const net::GatedProtocol& protocol = net::EventGate::protocolOf(connection);
            if (!protocol.answersClearText()) return std::string();
            // Admitted: the protocol is ours (the refusal says no to clear text), on its own loop thread.
            const auto& smtp = static_cast<const SmtpConnection&>(protocol);
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

void EventServer::dropUnstartedJobs() { shared_->dropUnstartedJobs = true; }

void EventServer::stop(milliseconds grace) {
    Shared& shared = *shared_;
    if (shared.core && !shared.stopping.exchange(true)) {
        shared.dropUnstartedJobs = true;  // those running finish (a delivery's 250 is sent), within grace
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
    // The group commit's answers post to the loops: they must be there until the last one is posted.
    while (shared.commitsInFlight > 0) std::this_thread::sleep_for(milliseconds(5));
    // The jobs still queued do nothing (dropUnstartedJobs); the running ones end, their answers dropped.
    shared.authWorkers.reset();
    shared.deliveryWorkers.reset();
    shared.core.reset();
}

}  // namespace maillab::sender_events
