// The event core's worker pool: see worker_pool.h.
#include "worker_pool.h"

#include <algorithm>
#include <exception>
#include <iostream>

namespace maillab::net {

WorkerPool::WorkerPool(int threads, size_t maxQueued, std::chrono::milliseconds maxWait)
    : maxQueued_(maxQueued), maxWait_(maxWait) {
    for (int i = 0; i < std::max(1, threads); ++i)
        threads_.emplace_back([this] {
            for (;;) {
                Job job;
                {
                    std::unique_lock<std::mutex> lock(mutex_);
                    ready_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
                    if (jobs_.empty()) return;
                    job = std::move(jobs_.front());
                    jobs_.pop_front();
                }
                bool late = maxWait_.count() > 0 && job.late && std::chrono::steady_clock::now() - job.queued > maxWait_;
                // A job answers its connection itself (servers catch their own errors into a 500); a throw
                // that still gets here (bad_alloc posting the answer) is logged and dropped, not the process.
                try {
                    if (late) job.late();
                    else job.work();
                } catch (const std::exception& e) {
                    std::cerr << "worker: a job threw: " << e.what() << "; dropped" << std::endl;
                } catch (...) {
                    std::cerr << "worker: a job threw; dropped" << std::endl;
                }
            }
        });
}

WorkerPool::~WorkerPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    ready_.notify_all();
    for (auto& thread : threads_) thread.join();
}

bool WorkerPool::run(std::function<void()> job, std::function<void()> late) {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (maxQueued_ > 0 && jobs_.size() >= maxQueued_) return false;
        jobs_.push_back(Job{std::move(job), std::move(late), std::chrono::steady_clock::now()});
    }
    ready_.notify_one();
    return true;
}

}  // namespace maillab::net
