// retrieverserver: the lab's HTTPS server (HTTP/1.1 over TLS 1.3) answering GET requests for each
// user's stored mail. Poco HTTPServer on a SecureServerSocket; each request goes to the socket-free
// MailApi (mail_api.h).
#include "mail_api.h"

#include "../common/app_support.h"
#include "../common/auth.h"
#include "../common/store.h"
#include "../common/tls.h"

#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerRequestImpl.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/ThreadPool.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <atomic>
#include <sstream>
#include <iostream>

extern const char* const kRetrieverServerProperties;  // generated from retrieverserver.properties

namespace maillab {
namespace {

struct RetrieverContext {
    std::unique_ptr<Store> store;
    std::unique_ptr<Authenticator> auth;
    std::unique_ptr<http::MailApi> api;
    Poco::Logger* logger = nullptr;
    bool verbose = false;
    bool overTls = true;
    int maxConnections = 0;
    std::vector<Poco::Net::HTTPServer*> servers;  // one per listening address
    int currentConnections() const {
        int n = 0;
        for (auto* server : servers) n += server->currentConnections();
        return n;
    }
    std::atomic<unsigned long> nextConnectionId{1};
};

// A pool thread serves one connection at a time, for all of its keep-alive requests: a new peer
// address on this thread is a new connection. That gives log lines a connection id although Poco's
// HTTPServer does not expose its connections.
unsigned long connectionId(RetrieverContext& ctx, Poco::Net::HTTPServerRequest& request) {
    thread_local std::string lastPeer;
    thread_local unsigned long lastId = 0;
    std::string key = request.clientAddress().toString();
    if (key != lastPeer || lastId == 0) {
        lastPeer = key;
        lastId = ctx.nextConnectionId++;
        // Poco writes a response's headers and body separately: without TCP_NODELAY the body could
        // wait for the client's delayed ACK of the headers (Nagle).
        static_cast<Poco::Net::HTTPServerRequestImpl&>(request).socket().setNoDelay(true);
    }
    return lastId;
}

class MailRequestHandler : public Poco::Net::HTTPRequestHandler {
public:
    explicit MailRequestHandler(RetrieverContext& ctx) : ctx_(ctx) {}

    void handleRequest(Poco::Net::HTTPServerRequest& request, Poco::Net::HTTPServerResponse& response) override {
        unsigned long id = connectionId(ctx_, request);
        std::string prefix = "id=" + std::to_string(id) + " ";
        if (ctx_.verbose) {
            ctx_.logger->information(prefix + "C: " + escapeControl(request.getMethod() + " " + request.getURI() + " " +
                                                                    request.getVersion()));
            for (const auto& [name, value] : request)
                ctx_.logger->information(prefix + "C: " + escapeControl(name) + ": " +
                                         (Poco::icompare(name, "Authorization") == 0 ? "<redacted>" : escapeControl(value)));
        }
        http::ApiResponse result;
        if (ctx_.currentConnections() > ctx_.maxConnections) {
            result.status = 503;
            result.body = "{\"error\":{\"status\":503,\"code\":\"service_unavailable\",\"message\":\"Too many connections; try again later\"}}";
            result.headers = {{"Content-Type", "application/json; charset=utf-8"}, {"Retry-After", "5"}};
            result.closeConnection = true;
        } else {
            http::ApiRequest apiRequest;
            apiRequest.method = request.getMethod();
            apiRequest.target = request.getURI();
            apiRequest.overTls = ctx_.overTls;
            apiRequest.peer = request.clientAddress().host().toString();
            apiRequest.version = request.getVersion();
            for (const auto& header : request) apiRequest.headers.emplace_back(header.first, header.second);
            result = ctx_.api->handle(apiRequest);
        }

        response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(result.status));
        for (const auto& [name, value] : result.headers) response.set(name, value);
        if (result.closeConnection) response.setKeepAlive(false);
        // Every response has a Content-Length, so Wireshark (and keep-alive) can find its end.
        response.setContentLength(static_cast<std::streamsize>(result.status == 304 ? 0 : result.body.size()));
        // Headers and body leave in one write: one TLS record and one segment where Poco's
        // sendBuffer() makes two. (Poco's connection loop needs only getKeepAlive() afterwards.)
        std::ostringstream head;
        response.write(head);
        std::string wire = head.str();
        if (result.status != 304 && request.getMethod() != "HEAD") wire += result.body;  // HEAD: GET's length, no body
        auto& socket = static_cast<Poco::Net::HTTPServerRequestImpl&>(request).socket();
        for (size_t sent = 0; sent < wire.size();) {
            int n = socket.sendBytes(wire.data() + sent, static_cast<int>(wire.size() - sent));
            if (n <= 0) throw Poco::Net::ConnectionResetException("send failed");
            sent += static_cast<size_t>(n);
        }

