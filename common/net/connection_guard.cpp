// ConnectionLimiter and Watchdog: see connection_guard.h.
#include "connection_guard.h"

#include <sys/socket.h>

namespace maillab {

ConnectionLimiter::Slot ConnectionLimiter::admit(const std::string& address) {
    Slot slot;
    std::lock_guard<std::mutex> lock(mutex_);
    int& fromAddress = perAddressActive_[address];
    if (perAddress_ > 0 && fromAddress >= perAddress_) {
        slot.verdict_ = Verdict::TooManyFromAddress;
    } else if (total_ > 0 && active_ - pendingEvictions_ >= total_ && !evictOldestWaiting()) {
        slot.verdict_ = Verdict::TooManyTotal;
    } else {
        slot.verdict_ = Verdict::Admitted;
        slot.owner_ = this;
        slot.address_ = address;
        slot.id_ = nextId_++;
        slot.place_ = &places_[slot.id_];
        ++active_;
        ++fromAddress;
        return slot;
    }
    if (fromAddress == 0) perAddressActive_.erase(address);
    return slot;
}

bool ConnectionLimiter::evictOldestWaiting() {
    Place* oldest = nullptr;
    for (auto& [id, place] : places_)
        if (place.waiting && !place.evicted && (!oldest || place.since < oldest->since)) oldest = &place;
    if (!oldest || Clock::now() - oldest->since < minWaitToEvict_) return false;
    // Its blocked read returns at once and the connection ends; until its Slot goes, its place
    // counts as the newcomer's. The fd is still its own: a Slot stops waiting before its socket closes.
    ::shutdown(oldest->fd, SHUT_RDWR);
    oldest->evicted = true;
    oldest->waiting = false;
    ++pendingEvictions_;
    ++evictions_;
    return true;
}

void ConnectionLimiter::release(const Slot& slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    --active_;
    auto place = places_.find(slot.id_);
    if (place != places_.end()) {
        if (place->second.evicted) --pendingEvictions_;
        places_.erase(place);
    }
    auto it = perAddressActive_.find(slot.address_);
    if (it != perAddressActive_.end() && --it->second <= 0) perAddressActive_.erase(it);
}

int ConnectionLimiter::evictions() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return evictions_;
}

void ConnectionLimiter::Slot::waiting(int fd) {
    if (!owner_) return;
    std::lock_guard<std::mutex> lock(owner_->mutex_);
    Place& place = *place_;
    if (place.evicted) return;
    place.waiting = true;
    place.since = Clock::now();
    place.fd = fd;
}

void ConnectionLimiter::Slot::working() {
    if (!owner_) return;
    std::lock_guard<std::mutex> lock(owner_->mutex_);
    place_->waiting = false;
}

bool ConnectionLimiter::Slot::evicted() const {
    if (!owner_) return false;
    std::lock_guard<std::mutex> lock(owner_->mutex_);
    return place_->evicted;
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
    : owner_(other.owner_), address_(std::move(other.address_)), verdict_(other.verdict_), id_(other.id_),
      place_(other.place_) {
    other.owner_ = nullptr;
    other.place_ = nullptr;
}

ConnectionLimiter::Slot& ConnectionLimiter::Slot::operator=(Slot&& other) noexcept {
    if (this != &other) {
        if (owner_) owner_->release(*this);
        owner_ = other.owner_;
        address_ = std::move(other.address_);
        verdict_ = other.verdict_;
        id_ = other.id_;
        place_ = other.place_;
        other.owner_ = nullptr;
        other.place_ = nullptr;
    }
    return *this;
}

ConnectionLimiter::Slot::~Slot() {
    if (owner_) owner_->release(*this);
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
