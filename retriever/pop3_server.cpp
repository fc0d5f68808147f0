// The POP3 connections of the retriever (pop3_server.h): the connection gate
// (common/net/guarded_connection.h) admits them by the retriever's limiter or refuses with -ERR, and
// completes the TLS handshake under a total deadline; then every read into the pop3::Session
// (which frames it), every reply that a read produced sent together (RFC 2449 PIPELINING), an idle
// deadline (RFC 1939 3 autologout), STLS as the sender does STARTTLS. Logged as key=value lines
// with the connection id, service=pop3.
#include "pop3_server.h"

#include "mail_api.h"

#include "../common/lab/app_support.h"
#include "../common/lab/tls_provenance.h"
#include "../common/net/tls.h"

#include <Poco/Net/NetException.h>
#include <Poco/Net/TCPServerConnection.h>
#include <Poco/Net/TCPServerConnectionFactory.h>

#include <unistd.h>

#include <chrono>
#include <ctime>

namespace maillab::pop3 {

struct Service::Shared {
    ServiceContext ctx;
    MaildropLocks locks;
    http::ResponseBudget responses;
    // The POP3S port's and the STLS port's: refusals over TLS have handshakes of their own, apart
    // from the HTTPS side's (the retriever's pool has room for both).
    ConnectionGate implicitGate, plainGate;
    int stopPipe[2] = {-1, -1};  // written once at stop: every waiting session wakes up
    explicit Shared(ServiceContext context)
        : ctx(std::move(context)), responses(ctx.maxResponseBytesInFlight),
          implicitGate(ctx.gate, guardedProtocol(true), true, *ctx.limiter, *ctx.watchdog, *ctx.logger, *ctx.nextId),
          plainGate(ctx.gate, guardedProtocol(false), false, *ctx.limiter, *ctx.watchdog, *ctx.logger, *ctx.nextId) {}
};

GuardedProtocol guardedProtocol(bool implicitTls) {
    GuardedProtocol protocol;
    protocol.service = "pop3";
    protocol.connectNote = implicitTls ? "tls=implicit" : "tls=stls-port";
    protocol.refusedAs = "-ERR";
    // RFC 3206 4: SYS/TEMP, a passing problem of the system: try again later.
    protocol.refusal = [](ConnectionLimiter::Verdict verdict) {
        return std::string("-ERR [SYS/TEMP] Too many connections") +
               (verdict == ConnectionLimiter::Verdict::TooManyFromAddress ? " from your address" : "") +
               "; try again later\r\n";
    };
    return protocol;  // clear text on the POP3S port gets OpenSSL's alert, as before
}

namespace {

class Connection : public Poco::Net::TCPServerConnection {
public:
    Connection(const Poco::Net::StreamSocket& socket, Service::Shared& shared, ConnectionGate& gate)
        : TCPServerConnection(socket), s_(shared), ctx_(shared.ctx), gate_(gate),
          provenance_(ctx_.provenance ? ctx_.store : nullptr, "pop3") {}

    void run() override {
        gate_.run(socket(), [this](AdmittedConnection& connection) {
            connection_ = &connection;
            serve(connection);
        });
    }

private:
    void log(const std::string& text) { connection_->log.line(text); }

    void onLogin(const std::string& account) {
        if (ctx_.activity) ctx_.activity->note(account, activity::kLogin, std::time(nullptr));
        provenance_.recordLogin(account, connection_->log);
    }

    void queue(Output& output) {
        for (Reply& reply : output.replies) {
            pending_ += reply.wire();
            if (ctx_.verbose) log("S: " + escapeControl(reply.forLog()));
        }
        for (auto& hold : output.holds) holds_.push_back(std::move(hold));
    }

    void flush(Poco::Net::StreamSocket& socket) {
        if (!pending_.empty()) sendAll(socket, pending_);
        pending_.clear();
        pending_.shrink_to_fit();  // a message's worth of buffer goes back, not kept while idle
        holds_.clear();           // the response budget's places, given back once sent
    }

