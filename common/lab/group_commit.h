// Group commit, the one used by both stores' deliver() (SQLite and PostgreSQL): deliveries that
// arrive while a commit is running wait and go into the next transaction together, so one fsync
// covers many messages under load and none waits at low load. Every caller returns only after the
// commit that holds its rows (a 250 means on disk); if that commit fails, every message in it fails
// and none is stored.
// deliverAsync() is the event core's way in: it returns at once and its callback runs once the commit
// is done, on the thread that ran it (a committer thread of this object's own when no caller of
// deliver() is there to lead), so no thread waits for fsync on the message's behalf.
// Under load a commit waits a moment for company (CommitDelay in store.h, the store.commitDelay* settings).
#pragma once
#include "store.h"

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace maillab {

class GroupCommit {
public:
    // One caller's message, and what its commit gave it back.
    struct Delivery {
        const NewMessage* message = nullptr;
        std::vector<int64_t> ids;
        std::exception_ptr error;
    };
    // Stores every delivery of the batch in one transaction, filling each one's ids; on failure,
    // each one's error (and no ids).
    using CommitBatch = std::function<void(const std::vector<Delivery*>&)>;

    // How the commit delay waits and tells the time (tests pass their own, to act while it waits and
    // to move time on); empty members are the real ones.
    struct Clock {
        std::function<void(std::chrono::microseconds)> sleep;
        std::function<std::chrono::steady_clock::time_point()> now;
    };

    // No delay unless asked for (the stores pass their CommitDelay setting).
    explicit GroupCommit(CommitBatch commitBatch, CommitDelay delay = {0, 2}, Clock clock = {});
    ~GroupCommit() { stop(); }
    GroupCommit(const GroupCommit&) = delete;
    GroupCommit& operator=(const GroupCommit&) = delete;

    // Returns the ids of the stored copies once they are committed; rethrows the commit's error.
    std::vector<int64_t> deliver(const NewMessage& message);
    // Returns at once; `done` gets the ids, or the commit's error text, once the commit is over.
    void deliverAsync(std::shared_ptr<const NewMessage> message, Store::Delivered done);
    // Commits what deliverAsync still holds and ends its committer thread (the owning store calls it
    // before closing its connections; the destructor too). deliverAsync must not be called after.
    void stop();

private:
    // A waiting caller, on its own stack: woken alone, when its commit is done or when it is its
    // turn to run the next one (notify_all woke every waiter at each commit: issue 22).
    struct Waiter {
        Delivery delivery;
        bool done = false;
        bool leads = false;
        std::condition_variable wake;
    };
    struct Async {
        Delivery delivery;
        std::shared_ptr<const NewMessage> message;
        Store::Delivered done;
    };
    // With the lock held and committing_ set by the caller: commits everything pending (unlocking
    // for the commit), completes it, and hands the lead on (or clears committing_).
    void commitPending(std::unique_lock<std::mutex>& lock, Waiter* self);
    void committerLoop();

    CommitBatch commitBatch_;
    CommitDelay delay_;
    Clock clock_;
    // The commit delay's sign of load: the last commit's size, and when it ended.
    size_t lastBatch_ = 0;
    std::chrono::steady_clock::time_point lastCommitEnded_{};
    std::mutex mutex_;
    std::vector<Waiter*> pending_;
    std::vector<std::unique_ptr<Async>> pendingAsync_;
    bool committing_ = false;
    bool committerLeads_ = false;  // the next commit is the committer thread's to run
    bool stopping_ = false;
    std::condition_variable committerWake_;
    std::thread committer_;  // started by the first deliverAsync
};

}  // namespace maillab
