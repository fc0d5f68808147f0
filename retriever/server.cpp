// retrieverserver: the lab's HTTPS server (HTTP/1.1 over TLS 1.3) answering GET requests for each
// user's stored mail. Each connection passes the connection gate (common/net/guarded_connection.h)
// and runs Poco's HTTPServerConnection; each request goes to the socket-free MailApi (mail_api.h). It also serves POP3 for mail clients (pop3_server.h): implicit TLS on its own
// port and, when asked, a plaintext port with STLS.
#include "event_server.h"
#include "http_guard.h"
#include "mail_api.h"
#include "pop3_event_server.h"
#include "pop3_server.h"

#include "../common/lab/app_support.h"
#include "../common/lab/auth.h"
#include "../common/net/guarded_connection.h"
#include "../common/lab/store.h"
#include "../common/lab/tls_provenance.h"
#include "../common/net/tls.h"

#include <Poco/Net/DNS.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServerConnection.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/TCPServer.h>
#include <Poco/Net/TCPServerConnectionFactory.h>
#include <Poco/String.h>
#include <Poco/ThreadPool.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <sstream>
#include <thread>
#include <iostream>

extern const char* const kRetrieverServerProperties;  // generated from retriever/retrieverserver.properties
extern const char* const kSharedProperties;  // generated from common/shared.properties

namespace maillab {
namespace {

struct RetrieverContext {
    std::unique_ptr<Store> store;
    ClassRecord classRecord;  // provenance, the board's activity (class servers); before api, which uses it
    std::unique_ptr<Authenticator> auth;
    std::unique_ptr<http::MailApi> api;
    bool verbose = false;
    bool overTls = true;
    std::unique_ptr<ConnectionLimiter> limiter;
    Watchdog watchdog;  // total deadlines: the handshake, each request head
    Poco::Timespan requestHeadTimeout, keepAliveTimeout;
    std::atomic<unsigned long> nextConnectionId{1};  // the log lines' connection ids, HTTPS and POP3 together
    std::unique_ptr<ConnectionGate> gate;  // PROXY header, limits (503), plain HTTP on the HTTPS port, the handshake
};

// What a request handler needs of the connection it runs on. Poco's HTTPServerConnection calls the
// handlers on the connection's own pool thread, so LimitedHttpConnection::serve() points this at its
// state for as long as it serves the connection.
struct ConnectionState {
    const ConnectionLog* log = nullptr;      // the connection's lines: "id=N ..."
    Watchdog::Guard* headDeadline = nullptr;  // armed before each request head, disarmed once parsed
    TlsProvenance* provenance = nullptr;     // the TLS session a login is recorded with (class servers)
    ConnectionLimiter::Slot* slot = nullptr;  // waiting while the client is to speak (limits: eviction)
    int fd = -1;
    proxy::Peer client;                      // the socket's peer, or the client a balancer named
};
thread_local ConnectionState* currentConnection = nullptr;

class MailRequestHandler : public Poco::Net::HTTPRequestHandler {
public:
    explicit MailRequestHandler(RetrieverContext& ctx) : ctx_(ctx) {}