        ctx_.logger->information(prefix + "event=request peer=" + request.clientAddress().toString() + " method=" +
                                 logValue(request.getMethod()) + " path=" + logValue(request.getURI().substr(0, 200)) +
                                 " status=" + std::to_string(result.status) + " bytes=" + std::to_string(result.body.size()) +
                                 (result.user.empty() ? "" : " user=" + result.user));
        if (ctx_.verbose) {
            ctx_.logger->information(prefix + "S: HTTP/1.1 " + std::to_string(result.status) + " " + response.getReason());
            for (const auto& [name, value] : response) ctx_.logger->information(prefix + "S: " + name + ": " + value);
        }
    }

private:
    RetrieverContext& ctx_;
};

class MailRequestHandlerFactory : public Poco::Net::HTTPRequestHandlerFactory {
public:
    explicit MailRequestHandlerFactory(RetrieverContext& ctx) : ctx_(ctx) {}
    Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
        return new MailRequestHandler(ctx_);
    }

private:
    RetrieverContext& ctx_;
};

class RetrieverServer : public Poco::Util::ServerApplication {
protected:
    void initialize(Application& self) override {
        loadServerConfiguration(*this, kRetrieverServerProperties);
        ServerApplication::initialize(self);
    }

    void defineOptions(Poco::Util::OptionSet& options) override {
        ServerApplication::defineOptions(options);
        addServerOptions(options, "retriever", "implicit (HTTPS, default) or off (plain HTTP, loopback only)");
    }

    void handleOption(const std::string& name, const std::string& value) override {
        ServerApplication::handleOption(name, value);
        if (applyServerOption(config(), "retriever", name, value)) {
            printHelp(options(), commandName(),
                      "The maillab retriever: each user's stored mail over HTTPS (HTTP/1.1 on TLS 1.3).",
                      "Every setting and its default: retriever/retrieverserver.properties. Resources: docs/retriever.md.");
            stopOptionsProcessing();
            helpRequested_ = true;
        }
    }

    int main(const std::vector<std::string>&) override {
        if (helpRequested_) return EXIT_OK;
        return runServer(logger(), [this] { return serve(); });
    }

    int serve() {
        auto& cfg = config();
        Poco::Logger& logger = Application::logger();
        long files = raiseOpenFileLimit();
        RetrieverContext ctx;
        ctx.logger = &logger;
        ctx.verbose = cfg.getBool("retriever.verbose");
        ctx.maxConnections = cfg.getInt("retriever.maxConnections");

        TlsOptions tls = tlsOptionsFrom(cfg);
        SqliteOptions storeOptions = storeOptionsFrom(cfg);
        ctx.store = openServerStore(tls, storeOptions, logger);
        if (!ctx.store) return EXIT_SOFTWARE;
        ctx.auth = std::make_unique<Authenticator>(*ctx.store, authPolicyFrom(cfg, "retriever.domain"));
        ctx.auth->ensurePostmaster();
        http::ApiLimits limits;
        limits.maxUriLength = cfg.getUInt64("http.maxUriLength");
        limits.maxHeaderBytes = cfg.getUInt64("http.maxHeaderBytes");
        limits.defaultPageSize = cfg.getInt64("http.defaultPageSize");
        limits.maxPageSize = cfg.getInt64("http.maxPageSize");
        limits.plaintextAuthAllowed = cfg.getBool("retriever.allowPlaintextAuth");
        std::string mode = cfg.getString("retriever.tls");
        if (mode != "implicit" && mode != "off") {
            logger.error("event=startup-failed reason=\"--tls must be implicit or off\"");
            return EXIT_USAGE;
        }
        ctx.overTls = mode == "implicit";
        ctx.api = std::make_unique<http::MailApi>(*ctx.store, *ctx.auth, limits);

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
        Poco::Net::HTTPServerParams::Ptr params = new Poco::Net::HTTPServerParams;
        int threads = ctx.maxConnections + 8;  // headroom: the connection past the limit gets a 503
        params->setMaxThreads(threads);
        params->setMaxQueued(cfg.getInt("retriever.listenBacklog"));
        params->setKeepAlive(true);
        params->setKeepAliveTimeout(Poco::Timespan(cfg.getInt("retriever.keepAliveSeconds"), 0));
        params->setMaxKeepAliveRequests(cfg.getInt("retriever.maxKeepAliveRequests"));
        params->setTimeout(Poco::Timespan(cfg.getInt("retriever.timeoutSeconds"), 0));
        params->setServerName("localhost");
        params->setSoftwareVersion("maillab-retriever");
        Poco::ThreadPool pool(2, threads, 60, 256 * 1024);
        // One HTTPServer per listening address (127.0.0.1 and ::1), sharing the pool and the limits.
        std::vector<std::unique_ptr<Poco::Net::HTTPServer>> servers;
        for (auto& listener : listeners) {
            servers.push_back(std::make_unique<Poco::Net::HTTPServer>(new MailRequestHandlerFactory(ctx), pool, *listener, params));
            ctx.servers.push_back(servers.back().get());
        }
        for (auto& server : servers) server->start();

        logger.information("event=listening address=" + describeListeners(listeners) + " db=" + storeOptions.path +
                           " tls=" + mode + " open-files=" + std::to_string(files));
        std::cout << "ready port=" << listeners.front()->address().port() << std::endl;
        waitForTerminationRequest();
        logger.information("event=stopping");
        // stopAll(true) also closes idle keep-alive connections, so the pool can be joined.
        for (auto& server : servers) server->stopAll(true);
        ctx.servers.clear();
        pool.joinAll();
        logger.information("event=stopped");
        return EXIT_OK;
    }

private:
    bool helpRequested_ = false;
};

}  // namespace
}  // namespace maillab

POCO_SERVER_MAIN(maillab::RetrieverServer)
