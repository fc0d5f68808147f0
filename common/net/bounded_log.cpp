// See bounded_log.h.
#include "bounded_log.h"

#include <Poco/Instantiator.h>
#include <Poco/LoggingFactory.h>
#include <Poco/LoggingRegistry.h>
#include <Poco/NumberParser.h>

#include <cerrno>
#include <unistd.h>

namespace maillab {

BoundedAsyncChannel::BoundedAsyncChannel() = default;

BoundedAsyncChannel::~BoundedAsyncChannel() { close(); }

void BoundedAsyncChannel::registerClass() {
    Poco::LoggingFactory::defaultFactory().registerChannelClass(
        "BoundedAsyncChannel", new Poco::Instantiator<BoundedAsyncChannel, Poco::Channel>);
}

void BoundedAsyncChannel::setProperty(const std::string& name, const std::string& value) {
    if (name == "channel") target_ = Poco::LoggingRegistry::defaultRegistry().channelForName(value);
    else if (name == "maxQueuedBytes") maxQueuedBytes_ = static_cast<size_t>(Poco::NumberParser::parseUnsigned64(value));
    else if (name == "lingerMs") linger_ = std::chrono::milliseconds(Poco::NumberParser::parseUnsigned(value));
    else Channel::setProperty(name, value);
}

void BoundedAsyncChannel::open() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (running_) return;
    running_ = true;
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

void BoundedAsyncChannel::close() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!running_) return;
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
    std::lock_guard<std::mutex> lock(mutex_);
    running_ = false;
}

void BoundedAsyncChannel::log(const Poco::Message& message) {
    open();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        size_t size = message.getText().size() + 64;
        // Warnings and errors always get in: a refusal's reason is never the line dropped.
        if (queuedBytes_ + size > maxQueuedBytes_ && message.getPriority() > Poco::Message::PRIO_WARNING) {
            ++dropped_;
            ++droppedUnreported_;
            return;
        }
        queue_.push_back(message);
        queuedBytes_ += size;
    }
    wake_.notify_one();
}

uint64_t BoundedAsyncChannel::dropped() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dropped_;
}

void BoundedAsyncChannel::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    std::deque<Poco::Message> batch;
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty() && stopping_) return;
        if (linger_.count() > 0 && !stopping_) {
            // Let the next lines join this batch: while this thread sleeps here, not on wake_, a
            // connection's log() notifies no one (no futex call) and one write takes them all.
            lock.unlock();
            std::this_thread::sleep_for(linger_);
            lock.lock();
        }
        // Everything waiting, written together (StderrLineChannel::Batch): one write for the lines of
        // many connections, and the queue's lock held only for the swap. The lines in hand still
        // count against maxQueuedBytes until written: the bound is on all unwritten lines.
        batch.swap(queue_);
        size_t batchBytes = queuedBytes_;
        uint64_t unreported = droppedUnreported_;
        droppedUnreported_ = 0;
        lock.unlock();
        if (target_) {
            StderrLineChannel::Batch together;
            if (unreported)
                target_->log(Poco::Message(batch.front().getSource(),
                                           "event=log-dropped lines=" + std::to_string(unreported) +
                                               " note=\"the log fell behind (--verbose?); those lines were not written\"",
                                           Poco::Message::PRIO_WARNING));
            for (const Poco::Message& message : batch) target_->log(message);
        }
        batch.clear();
        lock.lock();
        queuedBytes_ -= batchBytes;
    }
}

void StderrLineChannel::registerClass() {
    Poco::LoggingFactory::defaultFactory().registerChannelClass(
        "StderrLineChannel", new Poco::Instantiator<StderrLineChannel, Poco::Channel>);
}

namespace {
thread_local std::string* gathering = nullptr;  // the thread's open Batch, if any

// Whole lines to stderr; a batch larger than this goes in several writes (a terminal or pipe takes
// a bounded write at once, and a line never waits behind megabytes of others).
constexpr size_t kBatchWriteBytes = 64 * 1024;

void writeStderr(const char* p, size_t left) {
    while (left > 0) {
        ssize_t n = ::write(2, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // stderr closed or full: the lines are lost, as Poco's console's would be
        p += n;
        left -= static_cast<size_t>(n);
    }
}
}  // namespace

StderrLineChannel::Batch::Batch() {
    if (!gathering) gathering = &lines_;
}

StderrLineChannel::Batch::~Batch() {
    if (gathering != &lines_) return;
    gathering = nullptr;
    writeStderr(lines_.data(), lines_.size());
}

void StderrLineChannel::log(const Poco::Message& message) {
    if (gathering) {
        if (!gathering->empty() && gathering->size() + message.getText().size() + 1 > kBatchWriteBytes) {
            writeStderr(gathering->data(), gathering->size());
            gathering->clear();
        }
        *gathering += message.getText();
        *gathering += '\n';
        return;
    }
    std::string line;
    line.reserve(message.getText().size() + 1);
    line += message.getText();
    line += '\n';
    writeStderr(line.data(), line.size());
}

}  // namespace maillab