    void handleRequest(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response) override {
        ConnectionState& connection = *currentConnection;
        const ConnectionLog& log = *connection.log;
        auto& socket = static_cast<Poco::Net::HTTPServerRequestImpl&>(request).socket();
        if (ctx_.verbose) {
            log.line("C: " + escapeControl(request.getMethod() + " " + request.getURI() + " " + request.getVersion()));
            for (const auto& [name, value] : request)
                log.line("C: " + escapeControl(name) + ": " +
                         (Poco::icompare(name, "Authorization") == 0 ? "<redacted>" : escapeControl(value)));
        }
        http::ApiRequest apiRequest;
        apiRequest.method = request.getMethod();
        apiRequest.target = request.getURI();
        apiRequest.overTls = ctx_.overTls;
        apiRequest.peer = connection.client.host;
        apiRequest.version = request.getVersion();
        for (const auto& header : request) apiRequest.headers.emplace_back(header.first, header.second);
        http::ApiResponse result = ctx_.api->handle(apiRequest);
        connection.provenance->recordLogin(result.user, log);

        response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(result.status));
        // RFC 9110 6.2: the status line carries our own version, never the one a request claimed
        // (Poco copies the request's; HTTP/1.0 clients keep theirs, which Poco's keep-alive reads).
        if (request.getVersion() != Poco::Net::HTTPMessage::HTTP_1_0) response.setVersion(Poco::Net::HTTPMessage::HTTP_1_1);
        for (const auto& [name, value] : result.headers) response.set(name, value);
        if (result.closeConnection) response.setKeepAlive(false);
        // Every response with content has a Content-Length, so Wireshark (and keep-alive) can find its
        // end; a 304 has none (RFC 9110 8.6: it could only be the 200's length) and ends at its head.
        if (result.status != 304) response.setContentLength(static_cast<std::streamsize>(result.body.size()));
        // A line per failure or refusal (4xx, 5xx) always; per successful request only with --verbose:
        // at tens of thousands of GETs a second the line cost a tenth of each request (issue 22).
        // Written before the answer leaves, so a client holding the answer finds its line.
        if (ctx_.verbose || result.status >= 400)
            log.peerEvent("request", "method=" + logValue(request.getMethod()) + " path=" +
                                         logValue(request.getURI().substr(0, 200)) + " status=" + std::to_string(result.status) +
                                         " bytes=" + std::to_string(result.body.size()) +
                                         (result.user.empty() ? "" : " user=" + result.user) +
                                         // A refused login names the account tried, quoted: the client chose it.
                                         (result.triedUser.empty() ? "" : " tried=" + quotedLogValue(result.triedUser.substr(0, 200))));
        if (ctx_.verbose) {
            log.line("S: HTTP/1.1 " + std::to_string(result.status) + " " + response.getReason());
            for (const auto& [name, value] : response) log.line("S: " + name + ": " + value);
        }
        // Headers and body leave in one write: one TLS record and one segment where Poco's
        // sendBuffer() makes two. (Poco's connection loop needs only getKeepAlive() afterwards.)
        std::ostringstream head;
        response.write(head);
        std::string wire = head.str();
        bool withBody = result.status != 304 && request.getMethod() != "HEAD";  // HEAD: GET's length, no body
        if (withBody && result.body.size() > 65536) {
            sendAll(socket, wire);  // a large body is not copied behind its headers
            sendAll(socket, result.body);
        } else {
            if (withBody) wire += result.body;
            sendAll(socket, wire);
        }
        // The next request head, if the connection stays: the keep-alive wait, then the head itself.
        if (connection.slot && !result.closeConnection) connection.slot->waiting(connection.fd);
        if (connection.headDeadline && !result.closeConnection)
            *connection.headDeadline = ctx_.watchdog.arm(connection.fd, ctx_.keepAliveTimeout + ctx_.requestHeadTimeout);
    }

private:
    RetrieverContext& ctx_;
};

class MailRequestHandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
public:
    explicit MailRequestHandlerFactory(RetrieverContext& ctx) : ctx_(ctx) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
        if (currentConnection && currentConnection->headDeadline)
            currentConnection->headDeadline->disarm();  // the head is in: no deadline while we answer
        if (currentConnection && currentConnection->slot) currentConnection->slot->working();
        return new MailRequestHandler(ctx_);
    }

    // Every connection's loop ends after its current request; idle keep-alive ones close at once.
    void stopConnections() { serverStopped(this, true); }

private:
    RetrieverContext& ctx_;
};

// One connection: the gate (common/net/guarded_connection.h) admits it or refuses with 503, answers
// plain HTTP on the HTTPS port and completes the handshake; then Poco's HTTP/1.1 connection loop,
// with a total deadline on each request head.
class LimitedHttpConnection : public Poco::Net::TCPServerConnection {
public:
    LimitedHttpConnection(const Poco::Net::StreamSocket& socket, RetrieverContext& ctx,
                          Poco::Net::HTTPServerParams::Ptr params, Poco::Net::HTTPRequestHandlerFactory::Ptr factory)
        : TCPServerConnection(socket), ctx_(ctx), params_(params), factory_(factory) {}

