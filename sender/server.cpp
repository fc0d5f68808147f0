// senderserver: the lab's SMTP submission server over implicit TLS 1.3 (RFC 8314). A Poco
// ServerApplication; each connection runs SmtpConnection::run() on a pool thread: the connection gate
// (common/net/guarded_connection.h) admits it and completes TLS, then it drives a socket-free
// smtp::Session (session.h). With sender.core = events the same sessions run on the event-loop core
// instead (event_server.h).
#include "event_server.h"
#include "session.h"
#include "smtp_guard.h"

#include "../common/lab/app_support.h"
#include "../common/lab/auth.h"
#include "../common/lab/class_board.h"
#include "../common/net/guarded_connection.h"
#include "../common/lab/store.h"
#include "../common/lab/tls_provenance.h"
#include "../common/net/tls.h"

#include <Poco/Net/DNS.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/TCPServer.h>
#include <Poco/Net/TCPServerConnection.h>
#include <Poco/Net/TCPServerConnectionFactory.h>
#include <Poco/ThreadPool.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <iostream>
#include <thread>

extern const char* const kSenderServerProperties;  // generated from sender/senderserver.properties
extern const char* const kSharedProperties;  // generated from common/shared.properties

namespace maillab {
namespace {

using Poco::Util::Option;
using Poco::Util::OptionSet;

// Everything the connections share, built once at start-up from the configuration.
struct SenderContext {
    std::unique_ptr<Store> store;
    std::unique_ptr<Authenticator> auth;
    smtp::SessionLimits limits;
    std::string hostname;
    int maxConnections = 0;
    std::unique_ptr<ConnectionLimiter> limiter;
    std::unique_ptr<ConnectionGate> gate;  // PROXY header, limits (421), clear text, the handshake
    std::unique_ptr<smtp::DataBudget> dataBudget;  // message data held in memory by all sessions
    std::unique_ptr<smtp::SubmissionRates> rates;  // per account and address an hour (class servers)
    std::shared_ptr<FreeSpaceGauge> freeSpace;     // where the database is: its free space is checked
    ClassRecord classRecord;  // provenance, the board's activity, lab tokens (class servers)
    Watchdog watchdog;  // total deadlines: the handshake, a command, the whole DATA phase
    Poco::Timespan commandTimeout, dataTimeout, dataTotalTimeout;
    bool verbose = false;
    smtp::TlsMode tlsMode = smtp::TlsMode::Implicit;
    bool allowPlaintextAuth = false;
    Poco::Net::Context::Ptr tlsContext;  // for STARTTLS
    std::atomic<int> active{0};
    int stopPipe[2] = {-1, -1};  // written once at shutdown: every connection's wait wakes up
    std::atomic<unsigned long> nextId{1};  // the log lines' connection ids
};

class SmtpConnection : public Poco::Net::TCPServerConnection {
public:
    SmtpConnection(const Poco::Net::StreamSocket& socket, SenderContext& context)
        : TCPServerConnection(socket), ctx_(context),
          provenance_(context.classRecord.provenance ? context.store.get() : nullptr, "smtp") {}

    // The gate (common/net/guarded_connection.h) admits or refuses with 421, answers clear text on
    // the implicit-TLS port and completes the handshake; STARTTLS and plaintext modes start on a
    // plain socket and may be upgraded later.
    void run() override {
        ++ctx_.active;
        ctx_.gate->run(socket(), [this](AdmittedConnection& connection) {
            connection_ = &connection;
            serve(connection);
        });
        --ctx_.active;
    }

private:
    void log(const std::string& text) { connection_->log.line(text); }

    void send(Poco::Net::StreamSocket& socket, const std::string& bytes) { sendAll(socket, bytes); }

    // Appends replies to the pending output; verbose mode shows them (passwords redacted).
    void queue(const smtp::Output& output, std::string& pending) {
        for (const smtp::Reply& reply : output.replies) {
            pending += reply.wire();
            if (ctx_.verbose)
                for (size_t i = 0; i < reply.lines.size(); ++i) log("S: " + reply.line(i, true));  // passwords redacted
        }
    }

