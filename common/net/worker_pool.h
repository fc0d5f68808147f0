// The event core's worker pool (common/net/event_loop.h): a few threads for work that must not run on
// a loop thread (a slow password hash, a store across the network, a large answer to build), bounded
// by queue length and waiting time so that a flood is answered "busy" instead of queued without end.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace maillab::net {

// A few threads for work that may block (a slow hash, a store that is far away): the loop hands the
// job over and the job posts its result back to the connection's loop. Bounded like the threads it
// stands for: at most maxQueued jobs wait (0: no bound), and a job that waited longer than maxWait
// (0: no limit) runs its `late` instead (the server's "busy, try again").
class WorkerPool {
public:
    explicit WorkerPool(int threads, size_t maxQueued = 0, std::chrono::milliseconds maxWait = std::chrono::milliseconds(0));
    ~WorkerPool();  // finishes the queued jobs, then joins
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    // False, and nothing queued, when maxQueued jobs are waiting already.
    bool run(std::function<void()> job, std::function<void()> late = nullptr);

private:
    struct Job {
        std::function<void()> work, late;
        std::chrono::steady_clock::time_point queued;
    };
    const size_t maxQueued_;
    const std::chrono::milliseconds maxWait_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<Job> jobs_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace maillab::net
