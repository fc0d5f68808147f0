// Group commit, the one used by both stores' deliver() (SQLite and PostgreSQL): deliveries that
// arrive while a commit is running wait and go into the next transaction together, so one fsync
// covers many messages under load and none waits at low load. Every caller returns only after the
// commit that holds its rows (a 250 means on disk); if that commit fails, every message in it fails
// and none is stored.
#pragma once
#include "store.h"

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
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

    explicit GroupCommit(CommitBatch commitBatch) : commitBatch_(std::move(commitBatch)) {}

    // Returns the ids of the stored copies once they are committed; rethrows the commit's error.
    std::vector<int64_t> deliver(const NewMessage& message);

private:
    // A waiting caller, on its own stack: woken alone, when its commit is done or when it is its
    // turn to run the next one (notify_all woke every waiter at each commit: issue 22).
    struct Waiter {
        Delivery delivery;
        bool done = false;
        bool leads = false;
        std::condition_variable wake;
    };
    CommitBatch commitBatch_;
    std::mutex mutex_;
    std::vector<Waiter*> pending_;
    bool committing_ = false;
};

}  // namespace maillab
