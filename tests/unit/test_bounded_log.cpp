// The servers' asynchronous log channel keeps a bounded queue: a slow terminal costs dropped
// informational lines (counted and said), never memory that grows with the traffic.
#include "../../common/net/bounded_log.h"

#include "catch.hpp"

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

namespace {
// A channel that holds every write until released: a terminal nobody reads.
class StuckChannel : public Poco::Channel {
public:
    void log(const Poco::Message& m) override {
        std::unique_lock<std::mutex> lock(mutex);
        released.wait(lock, [&] { return open; });
        lines.push_back(m.getText());
    }
    void unblock() {
        std::lock_guard<std::mutex> lock(mutex);
        open = true;
        released.notify_all();
    }
    std::mutex mutex;
    std::condition_variable released;
    bool open = false;
    std::vector<std::string> lines;
};
}  // namespace

TEST_CASE("a log that falls behind drops and counts lines past its bound, and says so", "[log]") {
    Poco::AutoPtr<StuckChannel> stuck(new StuckChannel);
    Poco::AutoPtr<maillab::BoundedAsyncChannel> channel(new maillab::BoundedAsyncChannel);
    channel->setChannel(Poco::AutoPtr<Poco::Channel>(stuck.get(), true));
    channel->setProperty("maxQueuedBytes", "100000");
    std::string line(1000, 'x');
    for (int i = 0; i < 1000; ++i) channel->log(Poco::Message("t", line, Poco::Message::PRIO_INFORMATION));
    channel->log(Poco::Message("t", "event=refused reason=important", Poco::Message::PRIO_WARNING));
    // At most 100 KB of 1 MB unwritten at any time, whatever the writing thread took already: 93
    // lines of 1,064 counted bytes each.
    CHECK(channel->dropped() >= 1000 - 93);
    stuck->unblock();
    channel->close();
    REQUIRE(!stuck->lines.empty());
    bool said = false, warned = false;
    for (const auto& l : stuck->lines) {
        said = said || l.rfind("event=log-dropped lines=", 0) == 0;
        warned = warned || l == "event=refused reason=important";
    }
    CHECK(said);
    CHECK(warned);  // warnings are never the ones dropped
    CHECK(stuck->lines.size() <= 93 + 3);  // and the warning, and a dropped-count line in each of two batches
}

TEST_CASE("the lines waiting for the log's thread reach stderr in one write, whole and in order", "[log]") {
    // stderr is a file for this test; a Batch holds the thread's lines until it ends.
    char path[] = "/tmp/maillab-log-batch-XXXXXX";
    int file = ::mkstemp(path);
    REQUIRE(file >= 0);
    int saved = ::dup(2);
    ::dup2(file, 2);
    auto size = [&] { return static_cast<long>(::lseek(file, 0, SEEK_END)); };
    Poco::AutoPtr<maillab::StderrLineChannel> console(new maillab::StderrLineChannel);
    long during = -1;
    {
        maillab::StderrLineChannel::Batch together;
        for (int i = 0; i < 3; ++i) console->log(Poco::Message("t", "line " + std::to_string(i), Poco::Message::PRIO_INFORMATION));
        during = size();
    }
    long after = size();
    console->log(Poco::Message("t", "alone", Poco::Message::PRIO_INFORMATION));  // no batch: at once
    long alone = size();
    ::dup2(saved, 2);
    ::close(saved);
    std::string text(static_cast<size_t>(alone), '\0');
    REQUIRE(::pread(file, &text[0], text.size(), 0) == alone);
    ::close(file);
    ::unlink(path);
    CHECK(during == 0);
    CHECK(after == static_cast<long>(std::string("line 0\nline 1\nline 2\n").size()));
    CHECK(text == "line 0\nline 1\nline 2\nalone\n");
}