    // The client went away. In a message (DATA or BDAT), what had arrived is dropped: nothing
    // half-stored, nothing acknowledged.
    void lost(const smtp::Session& session, const std::string& reason) {
        bool inData = session.inMessage();
        log("event=disconnect reason=" + logValue(reason) + " state=" + smtp::Session::stateName(session.state()) +
            (inData ? " stored=no" : ""));
    }

    void onLogin(const std::string& account) {
        if (ctx_.classRecord.activity) ctx_.classRecord.activity->note(account, activity::kLogin, std::time(nullptr));
        provenance_.recordLogin(account, connection_->log);
    }

    void serve(AdmittedConnection& connection) {
        Poco::Net::StreamSocket& socket = connection.socket;
        const std::string& tls = connection.tls;
        if (connection.secure) provenance_.noteSession(socket, connection.client.address);
        smtp::SessionEnv env;
        env.tlsMode = ctx_.tlsMode;
        env.allowPlaintextAuth = ctx_.allowPlaintextAuth;
        env.hostname = ctx_.hostname;
        env.peerAddress = connection.client.host;
        env.tlsDescription = tls.substr(0, tls.find(" group="));
        if (auto group = tls.find(" group="); group != std::string::npos) env.tlsGroup = tls.substr(group + 7);
        env.dataBudget = ctx_.dataBudget.get();
        env.rates = ctx_.rates.get();
        env.freeDiskBytes = [gauge = ctx_.freeSpace] { return gauge->bytes(); };
        env.onLogin = [this](const std::string& account) { onLogin(account); };
        if (ActivityRecorder* recorder = ctx_.classRecord.activity.get()) {
            env.onLoginFailed = [recorder](const std::string& account, bool knownSource) {
                recorder->note(account, activity::loginFailedKind(knownSource), std::time(nullptr));
            };
            LabTokens* tokens = ctx_.classRecord.tokens.get();
            env.onQueued = [recorder, tokens](const std::string& account, const std::string& subject) {
                int64_t now = std::time(nullptr);
                recorder->note(account, activity::kSent, now);
                if (tokens && tokens->isLabMessage(account, subject)) recorder->note(account, activity::kLabMessage, now);
            };
        }
        // State transitions are the per-command detail: shown with --verbose, beside the C:/S: lines.
        env.log = [this](const std::string& line) {
            if (ctx_.verbose || line.rfind("event=state", 0) != 0) log(line);
        };
        if (ctx_.verbose) env.trace = [this](const std::string& line) { log(line); };
        smtp::Session session(*ctx_.auth, *ctx_.store, ctx_.limits, env);

        std::string pending;
        queue(session.start(), pending);
        send(socket, pending);
        pending.clear();

        char buffer[16384];
        bool closing = false;
        // RFC 5321 4.5.3.2: a command must arrive whole within sender.timeout.command of the previous
        // reply (bytes that do not finish a line do not restart the clock); while message octets
        // arrive (DATA, a BDAT chunk) each block must come within sender.timeout.data, and the whole
        // message, all its chunks, within sender.timeout.dataTotal.
        using Clock = std::chrono::steady_clock;
        auto micro = [](const Poco::Timespan& t) { return std::chrono::microseconds(t.totalMicroseconds()); };
        Clock::time_point commandDeadline = Clock::now() + micro(ctx_.commandTimeout), dataDeadline{};
        bool inMessage = false;
        while (!closing) {
            Clock::time_point now = Clock::now();
            bool nowInMessage = session.inMessage();
            if (nowInMessage && !inMessage) dataDeadline = now + micro(ctx_.dataTotalTimeout);
            inMessage = nowInMessage;
            Clock::time_point until = session.receivingMessage() ? std::min(now + micro(ctx_.dataTimeout), dataDeadline)
                                      : inMessage                 ? std::min(commandDeadline, dataDeadline)
                                                                  : commandDeadline;
            AdmittedConnection::Wait wait = connection.waitForClient(until, ctx_.stopPipe[0]);
            if (wait != AdmittedConnection::Wait::Readable) {
                queue(wait == AdmittedConnection::Wait::Stopping ? session.onShutdown() : session.onTimeout(), pending);
                send(socket, pending);
                return;
            }
            int n = 0;
            try {
                n = socket.receiveBytes(buffer, sizeof buffer);
            } catch (const Poco::TimeoutException&) {
                queue(session.onTimeout(), pending);
                send(socket, pending);
                return;
            } catch (const Poco::Exception& e) {
                lost(session, e.displayText());  // reset, or TCP closed without close_notify
                return;
            }
            if (n <= 0) {
                lost(session, connection.slot.evicted() ? "evicted" : "eof");
                return;
            }
            // The session frames the bytes itself (lines, DATA, BDAT chunks, the STARTTLS discard).
            // RFC 2920: every input that has arrived is answered, then the replies go out in one write.
            smtp::Output output = session.onBytes(buffer, static_cast<size_t>(n));
            queue(output, pending);
            if (output.inputs) commandDeadline = Clock::now() + micro(ctx_.commandTimeout);
            closing = output.close;
            if (!pending.empty()) {
                send(socket, pending);
                pending.clear();
            }
            if (output.startTls) {
                // RFC 3207 5 / CVE-2011-0411: what was pipelined after STARTTLS arrived in clear and
                // was never run; the session dropped it.
                if (output.discardedOctets)
                    log("event=starttls-discarded-plaintext octets=" + std::to_string(output.discardedOctets));
                connection.startTls(ctx_.tlsContext);
                connection.log.event("tls", "starttls=yes " + tls);
                provenance_.noteSession(socket, connection.client.address);
                auto group = tls.find(" group=");
                session.onTlsStarted(tls.substr(0, group), group == std::string::npos ? "" : tls.substr(group + 7));
                commandDeadline = Clock::now() + micro(ctx_.commandTimeout);
            }
        }
    }

