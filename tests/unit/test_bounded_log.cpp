// The servers' asynchronous log channel keeps a bounded queue: a slow terminal costs dropped
// informational lines (counted and said), never memory that grows with the traffic.
#include "../../common/net/bounded_log.h"

#include "catch.hpp"

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

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
    CHECK(channel->dropped() >= 850);  // about 100 KB of 1 MB kept
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
    CHECK(stuck->lines.size() < 200);
}
