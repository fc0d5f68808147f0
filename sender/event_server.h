// The sender's SMTP on the event-loop core (common/net/event_loop.h), chosen with sender.core = events:
// each connection's bytes go to its socket-free smtp::Session (session.h) on a loop thread and its
// replies go back out, with the limits, deadlines, refusals and log lines of the thread-per-connection
// server (server.cpp). The inputs that block, an AUTH password check and the end of a message (the
// group commit waits for fsync: a 250 means on disk), run on a small worker pool while the connection
// reads nothing; their replies are sent by the loop. Implicit TLS, STARTTLS (RFC 3207) and plain text.
#pragma once
#include "session.h"

#include "../common/lab/auth.h"
#include "../common/lab/store.h"
#include "../common/net/connection_guard.h"
#include "../common/net/event_loop.h"
#include "../common/net/guarded_connection.h"
#include "../common/net/proxy_protocol.h"

#include <Poco/Logger.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace maillab::sender_events {

struct Settings {
    Authenticator* auth = nullptr;
    Store* store = nullptr;
    smtp::SessionLimits limits;
    // What every session shares (TLS mode, hostname, data budget, rates, free disk, the class board's
    // hooks); the connection's own parts (peer, TLS, log, trace, onLogin) are filled in here.
    smtp::SessionEnv env;
    std::function<void(const std::string& account)> onLogin;  // the class board's activity; provenance is ours
    bool provenance = false;         // class servers: the TLS session of each login
    Poco::Logger* logger = nullptr;
    bool verbose = false;
    bool implicitTls = true;         // TLS from the first byte; else clear listeners (STARTTLS or off)
    SSL_CTX* tls = nullptr;          // the listeners' context (implicit) or STARTTLS's; null: no TLS
    ConnectionLimiter* limiter = nullptr;
    std::atomic<unsigned long>* nextConnectionId = nullptr;  // the log lines' id=
    GuardedProtocol words;           // smtp_guard.h: the 421s, the clear-text answer, the silence hint
    std::chrono::milliseconds handshakeTimeout{30000};   // sender.timeout.handshake
    std::chrono::milliseconds refusalTimeout{1000};      // sender.timeout.refusalMs
    std::chrono::milliseconds commandTimeout{300000};    // sender.timeout.command, from the previous reply
    std::chrono::milliseconds dataTimeout{180000};       // sender.timeout.data, each block of message octets
    std::chrono::milliseconds dataTotalTimeout{600000};  // sender.timeout.dataTotal, the whole message
    std::chrono::milliseconds sendTimeout{60000};        // sender.timeout.send: our last reply, read by the client
    int closeLingerMs = 1000;        // sender.timeout.closeLingerMs
    int maxRefusalHandshakes = 8;
    proxy::Settings proxy;
    int threads = 0;                 // sender.events.threads: loop threads (0: one per core)
    int workers = 16;                // sender.events.workers: threads for the end of a message (and, on PostgreSQL, every read)
    int authWorkers = 4;             // sender.events.authWorkers: threads for AUTH (password checks, registrations)
    size_t maxQueuedJobs = 256;      // sender.events.maxQueuedJobs: jobs waiting for each lane's workers (past it: busy)
    std::chrono::milliseconds workerWait{10000};  // auth.hashWaitMilliseconds: a job that waited longer answers busy
    bool everyInputOnWorkers = false;  // a store across the network (PostgreSQL): any query may be slow
    // sender.events.commitFromLoop: a message's end runs on the loop up to its commit, which the
    // store's group commit runs and reports back (Store::deliverAsync): no worker waits for fsync on
    // its behalf. Not with everyInputOnWorkers. Off: the end of a message is a delivery worker's job.
    bool commitFromLoop = true;
};

class EventServer {
public:
    explicit EventServer(Settings settings);
    ~EventServer();
    void start(const std::vector<int>& listeners);
    // From now on a queued job that has not started does nothing but answer 421 (stop() does this too).
    void dropUnstartedJobs();
    // RFC 5321 3.8: every session answers 421 and closes (one whose message is being stored gets its
    // 250 first); after `grace` those still open are closed, then the loops and workers join.
    void stop(std::chrono::milliseconds grace);
    int threads() const;
    size_t sessions() const;  // connections admitted and not yet ended

    struct Shared;  // the settings, the loops, the workers and the open sessions (event_server.cpp)

private:
    std::unique_ptr<Shared> shared_;
};

}  // namespace maillab::sender_events
