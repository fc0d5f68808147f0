// The retriever's POP3 on the event-loop core (common/net/event_loop.h), chosen with retriever.core =
// events like its HTTPS side: each connection's bytes go to its socket-free pop3::Session
// (pop3_session.h) on a loop thread and its replies go back out, with the limits, deadlines, refusals
// (-ERR [SYS/TEMP]) and service=pop3 log lines of the thread service (pop3_server.cpp). A read that may
// hold a login (the password hash), a RETR or TOP (a message's text from the store) or a QUIT that
// deletes runs on a small worker pool while the connection reads nothing; on PostgreSQL every read
// does. The POP3S port (implicit TLS, RFC 8314) and the plaintext port with STLS (RFC 2595).
#pragma once
#include "pop3_server.h"

#include <chrono>
#include <memory>
#include <vector>

namespace maillab::pop3 {

// The event core's own settings; the rest is the thread service's ServiceContext.
struct EventSettings {
    int threads = 0;                   // retriever.events.threads: loops per port kind (0: one per core)
    // Two bounded lanes, so that a flood of logins (a password hash each) never holds up a RETR or a
    // QUIT: a read in the AUTHORIZATION state (PASS, AUTH) on authWorkers, the others on workers.
    int workers = 2;                   // retriever.events.workers: RETR, TOP, QUIT (on PostgreSQL every read)
    int authWorkers = 2;               // pop3.events.authWorkers: the reads that may log in
    size_t maxQueuedJobs = 256;        // pop3.events.maxQueuedJobs: jobs waiting in each lane (past it: busy)
    std::chrono::milliseconds workerWait{10000};  // auth.hashWaitMilliseconds: a job that waited longer answers busy
    bool everyInputOnWorkers = false;  // a store across the network (PostgreSQL): any query may be slow
    std::chrono::milliseconds shutdownGrace{5000};  // stop(): how long the last replies may take to leave
};

class EventService {
public:
    EventService(ServiceContext context, EventSettings events);
    ~EventService();
    EventService(const EventService&) = delete;
    EventService& operator=(const EventService&) = delete;

    // `implicitTls`: the POP3S listeners; `plain`: the STLS port's. Bound and listening; kept open by the caller.
    void start(const std::vector<int>& implicitTls, const std::vector<int>& plain);
    // Every session says the server is stopping (-ERR [SYS/TEMP], nothing deleted) and closes; a job
    // queued and not yet started runs nothing (a queued QUIT deletes nothing) and says so too; after
    // the grace those still open are closed, then the loops and workers join.
    void stop();
    int threads() const;
    size_t sessions() const;  // connections admitted and not yet ended

    struct Shared;  // the settings, the cores, the workers and the open sessions (pop3_event_server.cpp)

private:
    std::unique_ptr<Shared> shared_;
};

}  // namespace maillab::pop3
