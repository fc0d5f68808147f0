// ConnectionLimiter and Watchdog: see connection_guard.h.
#include "connection_guard.h"

#include <sys/socket.h>

namespace maillab {

ConnectionLimiter::Slot ConnectionLimiter::admit(const std::string& address) {
    Slot slot;
    std::lock_guard<std::mutex> lock(mutex_);
    int& fromAddress = perAddressActive_[address];
    if (total_ > 0 && active_ >= total_) {
        slot.verdict_ = Verdict::TooManyTotal;
    } else if (perAddress_ > 0 && fromAddress >= perAddress_) {
        slot.verdict_ = Verdict::TooManyFromAddress;
    } else {
        slot.verdict_ = Verdict::Admitted;
        slot.owner_ = this;
        slot.address_ = address;
        ++active_;
        ++fromAddress;
        return slot;
    }
    if (fromAddress == 0) perAddressActive_.erase(address);
    return slot;
}

void ConnectionLimiter::release(const std::string& address) {
    std::lock_guard<std::mutex> lock(mutex_);
    --active_;
    auto it = perAddressActive_.find(address);
    if (it != perAddressActive_.end() && --it->second <= 0) perAddressActive_.erase(it);
}

int ConnectionLimiter::active() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_;
}

int ConnectionLimiter::activeFrom(const std::string& address) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = perAddressActive_.find(address);
    return it == perAddressActive_.end() ? 0 : it->second;
}

const char* ConnectionLimiter::describe(Verdict verdict) {
    switch (verdict) {
        case Verdict::Admitted: return "admitted";
        case Verdict::TooManyTotal: return "max-connections";
        case Verdict::TooManyFromAddress: return "max-connections-per-address";
    }
    return "?";
}

ConnectionLimiter::Slot::Slot(Slot&& other) noexcept
    : owner_(other.owner_), address_(std::move(other.address_)), verdict_(other.verdict_) {
    other.owner_ = nullptr;
}

ConnectionLimiter::Slot& ConnectionLimiter::Slot::operator=(Slot&& other) noexcept {
    if (this != &other) {
        if (owner_) owner_->release(address_);
        owner_ = other.owner_;
        address_ = std::move(other.address_);
        verdict_ = other.verdict_;
        other.owner_ = nullptr;
    }
    return *this;
}

ConnectionLimiter::Slot::~Slot() {
    if (owner_) owner_->release(address_);
}

Watchdog::Watchdog() : thread_([this] { loop(); }) {}

Watchdog::~Watchdog() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

Watchdog::Guard Watchdog::arm(int fd, Poco::Timespan within) {
    Guard guard;
    std::lock_guard<std::mutex> lock(mutex_);
    guard.owner_ = this;
    guard.id_ = nextId_++;
    Clock::time_point at = Clock::now() + std::chrono::microseconds(within.totalMicroseconds());
    entries_.emplace(guard.id_, Entry{fd, at});
    bool earliest = queue_.empty() || at < queue_.begin()->first;
    queue_.emplace(at, guard.id_);
    if (earliest) wake_.notify_all();
    return guard;
}

void Watchdog::loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        if (queue_.empty()) {
            wake_.wait(lock);
            continue;
        }
        auto first = *queue_.begin();
        if (Clock::now() < first.first) {
            wake_.wait_until(lock, first.first);
            continue;
        }
        queue_.erase(queue_.begin());
        auto it = entries_.find(first.second);
        if (it == entries_.end()) continue;
        // Under the lock: the guard cannot disarm (and its owner close the descriptor) meanwhile.
        ::shutdown(it->second.fd, SHUT_RDWR);
        firedIds_.insert(first.second);
        entries_.erase(it);
    }
}

void Watchdog::disarm(std::uint64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = entries_.find(id);
    if (it != entries_.end()) {
        queue_.erase({it->second.at, id});
        entries_.erase(it);
    }
    firedIds_.erase(id);
}

bool Watchdog::fired(std::uint64_t id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    return firedIds_.count(id) > 0;
}

Watchdog::Guard::Guard(Guard&& other) noexcept : owner_(other.owner_), id_(other.id_) { other.owner_ = nullptr; }

Watchdog::Guard& Watchdog::Guard::operator=(Guard&& other) noexcept {
    if (this != &other) {
        disarm();
        owner_ = other.owner_;
        id_ = other.id_;
        other.owner_ = nullptr;
    }
    return *this;
}

Watchdog::Guard::~Guard() { disarm(); }

void Watchdog::Guard::disarm() {
    if (owner_) owner_->disarm(id_);
    owner_ = nullptr;
}

bool Watchdog::Guard::expired() const { return owner_ && owner_->fired(id_); }

}  // namespace maillab
