// See group_commit.h.
#include "group_commit.h"

namespace maillab {

std::vector<int64_t> GroupCommit::deliver(const NewMessage& message) {
    Waiter me;
    me.delivery.message = &message;
    std::unique_lock<std::mutex> lock(mutex_);
    pending_.push_back(&me);
    if (committing_) me.wake.wait(lock, [&] { return me.done || me.leads; });
    if (!me.done) {
        // This caller runs the commit for everyone waiting, itself included.
        committing_ = true;
        std::vector<Waiter*> batch;
        batch.swap(pending_);
        std::vector<Delivery*> deliveries;
        deliveries.reserve(batch.size());
        for (Waiter* w : batch) deliveries.push_back(&w->delivery);
        lock.unlock();
        commitBatch_(deliveries);
        lock.lock();
        // Woken while the lock is held: a waiter cannot return (and take its condition variable
        // with it) before we are done with it.
        for (Waiter* w : batch) {
            w->done = true;
            if (w != &me) w->wake.notify_one();
        }
        // Those who arrived during this commit: the first of them runs the next one.
        if (pending_.empty()) {
            committing_ = false;
        } else {
            pending_.front()->leads = true;
            pending_.front()->wake.notify_one();
        }
    }
    if (me.delivery.error) std::rethrow_exception(me.delivery.error);
    return std::move(me.delivery.ids);
}

}  // namespace maillab
