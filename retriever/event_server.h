// The retriever's HTTPS GETs on the event-loop core (common/net/event_loop.h), chosen with
// retriever.core = events: HTTP/1.1 framing by Node's http-parser (Debian's libhttp-parser-dev), each
// request answered by the socket-free MailApi, with the bytes, limits, deadlines, refusals and log
// lines of the thread-per-connection server (retriever/server.cpp). MailApi answers on the loop
// what it can answer without waiting (ApiRequest::mayWait: a cached login, none at all); a request
// that would wait (a slow hash, an account's check held by another thread, a store write) goes to a
// small bounded worker pool and its answer is sent by the loop. docs/design.md says what is not here yet.
#pragma once
#include "mail_api.h"

#include "../common/lab/store.h"
#include "../common/net/connection_guard.h"
#include "../common/net/event_loop.h"
#include "../common/net/proxy_protocol.h"

#include <Poco/Logger.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace maillab::retriever_events {

struct Settings {
    http::MailApi* api = nullptr;
    Store* store = nullptr;          // provenance: the TLS session of each login
    bool provenance = false;
    Poco::Logger* logger = nullptr;
    bool verbose = false;
    bool overTls = true;
    SSL_CTX* tls = nullptr;          // the context server.cpp built (Poco's Context::sslContext())
    ConnectionLimiter* limiter = nullptr;
    std::atomic<unsigned long>* nextConnectionId = nullptr;  // the log lines' id=, shared with POP3
    std::chrono::milliseconds handshakeTimeout{30000};    // retriever.timeout.handshake
    std::chrono::milliseconds requestHeadTimeout{30000};  // retriever.timeout.requestHead: each head, total
    std::chrono::milliseconds firstRequestWait{30000};    // retriever.timeoutSeconds: the first byte of the first request
    std::chrono::milliseconds keepAliveTimeout{15000};    // retriever.keepAliveSeconds: the first byte of a later one
    std::chrono::milliseconds refusalTimeout{1000};       // retriever.timeout.refusalMs
    int maxRefusalHandshakes = 8;
    int maxKeepAliveRequests = 1000;  // the last one is answered "Connection: Close"; 0: no limit
    proxy::Settings proxy;
    int threads = 0;  // retriever.events.threads: loop threads (0: one per core)
    // retriever.events.workers: threads for requests that may be slow (server.cpp resolves its 0,
    // automatic: 2, or store.maxConnections when workersOnly), in each of the two pools.
    int workers = 2;
    // Threads for a logged-in user's heavy answers (a whole message, a page): decoding is CPU work, so
    // one per core (retriever.events.answerWorkers, 0: automatic), as the thread core spreads it.
    int answerWorkers = 2;
    // retriever.events.maxQueuedRequests: requests waiting for a worker; past it a request gets 503.
    size_t maxQueuedRequests = 1024;
    // auth.hashWaitMilliseconds: a request that waited this long for a worker gets 503, as a login
    // waiting this long for a hash place does on the thread core.
    std::chrono::milliseconds workerWait{10000};
    // retriever.events.maxPendingBytes: bytes read past the request being answered (pipelined ones).
    // Reading pauses while an answer drains or a worker runs, so one read (16 KiB) is the most that
    // waits; past this limit the connection gets 400 and is closed.
    size_t maxPendingBytes = 65536;
    // Every request to a worker (a store across the network, where every query may be slow); else
    // MailApi answers on the loop unless it would wait (ApiRequest::mayWait).
    bool workersOnly = false;
    // Plain HTTP on the HTTPS port: the clear-text 400 naming the https:// URL (server.cpp's), from the
    // request's first bytes and our port. Unset: such clients just fail their handshake.
    std::function<std::string(const std::string& request, int port)> plainHttpAnswer;
    std::function<std::string(ConnectionLimiter::Verdict)> refusal;  // the 503's bytes
    std::string software = "maillab-retriever";  // the Server header, as Poco's HTTPServerParams sets it
};

class EventServer {
public:
    explicit EventServer(Settings settings);
    ~EventServer();
    void start(const std::vector<int>& listeners);
    void stop();  // every connection ends (idle keep-alive ones at once); the loops and workers join
    int threads() const;
    int workers() const;  // the threads of each worker pool (logins; logged-in users' heavy answers)

    struct Shared;  // the settings, the loops and the workers (event_server.cpp)

private:
    std::unique_ptr<Shared> shared_;
};

// The response head Poco's HTTPServer writes for the thread core, byte for byte: status line, Date,
// Connection, Server, the resource's headers, Content-Length. Socket-free, for the unit tests.
// Whether bytes start with a well-formed request line (an unknown method there is 501, not 400).
bool looksLikeRequestLine(std::string_view bytes);
std::string responseHead(const http::ApiResponse& response, bool http10, bool keepAlive, const std::string& date,
                         const std::string& software, size_t contentLength);

}  // namespace maillab::retriever_events