    SenderContext& ctx_;
    AdmittedConnection* connection_ = nullptr;  // the socket, its client, its place and its log, once admitted
    TlsProvenance provenance_;  // the TLS session a login is recorded with (class servers)
};

class SmtpConnectionFactory : public Poco::Net::TCPServerConnectionFactory {
public:
    explicit SmtpConnectionFactory(SenderContext& context) : ctx_(context) {}
    Poco::Net::TCPServerConnection* createConnection(const Poco::Net::StreamSocket& socket) override {
        return new SmtpConnection(socket, ctx_);
    }

private:
    SenderContext& ctx_;
};

// sender.core = events: the listeners on the event-loop core (event_server.h), with the same sessions,
// limits, deadlines and words as the thread core.
std::unique_ptr<sender_events::EventServer> startEventServer(SenderContext& ctx, const GateSettings& gate,
                                                             const Poco::Util::AbstractConfiguration& cfg, Poco::Logger& logger,
                                                             bool remoteStore,
                                                             const std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners) {
    using std::chrono::milliseconds;
    auto ms = [](const Poco::Timespan& t) { return milliseconds(t.totalMilliseconds()); };
    sender_events::Settings s;
    s.auth = ctx.auth.get();
    s.store = ctx.store.get();
    s.limits = ctx.limits;
    s.env.tlsMode = ctx.tlsMode;
    s.env.allowPlaintextAuth = ctx.allowPlaintextAuth;
    s.env.hostname = ctx.hostname;
    s.env.dataBudget = ctx.dataBudget.get();
    s.env.rates = ctx.rates.get();
    s.env.freeDiskBytes = [gauge = ctx.freeSpace] { return gauge->bytes(); };
    if (ActivityRecorder* recorder = ctx.classRecord.activity.get()) {
        s.onLogin = [recorder](const std::string& account) { recorder->note(account, activity::kLogin, std::time(nullptr)); };
        s.env.onLoginFailed = [recorder](const std::string& account, bool knownSource) {
            recorder->note(account, activity::loginFailedKind(knownSource), std::time(nullptr));
        };
        LabTokens* tokens = ctx.classRecord.tokens.get();
        s.env.onQueued = [recorder, tokens](const std::string& account, const std::string& subject) {
            int64_t now = std::time(nullptr);
            recorder->note(account, activity::kSent, now);
            if (tokens && tokens->isLabMessage(account, subject)) recorder->note(account, activity::kLabMessage, now);
        };
    }
    s.provenance = ctx.classRecord.provenance;
    s.logger = &logger;
    s.verbose = ctx.verbose;
    s.implicitTls = ctx.tlsMode == smtp::TlsMode::Implicit;
    s.tls = ctx.tlsMode == smtp::TlsMode::Off ? nullptr : ctx.tlsContext->sslContext();
    s.limiter = ctx.limiter.get();
    s.nextConnectionId = &ctx.nextId;
    s.words = smtp::guardedProtocol(ctx.hostname, cfg.getInt("sender.timeout.plaintextHintMs"));
    s.handshakeTimeout = ms(gate.handshakeTimeout);
    s.refusalTimeout = ms(gate.refusalTimeout);
    s.commandTimeout = ms(ctx.commandTimeout);
    s.dataTimeout = ms(ctx.dataTimeout);
    s.dataTotalTimeout = ms(ctx.dataTotalTimeout);
    s.sendTimeout = ms(gate.sendTimeout);
    s.closeLingerMs = gate.closeLingerMs;
    s.maxRefusalHandshakes = gate.maxRefusalHandshakes;
    s.proxy = gate.proxy;
    s.threads = cfg.getInt("sender.events.threads");
    s.workers = cfg.getInt("sender.events.workers");
    s.authWorkers = cfg.getInt("sender.events.authWorkers");
    s.maxQueuedJobs = static_cast<size_t>(std::max(1, cfg.getInt("sender.events.maxQueuedJobs")));
    s.workerWait = milliseconds(cfg.getInt64("auth.hashWaitMilliseconds"));
    s.everyInputOnWorkers = remoteStore;
    s.commitFromLoop = cfg.getBool("sender.events.commitFromLoop");
    std::vector<int> fds;
    for (const auto& listener : listeners) fds.push_back(static_cast<int>(listener->impl()->sockfd()));
    auto server = std::make_unique<sender_events::EventServer>(std::move(s));
    server->start(fds);
    return server;
}

class SenderServer : public LabServer {
public:
    SenderServer()
        : LabServer({"sender", "implicit (default, RFC 8314), starttls (RFC 3207) or off (plaintext, loopback only)",
                     "The maillab SMTP submission server over implicit TLS 1.3.", "sender/senderserver.properties",
                     kSenderServerProperties, kSharedProperties}) {}

protected:
    void defineOptions(OptionSet& options) override {
        LabServer::defineOptions(options);
        Option hostname("hostname", "", "our name in the banner and Received header");
        hostname.required(false).repeatable(false).argument("NAME").binding("sender.hostname");
        options.addOption(hostname);
    }