    void serve(AdmittedConnection& connection) {
        Poco::Net::StreamSocket& socket = connection.socket;
        if (connection.secure) provenance_.noteSession(socket, connection.client.address);
        Env env;
        env.hostname = ctx_.hostname;
        env.peerAddress = connection.client.host;
        env.tlsActive = connection.secure;
        env.stlsOffered = !connection.secure;
        env.implicitTlsPort = ctx_.implicitTlsPort;
        env.locks = &s_.locks;
        http::ResponseBudget* budget = &s_.responses;
        env.reserve = [budget](size_t bytes) { return budget->take(bytes); };
        env.onLogin = [this](const std::string& account) { onLogin(account); };
        if (ActivityRecorder* recorder = ctx_.activity) {
            env.onLoginFailed = [recorder](const std::string& account, bool knownSource) {
                recorder->note(account, activity::loginFailedKind(knownSource), std::time(nullptr));
            };
            env.onRetrieve = [recorder](const std::string& account) {
                recorder->note(account, activity::kMailboxRead, std::time(nullptr));
            };
        }
        env.log = [this](const std::string& line) {
            if (ctx_.verbose || line.rfind("event=state", 0) != 0) log(line);
        };
        if (ctx_.verbose) env.trace = [this](const std::string& line) { log(line); };
        Session session(*ctx_.auth, *ctx_.store, ctx_.limits, env);
        Output greeting = session.start();
        queue(greeting);
        flush(socket);

        char buffer[16384];
        using Clock = std::chrono::steady_clock;
        auto idle = std::chrono::microseconds(ctx_.idleTimeout.totalMicroseconds());
        // RFC 1939 3: the autologout timer runs from the last complete command (bytes that do not
        // finish a line do not restart it).
        Clock::time_point deadline = Clock::now() + idle;
        bool closing = false;
        while (!closing) {
            AdmittedConnection::Wait wait = connection.waitForClient(deadline, s_.stopPipe[0]);
            if (wait != AdmittedConnection::Wait::Readable) {
                Output last = wait == AdmittedConnection::Wait::Stopping ? session.onShutdown() : session.onTimeout();
                queue(last);
                flush(socket);
                return;
            }
            int n = 0;
            try {
                n = socket.receiveBytes(buffer, sizeof buffer);
            } catch (const Poco::TimeoutException&) {
                Output last = session.onTimeout();
                queue(last);
                flush(socket);
                return;
            } catch (const Poco::Exception& e) {
                connection.log.event("disconnect", "reason=" + logValue(e.displayText()) + " state=" +
                                                       Session::stateName(session.state()) + " deleted=none");
                return;
            }
            if (n <= 0) {
                // Gone without QUIT: no UPDATE state, nothing deleted (RFC 1939 6).
                connection.log.event("disconnect", std::string("reason=") +
                                                       (connection.slot.evicted() ? "evicted" : "eof") + " state=" +
                                                       Session::stateName(session.state()) + " deleted=none");
                return;
            }
            // The session frames the bytes itself (lines, the length limit, the STLS discard) and
            // answers every line that arrived (RFC 2449 6.6), a batch of replies at a time: a burst of
            // RETRs holds one batch in memory, not all of them.
            Output output = session.onBytes(buffer, static_cast<size_t>(n));
            for (;;) {
                queue(output);
                if (output.inputs) deadline = Clock::now() + idle;
                closing = output.close;
                if (!output.more) break;
                flush(socket);
                output = session.onBytes(nullptr, 0);
            }
            flush(socket);
            if (output.startTls) {
                // RFC 2595 / CVE-2011-0411: what was pipelined after STLS arrived in clear and was
                // never executed; the session dropped it.
                if (output.discardedOctets)
                    log("event=stls-discarded-plaintext octets=" + std::to_string(output.discardedOctets));
                connection.startTls(ctx_.tlsContext);
                connection.log.event("tls", "stls=yes " + connection.tls);
                provenance_.noteSession(socket, connection.client.address);
                session.onTlsStarted();
            }
        }
    }

    Service::Shared& s_;
    const ServiceContext& ctx_;
    ConnectionGate& gate_;
    AdmittedConnection* connection_ = nullptr;  // the socket, its client, its place and its log, once admitted
    TlsProvenance provenance_;  // the TLS session a login is recorded with (class servers)
    std::string pending_;
    std::vector<std::shared_ptr<void>> holds_;
};

class ConnectionFactory : public Poco::Net::TCPServerConnectionFactory {
public:
    ConnectionFactory(Service::Shared& shared, ConnectionGate& gate) : shared_(shared), gate_(gate) {}
    Poco::Net::TCPServerConnection* createConnection(const Poco::Net::StreamSocket& socket) override {
        return new Connection(socket, shared_, gate_);
    }

private:
    Service::Shared& shared_;
    ConnectionGate& gate_;
};

}  // namespace

Service::Service(ServiceContext context) : shared_(std::make_unique<Shared>(std::move(context))) {
    if (::pipe(shared_->stopPipe) != 0) throw std::runtime_error("cannot create the POP3 stop pipe");
}

Service::~Service() {
    stop();
    servers_.clear();
    for (int fd : shared_->stopPipe)
        if (fd >= 0) ::close(fd);
}

void Service::serve(std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners, bool implicitTls,
                    Poco::ThreadPool& pool, int maxThreads, int backlog) {
    for (auto& listener : listeners) {
        Poco::Net::TCPServerParams::Ptr params = new Poco::Net::TCPServerParams;
        params->setMaxThreads(maxThreads);
        params->setMaxQueued(backlog);
        servers_.push_back(std::make_unique<Poco::Net::TCPServer>(new ConnectionFactory(*shared_, implicitTls ? shared_->implicitGate : shared_->plainGate), pool,
                                                                  *listener, params));
        servers_.back()->start();
    }
}

void Service::stop() {
    for (auto& server : servers_) server->stop();
    static const char wake = 'x';
    if (shared_->stopPipe[1] >= 0 && ::write(shared_->stopPipe[1], &wake, 1) == 1) {
        ::close(shared_->stopPipe[1]);
        shared_->stopPipe[1] = -1;  // once: the pipe stays readable for every session
    }
}

}  // namespace maillab::pop3
