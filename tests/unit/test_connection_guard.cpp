// ConnectionLimiter (per-address and total places, given back when a connection ends) and Watchdog
// (a passed deadline shuts the socket down; a disarmed one never fires).
#include "catch.hpp"

#include "../../common/net/connection_guard.h"

#include <sys/socket.h>
#include <unistd.h>

using maillab::ConnectionLimiter;
using maillab::Watchdog;

TEST_CASE("the limiter refuses past the per-address limit and past the total, and gives places back") {
    ConnectionLimiter limiter(3, 2);
    auto a1 = limiter.admit("127.0.0.1");
    auto a2 = limiter.admit("127.0.0.1");
    auto a3 = limiter.admit("127.0.0.1");
    CHECK(a1.admitted());
    CHECK(a2.admitted());
    CHECK(a3.verdict() == ConnectionLimiter::Verdict::TooManyFromAddress);
    auto b1 = limiter.admit("::1");
    CHECK(b1.admitted());
    auto c1 = limiter.admit("10.0.0.1");
    CHECK(c1.verdict() == ConnectionLimiter::Verdict::TooManyTotal);
    CHECK(limiter.active() == 3);
    CHECK(limiter.activeFrom("127.0.0.1") == 2);
    { auto gone = std::move(a1); }  // a connection ends
    CHECK(limiter.activeFrom("127.0.0.1") == 1);
    CHECK(limiter.admit("127.0.0.1").admitted());  // its place is free again (and given back at once)
    CHECK(limiter.active() == 2);
    CHECK(limiter.activeFrom("10.0.0.1") == 0);  // a refusal takes no place
}

TEST_CASE("when full, the connection waiting longest for its client gives way; working ones never do") {
    ConnectionLimiter limiter(2, 0, std::chrono::milliseconds(0));
    int a[2], b[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
    auto silent = limiter.admit("198.18.0.66");
    silent.waiting(a[0]);  // admitted, never spoke
    auto busy = limiter.admit("198.18.0.11");
    busy.waiting(b[0]);
    busy.working();  // a command being answered
    auto newcomer = limiter.admit("198.18.0.12");
    CHECK(newcomer.admitted());
    CHECK(silent.evicted());
    CHECK_FALSE(busy.evicted());
    char byte;
    CHECK(::recv(a[0], &byte, 1, MSG_DONTWAIT) == 0);  // shut down: its read returns at once
    CHECK(limiter.evictions() == 1);
    // Nobody waits now (the evicted one is leaving, the others work): the next is refused.
    newcomer.working();
    CHECK(limiter.admit("198.18.0.13").verdict() == ConnectionLimiter::Verdict::TooManyTotal);
    { auto gone = std::move(silent); }  // the evicted connection ends: its place was the newcomer's
    CHECK(limiter.active() == 2);
    CHECK(limiter.admit("198.18.0.14").verdict() == ConnectionLimiter::Verdict::TooManyTotal);
    for (int fd : {a[0], a[1], b[0], b[1]}) ::close(fd);
}

TEST_CASE("a connection must have waited a while before it gives way") {
    ConnectionLimiter limiter(1, 0, std::chrono::seconds(60));
    int a[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
    auto first = limiter.admit("198.18.0.11");
    first.waiting(a[0]);
    CHECK(limiter.admit("198.18.0.12").verdict() == ConnectionLimiter::Verdict::TooManyTotal);
    CHECK_FALSE(first.evicted());
    ::close(a[0]);
    ::close(a[1]);
}

TEST_CASE("a limit of 0 means no limit of that kind") {
    ConnectionLimiter limiter(0, 0);
    std::vector<ConnectionLimiter::Slot> slots;
    for (int i = 0; i < 100; ++i) slots.push_back(limiter.admit("127.0.0.1"));
    CHECK(limiter.active() == 100);
    slots.clear();
    CHECK(limiter.active() == 0);
}

TEST_CASE("a watchdog deadline that passes shuts the socket down; a disarmed one does not") {
    Watchdog watchdog;
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    Watchdog::Guard guard = watchdog.arm(pair[0], Poco::Timespan(0, 50 * 1000));
    char byte;
    // The blocked read returns (end of stream) once the deadline shuts the socket down.
    CHECK(::read(pair[0], &byte, 1) == 0);
    CHECK(guard.expired());

    int other[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, other) == 0);
    {
        Watchdog::Guard early = watchdog.arm(other[0], Poco::Timespan(0, 20 * 1000));
        early.disarm();
        CHECK_FALSE(early.expired());
    }
    Watchdog::Guard marker = watchdog.arm(pair[1], Poco::Timespan(0, 100 * 1000));  // fires after the disarmed one would have
    CHECK(::read(pair[1], &byte, 1) == 0);
    REQUIRE(::write(other[1], "x", 1) == 1);
    CHECK(::read(other[0], &byte, 1) == 1);  // still open: the disarmed deadline never fired
    for (int fd : {pair[0], pair[1], other[0], other[1]}) ::close(fd);
}