    void run() override {
        ctx_.gate->run(socket(), [this](AdmittedConnection& admitted) { serve(admitted); });
    }

private:
    void serve(AdmittedConnection& admitted) {
        // Poco's HTTPServerSession closes the socket when its loop ends, before this connection's
        // place and deadline go: they hold a duplicate of the descriptor instead, closed last, so a
        // newcomer cannot be given the number they would shut down (an eviction, a late deadline).
        struct KeptDescriptor {
            ConnectionLimiter::Slot& slot;
            int fd;
            ~KeptDescriptor() {
                slot.working();
                if (fd >= 0) ::close(fd);
            }
        } kept{admitted.slot, ::fcntl(admitted.fd, F_DUPFD_CLOEXEC, 0)};
        ConnectionState connection;
        connection.log = &admitted.log;
        connection.slot = &admitted.slot;
        connection.fd = kept.fd >= 0 ? kept.fd : admitted.fd;
        connection.client = admitted.client;
        TlsProvenance provenance(ctx_.classRecord.provenance ? ctx_.store.get() : nullptr, "http");
        if (admitted.secure) provenance.noteSession(admitted.socket, admitted.client.address);
        connection.provenance = &provenance;
        Watchdog::Guard deadline = ctx_.watchdog.arm(connection.fd, ctx_.requestHeadTimeout);
        connection.headDeadline = &deadline;
        currentConnection = &connection;
        std::string ended;
        try {
            Poco::Net::HTTPServerConnection(admitted.socket, params_, factory_).run();
        } catch (const std::exception& e) {
            ended = e.what();  // the peer went away mid-request, or the deadline shut the socket
        }
        currentConnection = nullptr;
        if (admitted.slot.evicted()) return;  // the gate says so
        if (deadline.expired())
            admitted.log.peerEvent("disconnect", "reason=request-head-timeout");
        else if (!ended.empty())
            admitted.log.peerEvent("disconnect", "reason=" + logValue(ended));
    }

    RetrieverContext& ctx_;
    Poco::Net::HTTPServerParams::Ptr params_;
    Poco::Net::HTTPRequestHandlerFactory::Ptr factory_;
};

class LimitedHttpConnectionFactory : public Poco::Net::TCPServerConnectionFactory {
public:
    LimitedHttpConnectionFactory(RetrieverContext& ctx, Poco::Net::HTTPServerParams::Ptr params,
                                 Poco::Net::HTTPRequestHandlerFactory::Ptr factory)
        : ctx_(ctx), params_(params), factory_(factory) {}
    Poco::Net::TCPServerConnection* createConnection(const Poco::Net::StreamSocket& socket) override {
        return new LimitedHttpConnection(socket, ctx_, params_, factory_);
    }

private:
    RetrieverContext& ctx_;
    Poco::Net::HTTPServerParams::Ptr params_;
    Poco::Net::HTTPRequestHandlerFactory::Ptr factory_;
};

// retriever.events.workers, 0: automatic. With every request on a worker (a remote store), as many as
// the store has connections (store.maxConnections): the thread core runs that many queries at once too.
int eventWorkers(const Poco::Util::AbstractConfiguration& cfg, bool remoteStore) {
    int workers = cfg.getInt("retriever.events.workers");
    if (workers > 0) return workers;
    return remoteStore ? std::max(1, cfg.getInt("store.maxConnections")) : 2;
}

