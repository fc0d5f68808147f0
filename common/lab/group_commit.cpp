// See group_commit.h.
#include "group_commit.h"

#include <string>

namespace maillab {

namespace {
// A commit with company counts as load for this long after it ended: a message that comes alone later
// (a student's next one, minutes on) is committed at once.
constexpr std::chrono::milliseconds kLoadLasts{10};
}  // namespace

GroupCommit::GroupCommit(CommitBatch commitBatch, CommitDelay delay, Clock clock)
    : commitBatch_(std::move(commitBatch)), delay_(delay), clock_(std::move(clock)) {
    if (delay_.microseconds < 0 || delay_.microseconds > kMostCommitDelayMicroseconds)
        throw StoreSettingError("store.commitDelayMicroseconds must be between 0 and " + std::to_string(kMostCommitDelayMicroseconds) +
                         " (it is " + std::to_string(delay_.microseconds) + "); 0 commits at once");
    if (delay_.afterBatchOf < 1)
        throw StoreSettingError("store.commitDelayAfterBatchOf must be at least 1 (it is " + std::to_string(delay_.afterBatchOf) + ")");
    if (!clock_.sleep) clock_.sleep = [](std::chrono::microseconds d) { std::this_thread::sleep_for(d); };
    if (!clock_.now) clock_.now = [] { return std::chrono::steady_clock::now(); };
}

std::vector<int64_t> GroupCommit::deliver(const NewMessage& message) {
    Waiter me;
    me.delivery.message = &message;
    std::unique_lock<std::mutex> lock(mutex_);
    pending_.push_back(&me);
    if (committing_) me.wake.wait(lock, [&] { return me.done || me.leads; });
    if (!me.done) {
        // This caller runs the commit for everyone waiting, itself included.
        committing_ = true;
        commitPending(lock, &me);
    }
    if (me.delivery.error) std::rethrow_exception(me.delivery.error);
    return std::move(me.delivery.ids);
}

void GroupCommit::deliverAsync(std::shared_ptr<const NewMessage> message, Store::Delivered done) {
    auto async = std::make_unique<Async>();
    async->delivery.message = message.get();
    async->message = std::move(message);
    async->done = std::move(done);
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_) {  // the store is closing: nothing will commit it
        lock.unlock();
        async->done({}, "the store is closing");
        return;
    }
    if (!committer_.joinable()) committer_ = std::thread([this] { committerLoop(); });
    pendingAsync_.push_back(std::move(async));
    if (!committing_) {
        committing_ = true;  // the committer runs it: no caller of deliver() is waiting to lead
        committerLeads_ = true;
        committerWake_.notify_one();
    }
}

void GroupCommit::commitPending(std::unique_lock<std::mutex>& lock, Waiter* self) {
    // Under load (the last commit, just now, had company) more messages are on their way: waiting a
    // moment for them costs this batch that moment and saves an fsync for each one that joins.
    // Measured on the 2-core bench machine, kept-open delivery at c=20: about 6 messages per fdatasync
    // without the delay, 9 with it; sender CPU per message about 130 us in every run, where without it
    // most runs took 240-450 us and a few 130 (docs/design.md).
    if (delay_.microseconds > 0 && lastBatch_ >= static_cast<size_t>(delay_.afterBatchOf) &&
        clock_.now() - lastCommitEnded_ < kLoadLasts) {
        lock.unlock();
        try {
            clock_.sleep(std::chrono::microseconds(delay_.microseconds));
        } catch (...) {
            // Not waiting is always safe: the batch goes now.
        }
        lock.lock();
    }
    lastBatch_ = pending_.size() + pendingAsync_.size();
    std::vector<Waiter*> batch;
    std::vector<std::unique_ptr<Async>> asyncBatch;
    std::vector<Delivery*> deliveries;
    try {
        deliveries.reserve(pending_.size() + pendingAsync_.size());  // before anything is taken
    } catch (...) {
        // No memory even for the list: the push_backs below fail too, and every delivery of this
        // round is answered with that failure (nothing stored), never left waiting.
    }
    batch.swap(pending_);
    asyncBatch.swap(pendingAsync_);
    lock.unlock();
    // Whatever fails here fails the deliveries, never the thread: an exception out of a committer
    // thread would end the process, and out of a leading caller would leave every waiter asleep.
    try {
        for (Waiter* w : batch) deliveries.push_back(&w->delivery);
        for (auto& a : asyncBatch) deliveries.push_back(&a->delivery);
        commitBatch_(deliveries);
    } catch (...) {
        std::exception_ptr failure = std::current_exception();
        for (Waiter* w : batch)
            if (!w->delivery.error && w->delivery.ids.empty()) w->delivery.error = failure;
        for (auto& a : asyncBatch)
            if (!a->delivery.error && a->delivery.ids.empty()) a->delivery.error = failure;
    }
    // The event core's answers: each posts to its loop (never blocks on the commit).
    for (auto& a : asyncBatch) {
        try {
            a->done(std::move(a->delivery.ids), a->delivery.error ? Store::failureText(a->delivery.error) : std::string());
        } catch (...) {
            // The answer could not be made or posted: the connection's backstop deadline ends it.
        }
    }
    lock.lock();
    if (delay_.microseconds > 0) lastCommitEnded_ = clock_.now();
    // Woken while the lock is held: a waiter cannot return (and take its condition variable
    // with it) before we are done with it.
    for (Waiter* w : batch) {
        w->done = true;
        if (w != self) w->wake.notify_one();
    }
    // Those who arrived during this commit: the first caller of deliver() among them runs the next
    // one, else the committer thread does.
    if (!pending_.empty()) {
        pending_.front()->leads = true;
        pending_.front()->wake.notify_one();
    } else if (!pendingAsync_.empty()) {
        committerLeads_ = true;
        committerWake_.notify_one();
    } else {
        committing_ = false;
        if (stopping_) committerWake_.notify_one();  // stop() waits for the committer, which waits for this
    }
}

void GroupCommit::committerLoop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        committerWake_.wait(lock, [&] { return committerLeads_ || (stopping_ && !committing_); });
        if (committerLeads_) {
            committerLeads_ = false;
            commitPending(lock, nullptr);
            continue;
        }
        if (pendingAsync_.empty()) return;  // stopping, nothing left
        committing_ = true;
        commitPending(lock, nullptr);
    }
}

void GroupCommit::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
        committerWake_.notify_one();
    }
    if (committer_.joinable()) committer_.join();
}

}  // namespace maillab
