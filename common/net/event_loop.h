// The event-loop core (issue 22): a few threads, each running an epoll loop over non-blocking
// sockets and non-blocking OpenSSL, instead of one pool thread per connection. A server gives it its
// listening sockets, its SSL_CTX and a factory of protocol objects; the core accepts, reads a PROXY
// header from a trusted balancer, does the TLS handshake, and then calls the connection's Protocol
// with the bytes that arrived, writing whatever the protocol sends. Deadlines are timers in the loop
// (no Watchdog thread); slow work goes to a WorkerPool and comes back with EventLoop::post().
//
// An idle connection costs a Connection, its SSL and its buffers: no thread, no stack.
// Everything about one connection happens on its loop's thread; post() is the one way in from others.
#pragma once
#include "proxy_protocol.h"
#include "worker_pool.h"

#include <openssl/ssl.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace maillab::net {

using Clock = std::chrono::steady_clock;
class Connection;
class EventLoop;

// Where a connection was when it ended, for the server's log line.
enum class Phase { Proxy, ClearTextCheck, Handshake, Open };

struct Ending {
    Phase phase = Phase::Open;
    std::string reason;     // "" for an orderly close by either side
    bool deadline = false;  // the connection's deadline passed
    bool peerClosed = false;  // the client closed (EOF or close_notify)
};

// What a server runs on each connection. Every call comes on the connection's loop thread.
class Protocol {
public:
    virtual ~Protocol() = default;
    // The TLS handshake is done (at once without TLS): the connection may speak first. Called again
    // when a handshake begun by Connection::startTlsAfterSend (STARTTLS) completes.
    virtual void onReady(Connection&) {}
    // Decrypted bytes from the client, in order.
    virtual void onBytes(Connection& connection, const char* data, size_t size) = 0;
    // A send that had to wait for the client to read made progress (drained: nothing is queued now).
    virtual void onWritten(Connection&, bool /*drained*/) {}
    // The deadline set with Connection::setDeadline passed. The default closes the connection.
    virtual void onDeadline(Connection& connection);
    // The connection is over; the protocol is destroyed right after, before the socket is closed.
    virtual void onClosed(Connection&, const Ending&) {}
};

struct CoreSettings {
    int threads = 0;           // loop threads; 0: one per core
    SSL_CTX* tls = nullptr;    // the server's context (from Poco: context->sslContext()); null: clear text
    std::chrono::milliseconds handshakeTimeout{30000};  // total, from accept to a finished handshake
    proxy::Settings proxy;     // balancers whose PROXY headers name the client
    int lingerMilliseconds = 100;  // after our FIN at closeAfterSend(), how long to wait for the client's
    // After accept (and the PROXY header): the protocol for this connection. The handshake deadline is
    // armed before the call; the factory may set another (a refusal's shorter one). nullptr: close.
    std::function<std::unique_ptr<Protocol>(Connection&)> open;
    // A trusted balancer sent no valid PROXY header in time: for the log. The connection is closed.
    std::function<void(const proxy::Peer&)> proxyRefused;
    // With TLS, when set: the client's first bytes were not a TLS record. `seen` holds them; the
    // answer (possibly "") is sent in clear and the connection closed (RFC 8446 5.1: records start 0x16).
    std::function<std::string(Connection&, const std::string& seen)> clearText;
    // With clearText: a client silent this long after the accept gets clearText(connection, "") (a plain
    // SMTP client waits for a banner). 0, or at or above handshakeTimeout: silence meets that deadline.
    std::chrono::milliseconds silenceHint{0};
};

// One client connection, owned by its loop.
class Connection {
public:
    Connection(EventLoop& loop, int fd, uint64_t id);
    ~Connection();
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    uint64_t id() const { return id_; }  // unique in the process: post() finds the connection by it
    int fd() const { return fd_; }
    EventLoop& loop() { return loop_; }
    const proxy::Peer& peer() const { return peer_; }
    SSL* ssl() const { return ssl_; }
    Protocol* protocol() const { return protocol_.get(); }
    int localPort() const { return localPort_; }