// retriever.core = events: the HTTPS port on the event-loop core (event_server.h), with the same
// context, limits and deadlines as the thread core below.
std::unique_ptr<retriever_events::EventServer> startEventServer(RetrieverContext& ctx, const GateSettings& gate, Poco::Logger& logger,
                                                                 const Poco::Util::AbstractConfiguration& cfg,
                                                                 Poco::Net::Context::Ptr tlsContext, bool remoteStore,
                                                                 const std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners) {
    using std::chrono::milliseconds;
    retriever_events::Settings s;
    s.api = ctx.api.get();
    s.store = ctx.store.get();
    s.provenance = ctx.classRecord.provenance;
    s.logger = &logger;
    s.verbose = ctx.verbose;
    s.overTls = ctx.overTls;
    s.tls = tlsContext ? tlsContext->sslContext() : nullptr;
    s.limiter = ctx.limiter.get();
    s.nextConnectionId = &ctx.nextConnectionId;
    s.handshakeTimeout = milliseconds(gate.handshakeTimeout.totalMilliseconds());
    s.requestHeadTimeout = milliseconds(ctx.requestHeadTimeout.totalMilliseconds());
    s.firstRequestWait = milliseconds(cfg.getInt("retriever.timeoutSeconds") * 1000L);
    s.keepAliveTimeout = milliseconds(ctx.keepAliveTimeout.totalMilliseconds());
    s.refusalTimeout = milliseconds(gate.refusalTimeout.totalMilliseconds());
    s.maxRefusalHandshakes = gate.maxRefusalHandshakes;
    s.maxKeepAliveRequests = cfg.getInt("retriever.maxKeepAliveRequests");
    s.proxy = gate.proxy;
    s.threads = cfg.getInt("retriever.events.threads");
    s.workers = eventWorkers(cfg, remoteStore);
    s.answerWorkers = cfg.getInt("retriever.events.answerWorkers");
    if (s.answerWorkers <= 0) s.answerWorkers = std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
    s.plainHttpAnswer = &http::plainHttpAnswer;
    s.refusal = http::guardedProtocol().refusal;
    s.maxQueuedRequests = static_cast<size_t>(cfg.getInt64("retriever.events.maxQueuedRequests"));
    s.workerWait = milliseconds(cfg.getInt64("auth.hashWaitMilliseconds"));
    s.maxPendingBytes = static_cast<size_t>(cfg.getInt64("retriever.events.maxPendingBytes"));
    // A store across the network (PostgreSQL) may be slow at every query: then every request goes to
    // a worker. Else MailApi answers on the loop whatever needs no waiting (ApiRequest::mayWait).
    s.workersOnly = remoteStore;
    std::vector<int> fds;
    for (const auto& listener : listeners) fds.push_back(static_cast<int>(listener->impl()->sockfd()));
    auto server = std::make_unique<retriever_events::EventServer>(std::move(s));
    server->start(fds);
    return server;
}

// A POP3 port setting: a number (0: a free one), or "off" (-1). With the HTTPS port 0 (tests,
// scripts), a POP3 port that is on is picked free too, so that parallel servers never collide.
bool pop3PortSetting(const Poco::Util::AbstractConfiguration& cfg, const std::string& key, bool allFree, int& port) {
    std::string value = cfg.getString(key);
    if (value == "off") {
        port = -1;
        return true;
    }
    if (value.empty() || value.size() > 5 || value.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(value) > 65535)
        return false;
    port = allFree ? 0 : std::stoi(value);
    return true;
}

class RetrieverServer : public LabServer {
public:
    RetrieverServer()
        : LabServer({"retriever", "implicit (HTTPS, default) or off (plain HTTP, loopback only)",
                     "The maillab retriever: each user's stored mail over HTTPS (HTTP/1.1 on TLS 1.3) and "
                     "POP3 for mail clients. Resources: docs/retriever.md; mail clients: docs/mail-clients.md.",
                     "retriever/retrieverserver.properties", kRetrieverServerProperties, kSharedProperties}) {}

protected:
    void defineOptions(Poco::Util::OptionSet& options) override {
        LabServer::defineOptions(options);
        auto add = [&](const char* name, const char* description, const char* argument, const char* property) {
            Poco::Util::Option option(name, "", description);
            option.required(false).repeatable(false).argument(argument).binding(property);
            options.addOption(option);
        };
        add("pop3-port", "POP3 over TLS (POP3S) port, or off (default 9995; 0 = any free port)", "PORT", "pop3.port");
        add("pop3-plain-port", "plaintext POP3 port where STLS comes first, or off (the default)", "PORT",
            "pop3.plainPort");
        add("hostname", "our name in the POP3 greeting and the mail-client autoconfig document", "NAME",
            "retriever.hostname");
    }

