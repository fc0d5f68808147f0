// The retriever's POP3 listeners: implicit TLS on its own port (POP3S, RFC 8314) and, when asked, a
// plaintext port with STLS (RFC 2595). Each connection runs on the retriever's thread pool, behind
// the same connection limits and deadlines as its HTTPS side, and drives a socket-free
// pop3::Session (pop3_session.h) over the same store and Authenticator.
#pragma once
#include "pop3_session.h"

#include "../common/lab/auth.h"
#include "../common/lab/class_board.h"
#include "../common/net/guarded_connection.h"
#include "../common/lab/store.h"

#include <Poco/Logger.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/TCPServer.h>
#include <Poco/ThreadPool.h>
#include <Poco/Timespan.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace maillab::pop3 {

// What the POP3 connections share with the rest of the retriever, and their own settings.
struct ServiceContext {
    Store* store = nullptr;
    Authenticator* auth = nullptr;
    ConnectionLimiter* limiter = nullptr;  // the retriever's: HTTPS and POP3 connections count together
    Watchdog* watchdog = nullptr;               // the gate's deadlines: the handshakes, the refusals
    Poco::Logger* logger = nullptr;
    std::atomic<unsigned long>* nextId = nullptr;  // the connection ids of the log, shared with HTTPS
    ActivityRecorder* activity = nullptr;          // the class board (class servers); none: not kept
    bool provenance = false;                       // record authenticated TLS sessions (class servers)
    Poco::Net::Context::Ptr tlsContext;            // implicit TLS and STLS
    GateSettings gate;                             // PROXY header, handshake and refusal deadlines, shared with HTTPS
    Limits limits;
    std::string hostname = "localhost";
    std::string implicitTlsPort;  // named when the plaintext port refuses credentials; "" when off
    Poco::Timespan idleTimeout;
    size_t maxResponseBytesInFlight = 128 * 1024 * 1024;
    bool verbose = false;
};

// The POP3 words of the connection gate: "-ERR [SYS/TEMP]" (RFC 3206) past the connection limits,
// service=pop3 in the log, the port's kind on the connect line.
GuardedProtocol guardedProtocol(bool implicitTls);

class Service {
public:
    explicit Service(ServiceContext context);
    ~Service();
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Serves each listener on the pool: implicit TLS (the listeners are SecureServerSockets) or the
    // plaintext port with STLS.
    void serve(std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners, bool implicitTls,
               Poco::ThreadPool& pool, int maxThreads, int backlog);
    // Stops accepting and wakes every session, which says the server is stopping and closes.
    void stop();

    struct Shared;  // the connections' view of it (pop3_server.cpp)

private:
    std::unique_ptr<Shared> shared_;
    std::vector<std::unique_ptr<Poco::Net::TCPServer>> servers_;
};

}  // namespace maillab::pop3