    // Queues bytes for the client and writes as many as the socket takes now. `last`: closeAfterSend()
    // too, so the close_notify goes in the same write as these bytes.
    void send(std::string bytes, bool last = false);
    // After what is queued: close_notify and FIN, then wait up to the linger time for the client's FIN.
    void closeAfterSend();
    // Ends the connection now (what is queued is dropped).
    void close(const std::string& reason = "");
    // One deadline per connection (a later call replaces it); on expiry Protocol::onDeadline runs.
    void setDeadline(std::chrono::milliseconds within);
    void clearDeadline();
    bool deadlinePassed() const { return deadlinePassed_; }
    // While work for this connection runs elsewhere, its bytes wait in the socket.
    void pauseReading();
    void resumeReading();
    // What has not left yet: the protocol's bytes not made into records, and records not yet written.
    size_t bytesQueued() const { return out_.size() - outSent_ + wire_.size() - wireSent_; }
    // STARTTLS (RFC 3207) on a clear connection: once what is queued is sent, a server TLS handshake on
    // this socket within the core's handshakeTimeout; Protocol::onReady runs again when it completes.
    void startTlsAfterSend(SSL_CTX* context);

private:
    friend class EventLoop;
    enum class State { Proxy, ClearTextCheck, Handshake, Open, Lingering, Closed };
    void onEvents(uint32_t events);
    void readProxy();
    void proxyFailed(const std::string& error);  // logged by the server (CoreSettings::proxyRefused), then closed
    void checkClearText();
    void answerInClear();
    void handshake();
    void readTls();
    void flush();
    bool attachTls(SSL_CTX* context);  // SSL_new, the socket to read from and wire_ to write to
    // Writes wire_ (what OpenSSL made) in as few writes as the socket takes. False while some is left
    // (EPOLLOUT is then watched) or when the connection failed and was closed. *moved: some bytes left.
    // Push::LastWords: the connection is ending (an alert, a close_notify): what the socket takes now,
    // the rest dropped, no waiting and no close.
    enum class Push { UntilBlocked, LastWords };
    bool pushWire(Push mode = Push::UntilBlocked, bool* moved = nullptr);
    void makeCloseNotify();  // once: our close_notify into wire_ (nothing for a clear-text connection)
    void startTls();
    void updateInterest();
    void finish(Ending ending);

    EventLoop& loop_;
    int fd_;
    uint64_t id_;
    int localPort_ = 0;
    State state_ = State::Proxy;
    SSL* ssl_ = nullptr;
    proxy::Peer peer_;
    std::unique_ptr<Protocol> protocol_;
    std::string proxyBytes_;
    std::string firstBytes_;  // clear text on the TLS port, read to be answered (never the PROXY header's)
    std::string out_;
    size_t outSent_ = 0;
    // OpenSSL's records, written here (a write BIO of our own) instead of to the socket one by one: a
    // flush writes the session ticket and the banner, or a last reply and close_notify, in one write
    // and one segment, where each was a write, a segment and a wake-up of the client (issue 22).
    std::string wire_;
    size_t wireSent_ = 0;
    bool holdingWrites_ = false;  // handshake(): the protocol's first answer waits to go with the ticket
    bool finSent_ = false;        // shutdown(SHUT_WR) done, after close_notify left
    bool lingerStarted_ = false;  // our close began: Lingering, its deadline the linger time
    bool paused_ = false;
    // Paused, but EPOLLIN still watched: dropped only when a read arrives while paused. A client that
    // waits for its answer sends nothing meanwhile, so a hand-off to a worker costs no epoll_ctl (two
    // per message or login before: issue 22).
    bool readInterestKept_ = false;
    bool closeWhenSent_ = false;
    bool shutDown_ = false;  // our close_notify is made (into wire_; it leaves with what is before it)
    bool wantWrite_ = false;   // the socket (or OpenSSL) must become writable before we go on
    bool readBlockedOnWrite_ = false;
    bool writeBlockedOnRead_ = false;  // SSL_write said WANT_READ: the socket must become readable
    uint32_t interest_ = 0;
    bool deadlinePassed_ = false;
    bool armed_ = false;
    std::multimap<Clock::time_point, uint64_t>::iterator timer_;  // may be earlier than deadline_ (arm)
    Clock::time_point deadline_{};                                 // while armed_: when the deadline passes
    SSL_CTX* tlsAfterSend_ = nullptr;  // startTlsAfterSend: the handshake begins once out_ is sent
    bool silenceHintArmed_ = false;    // the deadline is CoreSettings::silenceHint, not the handshake's
    Clock::time_point acceptedAt_;
    void beginTls(SSL_CTX* context);
    void silenceHintPassed();
};

