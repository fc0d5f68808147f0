// What keeps a server's connections from being hoarded (issue: abuse). Both servers run one pool
// thread per connection, so two things bound what a client can hold:
//   - ConnectionLimiter: at most `total` connections, and at most `perAddress` from one address;
//     a connection over either limit is refused at once (421 / 503) instead of taking a thread.
//     When all places are taken, the connection that has waited longest for its client (silent,
//     or idle at a prompt) gives way to the newcomer, so a few addresses cannot hold every place.
//   - Watchdog: total deadlines (a TLS handshake, an HTTP request head). Socket timeouts apply to
//     each read, so a client sending a byte every few seconds stretches them without end; an armed
//     deadline that passes shuts the socket down, and the blocked read or handshake returns at once.
#pragma once
#include <Poco/Timespan.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

namespace maillab {

class ConnectionLimiter {
public:
    enum class Verdict { Admitted, TooManyTotal, TooManyFromAddress };

private:
    struct Place;

public:

    // Holds one admitted connection's place; the place is given back when the Slot goes.
    class Slot {
    public:
        Slot() = default;
        Slot(Slot&& other) noexcept;
        Slot& operator=(Slot&& other) noexcept;
        Slot(const Slot&) = delete;
        Slot& operator=(const Slot&) = delete;
        ~Slot();
        Verdict verdict() const { return verdict_; }
        bool admitted() const { return verdict_ == Verdict::Admitted; }
        // The connection waits for its client on `fd` (from now: the oldest waiting give way first),
        // or is working for it. Call working() before the socket is closed.
        void waiting(int fd);
        void working();
        // True once this connection gave its place to a newcomer (its socket was shut down).
        bool evicted() const;

    private:
        friend class ConnectionLimiter;
        ConnectionLimiter* owner_ = nullptr;
        std::string address_;
        Verdict verdict_ = Verdict::TooManyTotal;
        std::uint64_t id_ = 0;
        Place* place_ = nullptr;  // its Place in owner_->places_ (a map node: stays where it is)
    };

    // 0 for either limit: no limit of that kind. A connection that has waited for its client at
    // least `minWaitToEvict` may be shut down to make room when all places are taken.
    ConnectionLimiter(int total, int perAddress, std::chrono::milliseconds minWaitToEvict = std::chrono::seconds(2))
        : total_(total), perAddress_(perAddress), minWaitToEvict_(minWaitToEvict) {}

    // `address` is the peer's IP address without the port.
    Slot admit(const std::string& address);
    int active() const;
    int activeFrom(const std::string& address) const;
    static const char* describe(Verdict verdict);  // "max-connections", "max-connections-per-address"

    int evictions() const;  // connections shut down to make room, since the start

private:
    using Clock = std::chrono::steady_clock;
    // One admitted connection, from admit to release: waiting()/working() only change its fields (a
    // kept-open message calls them ten times: no map node made or freed, no lookup).
    struct Place {
        bool waiting = false;
        bool evicted = false;
        Clock::time_point since;
        int fd = -1;
    };
    void release(const Slot& slot);
    bool evictOldestWaiting();  // with mutex_ held

    const int total_, perAddress_;
    const std::chrono::milliseconds minWaitToEvict_;
    mutable std::mutex mutex_;
    int active_ = 0;
    int pendingEvictions_ = 0;  // shut down, not yet gone: their places are the newcomers'
    int evictions_ = 0;
    std::uint64_t nextId_ = 1;
    std::map<std::string, int> perAddressActive_;
    std::map<std::uint64_t, Place> places_;
};

class Watchdog {
public:
    using Clock = std::chrono::steady_clock;

    // One armed deadline; disarmed when it goes (before the socket is closed, so a late firing can
    // never shut down a descriptor number that was reused).
    class Guard {
    public:
        Guard() = default;
        Guard(Guard&& other) noexcept;
        Guard& operator=(Guard&& other) noexcept;
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
        ~Guard();
        bool expired() const;  // the deadline passed and the socket was shut down
        void disarm();

    private:
        friend class Watchdog;
        Watchdog* owner_ = nullptr;
        std::uint64_t id_ = 0;
    };

    Watchdog();
    ~Watchdog();
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;

    // Shuts `fd` down (SHUT_RDWR) if the guard is still armed `within` from now.
    Guard arm(int fd, Poco::Timespan within);

private:
    struct Entry {
        int fd;
        Clock::time_point at;
    };
    void loop();
    void disarm(std::uint64_t id);
    bool fired(std::uint64_t id) const;

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::map<std::uint64_t, Entry> entries_;
    std::set<std::pair<Clock::time_point, std::uint64_t>> queue_;
    std::set<std::uint64_t> firedIds_;  // fired and not yet disarmed: expired() asks
    std::uint64_t nextId_ = 1;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace maillab
