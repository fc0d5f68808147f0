// The servers' log channel: Poco's AsyncChannel with a bound. Log lines are written by one thread of
// their own, off the connections' path; when they arrive faster than the terminal takes them (a
// --verbose server echoing 10 MB messages line by line), lines past `maxQueuedBytes` are dropped and
// counted, and one line says how many, instead of the queue growing with the traffic. And the channel
// it writes to: each line to stderr in one write, or the lines waiting together in one.
#pragma once
#include <Poco/AutoPtr.h>
#include <Poco/Channel.h>
#include <Poco/Message.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace maillab {

class BoundedAsyncChannel : public Poco::Channel {
public:
    BoundedAsyncChannel();
    void open() override;
    void close() override;
    void log(const Poco::Message& message) override;
    // "channel": the channel written to (by name, from the logging registry); "maxQueuedBytes" (all
    // lines not yet written, queued or in the writing thread's hands);
    // "lingerMs": how long the thread waits after a line for more to write with it (0: none).
    void setProperty(const std::string& name, const std::string& value) override;
    void setChannel(Poco::AutoPtr<Poco::Channel> target) { target_ = std::move(target); }
    uint64_t dropped() const;

    // Registers the class with Poco's LoggingFactory, so properties can name it (shared.properties).
    static void registerClass();

protected:
    ~BoundedAsyncChannel() override;

private:
    void run();
    Poco::AutoPtr<Poco::Channel> target_;
    size_t maxQueuedBytes_ = 16u << 20;
    std::chrono::milliseconds linger_{0};
    mutable std::mutex mutex_;
    std::condition_variable wake_, drained_;
    std::deque<Poco::Message> queue_;
    size_t queuedBytes_ = 0;
    uint64_t dropped_ = 0, droppedUnreported_ = 0;
    bool stopping_ = false, running_ = false;
    std::thread thread_;
};

// Each message's text and its newline to stderr in one write(2). Poco's ConsoleChannel writes the
// text and then std::endl on unbuffered std::clog: two system calls a line (issue 22), and a line
// that another writer to the same terminal could split.
class StderrLineChannel : public Poco::Channel {
public:
    void log(const Poco::Message& message) override;
    // Registers the class with Poco's LoggingFactory (shared.properties names it).
    static void registerClass();

    // While one lives on a thread, that thread's lines are gathered and written together when it
    // ends (in writes of whole lines): BoundedAsyncChannel writes everything waiting in one go, one
    // system call for a burst of connections' lines instead of one each (issue 22).
    class Batch {
    public:
        Batch();
        ~Batch();
        Batch(const Batch&) = delete;
        Batch& operator=(const Batch&) = delete;

    private:
        std::string lines_;
    };

protected:
    ~StderrLineChannel() override = default;
};

}  // namespace maillab