    int serve() override {
        auto& cfg = config();
        Poco::Logger& logger = Application::logger();
        long files = raiseOpenFileLimit();

        SenderContext ctx;
        if (::pipe(ctx.stopPipe) != 0) {
            logger.error("event=startup-failed reason=\"cannot create the stop pipe\"");
            return EXIT_OSERR;
        }
        ctx.verbose = cfg.getBool("sender.verbose");
        ctx.hostname = cfg.getString("sender.hostname");
        if (ctx.hostname.empty()) ctx.hostname = Poco::Net::DNS::hostName();
        ctx.maxConnections = cfg.getInt("sender.maxConnections");
        ctx.limiter = connectionLimiterFrom(cfg, "sender");
        GateSettings gate = gateSettingsFrom(cfg, "sender");
        gate.sendTimeout = Poco::Timespan(cfg.getInt("sender.timeout.send"), 0);
        gate.closeLingerMs = cfg.getInt("sender.timeout.closeLingerMs");
        ctx.dataTotalTimeout = Poco::Timespan(cfg.getInt("sender.timeout.dataTotal"), 0);
        ctx.commandTimeout = Poco::Timespan(cfg.getInt("sender.timeout.command"), 0);
        ctx.dataTimeout = Poco::Timespan(cfg.getInt("sender.timeout.data"), 0);
        ctx.limits.maxLineLength = cfg.getUInt64("smtp.maxLineLength");
        ctx.limits.maxMessageSize = cfg.getUInt64("smtp.maxMessageSize");
        ctx.limits.maxRecipients = cfg.getUInt64("smtp.maxRecipients");
        ctx.limits.maxAuthFailures = cfg.getInt("smtp.maxAuthFailures");
        ctx.limits.maxErrors = cfg.getInt("smtp.maxErrors");
        ctx.dataBudget = std::make_unique<smtp::DataBudget>(cfg.getUInt64("smtp.maxDataInFlight"));
        ctx.limits.mailboxQuotaBytes = cfg.getInt64("smtp.mailboxQuotaBytes");
        ctx.limits.maxStoryBytes = cfg.getUInt64("smtp.maxStoryBytes");
        ctx.limits.minFreeDiskBytes = cfg.getInt64("smtp.minFreeDiskBytes");
        smtp::SubmissionRates::Limits rates;
        rates.messagesPerHour = cfg.getInt64("smtp.messagesPerHour");
        rates.recipientsPerHour = cfg.getInt64("smtp.recipientsPerHour");
        rates.bytesPerHour = cfg.getInt64("smtp.bytesPerHour");
        if (rates.messagesPerHour > 0 || rates.recipientsPerHour > 0 || rates.bytesPerHour > 0)
            ctx.rates = std::make_unique<smtp::SubmissionRates>(rates);

        AuthPolicy policy = authPolicyFrom(cfg, "sender.domain");
        StoreOptions storeOptions = storeOptionsFrom(cfg);
        // The free-space check watches the SQLite file's disk; a PostgreSQL server watches its own.
        std::string storePath = sqlitePathOf(storeOptions.url);
        size_t slash = storePath.rfind('/');
        ctx.freeSpace = std::make_shared<FreeSpaceGauge>(storePath.empty() ? "" : slash == std::string::npos ? "." : storePath.substr(0, slash + 1));
        TlsOptions tls = tlsOptionsFrom(cfg);
        int storeFailure = EXIT_SOFTWARE;
        ctx.store = openServerStore(tls, storeOptions, logger, storeFailure);
        if (!ctx.store) return storeFailure;
        ctx.auth = std::make_unique<Authenticator>(*ctx.store, policy);
        ctx.auth->ensurePostmaster();
        if (!openClassRecord(cfg, *ctx.store, *ctx.auth, logger, ctx.classRecord)) return EXIT_CONFIG;

        std::string mode = cfg.getString("sender.tls");
        if (auto parsed = smtp::parseTlsMode(mode)) {
            ctx.tlsMode = *parsed;
        } else {
            logger.error("event=startup-failed reason=\"--tls must be implicit, starttls or off\"");
            return EXIT_USAGE;
        }
        ctx.allowPlaintextAuth = cfg.getBool("sender.allowPlaintextAuth");
        try {
            gate.proxy = proxySettingsFrom(cfg);
        } catch (const std::exception& e) {
            logger.error("event=startup-failed reason=" + logValue(e.what()));
            return EXIT_CONFIG;
        }
        try {
            ctx.tlsContext = serverTlsContext(tls, "smtp", logger);
            // A client that pipelines (RFC 2920) or streams DATA sends several records at once: read
            // them in one read() instead of a header and a body read each. waitForClient() asks
            // SSL_has_pending, so the records read ahead are never left waiting behind a poll().
            SSL_CTX_set_read_ahead(ctx.tlsContext->sslContext(), 1);
        } catch (const std::exception& e) {
            logger.error("event=startup-failed reason=" + logValue(std::string("TLS set-up: ") + e.what()));
            return EXIT_CONFIG;
        }
        std::string core = cfg.getString("sender.core");
        if (core != "threads" && core != "events") {
            logger.error("event=startup-failed reason=\"sender.core must be threads or events\"");
            return EXIT_CONFIG;
        }
        ctx.gate = std::make_unique<ConnectionGate>(
            gate, smtp::guardedProtocol(ctx.hostname, cfg.getInt("sender.timeout.plaintextHintMs")),
            ctx.tlsMode == smtp::TlsMode::Implicit, *ctx.limiter, ctx.watchdog, logger, ctx.nextId);
        std::string plaintext;
        if (ctx.tlsMode == smtp::TlsMode::Off)
            plaintext = "PLAINTEXT MODE: everything on this port, passwords included, crosses the wire unencrypted. "
                        "For comparison in the lab only." +
                        std::string(ctx.allowPlaintextAuth ? " AUTH in clear is allowed." : "");
        // Implicit TLS listens with TLS from the first byte; STARTTLS and plaintext listen in clear.
        auto listeners = openListeners(cfg.getString("sender.bind"), cfg.getInt("sender.port"),
                                       cfg.getInt("sender.listenBacklog"),
                                       ctx.tlsMode == smtp::TlsMode::Implicit ? ctx.tlsContext : nullptr, plaintext, logger);
        if (listeners.empty()) return EXIT_UNAVAILABLE;

        // Headroom over the limit so the connections past it are answered with 421 (or closed) rather
        // than queued behind it.
        int threads = ctx.maxConnections + gate.maxRefusalHandshakes + 8;
        Poco::ThreadPool pool(2, threads, 60, 256 * 1024);
        std::unique_ptr<sender_events::EventServer> events;
        if (core == "events")
            events = startEventServer(ctx, gate, cfg, logger, isPostgresUrl(storeOptions.url), listeners);
        // One TCPServer per listening address (127.0.0.1 and ::1), sharing the pool and the limits.
        std::vector<std::unique_ptr<Poco::Net::TCPServer>> servers;
        for (auto& listener : listeners) {
            if (events) break;
            Poco::Net::TCPServerParams::Ptr params = new Poco::Net::TCPServerParams;
            params->setMaxThreads(threads);
            params->setMaxQueued(cfg.getInt("sender.listenBacklog"));
            servers.push_back(std::make_unique<Poco::Net::TCPServer>(new SmtpConnectionFactory(ctx), pool, *listener, params));
            servers.back()->start();
        }

        int port = listeners.front()->address().port();
        logger.information("event=listening address=" + describeListeners(listeners) + " domain=" +
                           policy.labDomain + " db=" + logValue(describeStoreUrl(storeOptions.url)) + " tls=" + mode +
                           (mode == "off" ? "" : " tls-version=TLSv1.3-only") + " max-connections=" +
                           std::to_string(ctx.maxConnections) + " core=" + core +
                           (events ? " loops=" + std::to_string(events->threads()) : "") + " open-files=" + std::to_string(files));
        // The ready line: tests and scripts wait for it instead of sleeping.
        std::cout << "ready port=" << port << std::endl;

        waitForTerminationRequest();
        if (events) {
            events->dropUnstartedJobs();  // before the line: whoever reads "stopping" finds no job started after it
            logger.information("event=stopping active=" + std::to_string(events->sessions()));
            // Every session answers 421 and closes (RFC 5321 3.8); a message being stored gets its 250 first.
            events->stop(std::chrono::seconds(cfg.getInt("sender.shutdownGraceSeconds")));
            logger.information("event=stopped");
            return EXIT_OK;
        }
        logger.information("event=stopping active=" + std::to_string(ctx.active.load()));
        // Every waiting session answers 421 and closes (RFC 5321 3.8) instead of vanishing.
        if (::write(ctx.stopPipe[1], "x", 1) != 1) logger.warning("event=warning note=\"cannot signal the sessions\"");
        for (auto& server : servers) server->stop();
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg.getInt("sender.shutdownGraceSeconds"));
        while (ctx.active.load() > 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (ctx.active.load() > 0) {
            // Idle sessions would hold the pool's join forever. Every acknowledged message is already
            // committed, so leaving now loses nothing that was promised.
            logger.information("event=stopped forced=yes active=" + std::to_string(ctx.active.load()));
            std::cout.flush();
            std::_Exit(EXIT_OK);
        }
        logger.information("event=stopped");
        return EXIT_OK;
    }
};

}  // namespace
}  // namespace maillab

POCO_SERVER_MAIN(maillab::SenderServer)
