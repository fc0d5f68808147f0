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
    for (;;) {
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty() && stopping_) return;
        Poco::Message message = std::move(queue_.front());
        queue_.pop_front();
        queuedBytes_ -= message.getText().size() + 64;
        uint64_t unreported = droppedUnreported_;
        droppedUnreported_ = 0;
        lock.unlock();
        if (target_) {
            if (unreported)
                target_->log(Poco::Message(message.getSource(),
                                           "event=log-dropped lines=" + std::to_string(unreported) +
                                               " note=\"the log fell behind (--verbose?); those lines were not written\"",
                                           Poco::Message::PRIO_WARNING));
            target_->log(message);
        }
        lock.lock();
    }
}

void StderrLineChannel::registerClass() {
    Poco::LoggingFactory::defaultFactory().registerChannelClass(
        "StderrLineChannel", new Poco::Instantiator<StderrLineChannel, Poco::Channel>);
}

void StderrLineChannel::log(const Poco::Message& message) {
    std::string line;
    line.reserve(message.getText().size() + 1);
    line += message.getText();
    line += '\n';
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(2, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // stderr closed or full: the line is lost, as Poco's console's would be
        p += n;
        left -= static_cast<size_t>(n);
    }
}

}  // namespace maillab