    int serve() override {
        auto& cfg = config();
        Poco::Logger& logger = Application::logger();
        long files = raiseOpenFileLimit();
        RetrieverContext ctx;
        ctx.verbose = cfg.getBool("retriever.verbose");
        int maxConnections = cfg.getInt("retriever.maxConnections");
        ctx.limiter = connectionLimiterFrom(cfg, "retriever");
        // HTTPS and POP3 share the limits and deadlines; each has its own gate (its words, its refusals).
        GateSettings gate = gateSettingsFrom(cfg, "retriever");
        gate.sendTimeout = Poco::Timespan(cfg.getInt("retriever.timeoutSeconds"), 0);
        ctx.requestHeadTimeout = Poco::Timespan(cfg.getInt("retriever.timeout.requestHead"), 0);
        ctx.keepAliveTimeout = Poco::Timespan(cfg.getInt("retriever.keepAliveSeconds"), 0);

        TlsOptions tls = tlsOptionsFrom(cfg);
        StoreOptions storeOptions = storeOptionsFrom(cfg);
        int storeFailure = EXIT_SOFTWARE;
        ctx.store = openServerStore(tls, storeOptions, logger, storeFailure);
        if (!ctx.store) return storeFailure;
        ctx.auth = std::make_unique<Authenticator>(*ctx.store, authPolicyFrom(cfg, "retriever.domain"));
        ctx.auth->ensurePostmaster();
        if (!openClassRecord(cfg, *ctx.store, *ctx.auth, logger, ctx.classRecord)) return EXIT_CONFIG;
        http::ApiLimits limits;
        limits.maxUriLength = cfg.getUInt64("http.maxUriLength");
        limits.maxHeaderBytes = cfg.getUInt64("http.maxHeaderBytes");
        limits.defaultPageSize = cfg.getInt64("http.defaultPageSize");
        limits.maxPageSize = cfg.getInt64("http.maxPageSize");
        limits.listingCacheBytes = cfg.getUInt64("http.listingCacheBytes");
        limits.maxResponseBytesInFlight = cfg.getUInt64("http.maxResponseBytesInFlight");
        limits.plaintextAuthAllowed = cfg.getBool("retriever.allowPlaintextAuth");
        limits.mime.maxParts = cfg.getUInt64("mime.maxParts");
        limits.mime.maxDepth = cfg.getUInt64("mime.maxDepth");
        std::string mode = cfg.getString("retriever.tls");
        if (mode != "implicit" && mode != "off") {
            logger.error("event=startup-failed reason=\"--tls must be implicit or off\"");
            return EXIT_USAGE;
        }
        ctx.overTls = mode == "implicit";
        std::string core = cfg.getString("retriever.core");
        if (core != "threads" && core != "events") {
            logger.error("event=startup-failed reason=\"retriever.core must be threads or events\"");
            return EXIT_USAGE;
        }
        std::string pop3Core = cfg.getString("pop3.core");
        if (pop3Core != "threads" && pop3Core != "events") {
            logger.error("event=startup-failed reason=\"pop3.core must be threads or events\"");
            return EXIT_USAGE;
        }
        try {
            gate.proxy = proxySettingsFrom(cfg);
        } catch (const std::exception& e) {
            logger.error("event=startup-failed reason=" + logValue(e.what()));
            return EXIT_CONFIG;
        }
        http::ClassView classView;
        classView.activity = ctx.classRecord.activity.get();
        classView.roster = ctx.classRecord.roster;
        classView.stuckSeconds = ctx.classRecord.stuckSeconds;
        ctx.api = std::make_unique<http::MailApi>(*ctx.store, *ctx.auth, limits, nullptr, classView);
        int pop3Port = -1, pop3PlainPort = -1;
        bool allFree = cfg.getInt("retriever.port") == 0;
        if (!pop3PortSetting(cfg, "pop3.port", allFree, pop3Port) ||
            !pop3PortSetting(cfg, "pop3.plainPort", allFree, pop3PlainPort)) {
            logger.error("event=startup-failed reason=\"pop3.port and pop3.plainPort must be a port number or off\"");
            return EXIT_USAGE;
        }
        std::string hostname = cfg.getString("retriever.hostname");

        std::string plaintext;
        if (!ctx.overTls)
            plaintext = "PLAIN HTTP MODE: requests, answers and passwords cross the wire unencrypted. "
                        "For comparison in the lab only." +
                        std::string(limits.plaintextAuthAllowed ? " Passwords in clear are accepted." : "");
        Poco::Net::Context::Ptr tlsContext;
        try {
            if (ctx.overTls) tlsContext = serverTlsContext(tls, "http/1.1", logger);
        } catch (const std::exception& e) {
            logger.error("event=startup-failed reason=" + logValue(std::string("TLS set-up: ") + e.what()));
            return EXIT_CONFIG;
        }
        auto listeners = openListeners(cfg.getString("retriever.bind"), cfg.getInt("retriever.port"),
                                       cfg.getInt("retriever.listenBacklog"), tlsContext, plaintext, logger);
        if (listeners.empty()) return EXIT_UNAVAILABLE;

        // POP3: implicit TLS on its own port (RFC 8314), and a plaintext port where STLS comes
        // before any credentials (RFC 2595). Both take their TLS from one context offering "pop3".
        Poco::Net::Context::Ptr pop3Tls;
        std::vector<std::unique_ptr<Poco::Net::ServerSocket>> pop3Listeners, pop3PlainListeners;
        if (pop3Port >= 0 || pop3PlainPort >= 0) {
            try {
                pop3Tls = serverTlsContext(tls, "pop3", logger);
            } catch (const std::exception& e) {
                logger.error("event=startup-failed reason=" + logValue(std::string("TLS set-up: ") + e.what()));
                return EXIT_CONFIG;
            }
        }
        if (pop3Port >= 0) {
            pop3Listeners = openListeners(cfg.getString("retriever.bind"), pop3Port, cfg.getInt("retriever.listenBacklog"),
                                          pop3Tls, "", logger);
            if (pop3Listeners.empty()) return EXIT_UNAVAILABLE;
        }
        if (pop3PlainPort >= 0) {
            pop3PlainListeners = openListeners(cfg.getString("retriever.bind"), pop3PlainPort,
                                               cfg.getInt("retriever.listenBacklog"), nullptr, "", logger);
            if (pop3PlainListeners.empty()) return EXIT_UNAVAILABLE;
        }
        int pop3Bound = pop3Listeners.empty() ? 0 : pop3Listeners.front()->address().port();
        int pop3PlainBound = pop3PlainListeners.empty() ? 0 : pop3PlainListeners.front()->address().port();
        autoconfig::Settings mailClients;
        mailClients.hostname = hostname;
        mailClients.domain = ctx.auth->policy().labDomain;
        mailClients.smtpPort = cfg.getInt("autoconfig.smtpPort");
        mailClients.pop3Port = pop3Bound;
        mailClients.pop3PlainPort = pop3PlainBound;
        ctx.api->setAutoconfig(mailClients);
        Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
        int threads = maxConnections + gate.maxRefusalHandshakes + 8;  // headroom: those past the limit get a 503
        params->setMaxThreads(threads);
        params->setMaxQueued(cfg.getInt("retriever.listenBacklog"));
        params->setKeepAlive(true);
        params->setKeepAliveTimeout(Poco::Timespan(cfg.getInt("retriever.keepAliveSeconds"), 0));
        params->setMaxKeepAliveRequests(cfg.getInt("retriever.maxKeepAliveRequests"));
        params->setTimeout(Poco::Timespan(cfg.getInt("retriever.timeoutSeconds"), 0));
        params->setServerName("localhost");
        params->setSoftwareVersion("maillab-retriever");
        // POP3 connections share the pool and the limits; their refusals have handshakes of their own.
        Poco::ThreadPool pool(2, threads + gate.maxRefusalHandshakes, 60, 256 * 1024);
        // One TCPServer per listening address (127.0.0.1 and ::1), sharing the pool, the limits and
        // the handler factory; each connection runs Poco's HTTPServerConnection behind our limits.
        ctx.gate = std::make_unique<ConnectionGate>(gate, http::guardedProtocol(), ctx.overTls, *ctx.limiter, ctx.watchdog,
                                                    logger, ctx.nextConnectionId);
        auto* mailHandlers = new MailRequestHandlerFactory(ctx);
        Poco::Net::HTTPRequestHandlerFactory::Ptr handlers(mailHandlers);
        std::vector<std::unique_ptr<Poco::Net::TCPServer>> servers;
        std::unique_ptr<retriever_events::EventServer> events;
        if (core == "events")
            events = startEventServer(ctx, gate, logger, cfg, tlsContext, isPostgresUrl(storeOptions.url), listeners);
        for (auto& listener : listeners) {
            if (events) break;
            servers.push_back(std::make_unique<Poco::Net::TCPServer>(
                new LimitedHttpConnectionFactory(ctx, params, handlers), pool,
                *listener, params));
            servers.back()->start();
        }

        std::unique_ptr<pop3::Service> pop3Service;
        std::unique_ptr<pop3::EventService> pop3Events;
        if (!pop3Listeners.empty() || !pop3PlainListeners.empty()) {
            pop3::ServiceContext p;
            p.store = ctx.store.get();
            p.auth = ctx.auth.get();
            p.limiter = ctx.limiter.get();
            p.watchdog = &ctx.watchdog;
            p.logger = &logger;
            p.nextId = &ctx.nextConnectionId;
            p.activity = ctx.classRecord.activity.get();
            p.provenance = ctx.classRecord.provenance;
            p.tlsContext = pop3Tls;
            p.gate = gate;
            p.limits.maxLineLength = cfg.getUInt64("pop3.maxLineLength");
            p.limits.maxBadCommands = cfg.getInt("pop3.maxBadCommands");
            p.limits.maxAuthFailures = cfg.getInt("pop3.maxAuthFailures");
            p.limits.maxMessages = cfg.getUInt64("pop3.maxMessages");
            p.hostname = hostname.empty() ? Poco::Net::DNS::hostName() : hostname;
            p.implicitTlsPort = pop3Bound ? std::to_string(pop3Bound) : "";
            p.idleTimeout = Poco::Timespan(cfg.getInt("pop3.idleTimeoutSeconds"), 0);
            p.maxResponseBytesInFlight = cfg.getUInt64("pop3.maxResponseBytesInFlight");
            p.verbose = ctx.verbose;
            if (pop3Core == "events") {  // POP3 on the event core (pop3_event_server.h; the default: design.md)
                bool remote = isPostgresUrl(storeOptions.url);
                int workers = eventWorkers(cfg, remote);
                pop3::EventSettings e;
                e.threads = cfg.getInt("retriever.events.threads");
                e.workers = workers;
                e.authWorkers = std::max(1, cfg.getInt("pop3.events.authWorkers"));
                e.maxQueuedJobs = static_cast<size_t>(std::max(1, cfg.getInt("pop3.events.maxQueuedJobs")));
                e.workerWait = std::chrono::milliseconds(cfg.getInt64("auth.hashWaitMilliseconds"));
                e.everyInputOnWorkers = remote;
                e.shutdownGrace = std::chrono::seconds(cfg.getInt("retriever.timeoutSeconds"));
                std::vector<int> tlsFds, plainFds;
                for (const auto& l : pop3Listeners) tlsFds.push_back(static_cast<int>(l->impl()->sockfd()));
                for (const auto& l : pop3PlainListeners) plainFds.push_back(static_cast<int>(l->impl()->sockfd()));
                pop3Events = std::make_unique<pop3::EventService>(p, e);
                pop3Events->start(tlsFds, plainFds);
            } else {
                pop3Service = std::make_unique<pop3::Service>(p);
                pop3Service->serve(pop3Listeners, true, pool, threads, cfg.getInt("retriever.listenBacklog"));
                pop3Service->serve(pop3PlainListeners, false, pool, threads, cfg.getInt("retriever.listenBacklog"));
            }
        }

        logger.information("event=listening address=" + describeListeners(listeners) + " db=" + logValue(describeStoreUrl(storeOptions.url)) +
                           " tls=" + mode + " core=" + core +
                           (events ? " loops=" + std::to_string(events->threads()) + " workers=" + std::to_string(events->workers()) : "") + " open-files=" + std::to_string(files) +
                           (pop3Listeners.empty() ? "" : " pop3=" + logValue(describeListeners(pop3Listeners))) +
                           (pop3PlainListeners.empty() ? "" : " pop3-plain=" + logValue(describeListeners(pop3PlainListeners))));
        // The ready line: "ready port=N" first (scripts read that far), then the POP3 ports served.
        std::cout << "ready port=" << listeners.front()->address().port()
                  << (pop3Bound ? " pop3=" + std::to_string(pop3Bound) : "")
                  << (pop3PlainBound ? " pop3-plain=" + std::to_string(pop3PlainBound) : "") << std::endl;
        waitForTerminationRequest();
        logger.information("event=stopping");
        // Stop accepting, then end every connection's loop (idle keep-alive ones at once), so the pool
        // can be joined.
        for (auto& server : servers) server->stop();
        mailHandlers->stopConnections();
        if (events) events->stop();
        if (pop3Service) pop3Service->stop();  // every POP3 session says so and closes, deleting nothing
        if (pop3Events) pop3Events->stop();
        pool.joinAll();
        logger.information("event=stopped");
        return EXIT_OK;
    }
};

}  // namespace
}  // namespace maillab

POCO_SERVER_MAIN(maillab::RetrieverServer)
