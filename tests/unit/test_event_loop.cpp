// The event-loop core (common/net/event_loop.h) when a protocol throws: on reading, in a posted job,
// at a deadline, or a worker's job. Only that connection ends; the loop, its other connections and
// the workers go on (a throw there used to end the process). Clear text, one loop, loopback sockets.
#include "catch.hpp"

#include "../../common/net/event_loop.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <new>
#include <stdexcept>
#include <string>

namespace {

using maillab::net::Connection;

// Echoes what it reads, except the commands that make it throw where the loop calls it.
class ThrowingProtocol : public maillab::net::Protocol {
public:
    void onBytes(Connection& connection, const char* data, size_t size) override {
        std::string text(data, size);
        if (text == "throw") throw std::runtime_error("a protocol's bug");
        if (text == "nomem") throw std::bad_alloc();
        if (text == "post") {
            connection.loop().post(connection.id(), [](Connection&) { throw std::runtime_error("a posted job's bug"); });
            return;
        }
        if (text == "deadline") {
            throwAtDeadline_ = true;
            connection.setDeadline(std::chrono::milliseconds(1));
            return;
        }
        connection.send(text);
    }
    void onDeadline(Connection& connection) override {
        if (throwAtDeadline_) throw std::runtime_error("a deadline's bug");
        Protocol::onDeadline(connection);
    }

private:
    bool throwAtDeadline_ = false;
};

int listenOnLoopback(int& port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    socklen_t length = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    port = ntohs(address.sin_port);
    return fd;
}

int connectTo(int port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval wait{10, 0};  // a failure is a failed check, not a hung test
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<uint16_t>(port));
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    return fd;
}

// What the server sends back for `text`: its echo, or "" when it closed the connection.
std::string exchange(int fd, const std::string& text) {
    REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
    char buffer[64];
    ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

// An event core of `threads` loops on a loopback listener, serving `open`'s protocol: stopped, then
// its listener closed, at the end of the scope.
struct LoopbackCore {
    LoopbackCore(int threads, std::function<std::unique_ptr<maillab::net::Protocol>(Connection&)> open) {
        maillab::net::CoreSettings settings;
        settings.threads = threads;
        settings.lingerMilliseconds = 10;
        settings.open = std::move(open);
        listener = listenOnLoopback(port);
        core = std::make_unique<maillab::net::EventCore>(settings);
        core->start({listener});
    }
    ~LoopbackCore() {
        core.reset();
        ::close(listener);
    }
    int port = 0;
    int listener = -1;
    std::unique_ptr<maillab::net::EventCore> core;
};

}  // namespace

TEST_CASE("event loop: a throw ends only its connection; the loop and the others go on", "[events]") {
    {
        LoopbackCore loop(1, [](Connection&) { return std::make_unique<ThrowingProtocol>(); });
        const int port = loop.port;
        int bystander = connectTo(port);
        CHECK(exchange(bystander, "hello") == "hello");
        for (const char* command : {"throw", "nomem", "post", "deadline"}) {
            for (bool greeted : {false, true}) {  // the bytes read at the accept, or later on their own event
                INFO(command << (greeted ? " after a first exchange" : " at once"));
                int doomed = connectTo(port);
                if (greeted) CHECK(exchange(doomed, "hi") == "hi");
                CHECK(exchange(doomed, command).empty());  // closed, not answered
                ::close(doomed);
                CHECK(exchange(bystander, "still here") == "still here");
                int fresh = connectTo(port);  // and the loop still accepts
                CHECK(exchange(fresh, "new") == "new");
                ::close(fresh);
            }
        }
        ::close(bystander);
    }
}

TEST_CASE("worker pool: a job that throws is dropped, the workers go on", "[events]") {
    maillab::net::WorkerPool pool(1);
    REQUIRE(pool.run([] { throw std::runtime_error("a job's bug"); }));
    std::promise<int> after;
    REQUIRE(pool.run([&after] { after.set_value(447); }));
    auto result = after.get_future();
    REQUIRE(result.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
    CHECK(result.get() == 447);
}

namespace {
// Echoes, and "arm:N" sets the connection's deadline N ms from now (the default onDeadline closes it).
class DeadlineProtocol : public maillab::net::Protocol {
public:
    void onBytes(Connection& connection, const char* data, size_t size) override {
        std::string text(data, size);
        if (text.rfind("arm:", 0) == 0) connection.setDeadline(std::chrono::milliseconds(std::stoi(text.substr(4))));
        connection.send(text);
    }
};
}  // namespace

TEST_CASE("event loop: a deadline pushed later is kept, one pulled earlier is met", "[events]") {
    // A later deadline leaves the armed timer in place (arm() is called at every reply) and the timer
    // moves itself on when it fires: the connection must live to the new deadline, not the old one.
    {
        LoopbackCore loop(1, [](Connection&) { return std::make_unique<DeadlineProtocol>(); });
        int fd = connectTo(loop.port);
        CHECK(exchange(fd, "arm:150") == "arm:150");
        CHECK(exchange(fd, "arm:5000") == "arm:5000");  // pushed on before the first one fires
        ::usleep(400 * 1000);                           // past the first deadline
        CHECK(exchange(fd, "still open") == "still open");
        auto pulled = std::chrono::steady_clock::now();
        CHECK(exchange(fd, "arm:50") == "arm:50");  // pulled earlier than the armed timer (5 s)
        char byte;
        CHECK(::recv(fd, &byte, 1, 0) == 0);  // closed at that deadline
        CHECK(std::chrono::steady_clock::now() - pulled < std::chrono::seconds(3));
        ::close(fd);
    }
}

namespace {
// Echoes, noting which loop's thread served each read.
class ThreadNotingProtocol : public maillab::net::Protocol {
public:
    explicit ThreadNotingProtocol(std::mutex& mutex, std::map<std::thread::id, int>& served) : mutex_(mutex), served_(served) {}
    void onBytes(Connection& connection, const char* data, size_t size) override {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            ++served_[std::this_thread::get_id()];
        }
        connection.send(std::string(data, size));
    }

private:
    std::mutex& mutex_;
    std::map<std::thread::id, int>& served_;
};
}  // namespace

TEST_CASE("event loop: a burst of connections is spread over the loops", "[events]") {
    // Whichever loop is woken accepts the whole burst; each connection is then served by the loop
    // with the fewest (handed over through its wake-up), so no core's loop sits idle.
    std::mutex mutex;
    std::map<std::thread::id, int> served;
    {
        LoopbackCore loop(2, [&](Connection&) { return std::make_unique<ThreadNotingProtocol>(mutex, served); });
        std::vector<int> clients;
        for (int i = 0; i < 20; ++i) clients.push_back(connectTo(loop.port));  // all queued before any is served
        for (int fd : clients) CHECK(exchange(fd, "hi") == "hi");
        for (int fd : clients) ::close(fd);
    }
    std::lock_guard<std::mutex> lock(mutex);
    REQUIRE(served.size() == 2);
    int first = served.begin()->second, second = std::next(served.begin())->second;
    CHECK(first + second == 20);
    CHECK(std::abs(first - second) <= 2);
}