// One thread's loop. Built and run by EventCore.
class EventLoop {
public:
    EventLoop(const CoreSettings& settings, const std::vector<int>& listeners, std::atomic<uint64_t>& ids);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // From any thread: runs `work` on this loop with the connection, if it is still open.
    void post(uint64_t connectionId, std::function<void(Connection&)> work);
    void run();
    void stop();  // from any thread: every connection is closed and run() returns
    const CoreSettings& settings() const { return settings_; }
    size_t connections() const { return connections_.size(); }

private:
    friend class Connection;
    friend class EventCore;
    void accept(int listener);
    // From any loop: a connection accepted there is this loop's to serve (the least loaded one).
    void adopt(int fd, const sockaddr_storage& address);
    // On this loop: a new connection set up and its TLS (or PROXY header) begun. Never throws: a
    // connection it cannot make is closed (and said on stderr), one that fails later is contained.
    void welcome(int fd, const sockaddr_storage& address);
    void wake();  // the eventfd: post(), adopt(), stop()
    void closeAdopted();
    void pauseListeners();   // out of descriptors: not watched for a moment (no busy loop)
    void resumeListeners();
    void watch(Connection& connection, uint32_t events);
    void arm(Connection& connection, Clock::time_point at);
    void disarm(Connection& connection);
    void expireTimers();
    void drainPosts();
    void destroy(uint64_t id);  // after Connection::finish
    // A throw out of one connection's work (bad_alloc, a protocol's bug): logged, that connection ended.
    void contain(uint64_t id, const char* where, const char* what);
    int waitMilliseconds() const;

    const CoreSettings& settings_;
    std::vector<int> listeners_;
    std::atomic<uint64_t>& ids_;
    int epoll_ = -1;
    int wake_ = -1;  // eventfd: post() and stop()
    std::atomic<bool> stopping_{false};
    bool listenersPaused_ = false;
    Clock::time_point listenersResume_;
    std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
    std::multimap<Clock::time_point, uint64_t> timers_;
    std::vector<uint64_t> finished_;  // closed during this round: destroyed at its end
    std::mutex postMutex_;
    std::vector<std::pair<uint64_t, std::function<void(Connection&)>>> posted_;
    std::vector<std::pair<int, sockaddr_storage>> adopted_;  // under postMutex_: adopt()'s, for drainPosts
    bool adoptionsClosed_ = false;                           // under postMutex_: stopped, adopt() closes
    std::vector<EventLoop*> siblings_;  // the core's other loops (set before any runs)
    std::atomic<int> load_{0};          // connections served or handed over to this loop
    std::vector<char> readBuffer_;
};

// The loops of one server, sharing its listening sockets (each loop accepts: EPOLLEXCLUSIVE).
class EventCore {
public:
    explicit EventCore(CoreSettings settings);
    ~EventCore();
    // `listeners`: bound, listening sockets (made non-blocking here; the caller keeps them open).
    void start(const std::vector<int>& listeners);
    void stop();  // closes every connection and joins the loops (which stay until the core goes)
    int threads() const { return static_cast<int>(loops_.size()); }

private:
    CoreSettings settings_;
    std::atomic<uint64_t> ids_{1};
    std::vector<std::unique_ptr<EventLoop>> loops_;
    std::vector<std::thread> threads_;
};

}  // namespace maillab::net
