// maillab-load: the lab's TLS load generator. A few threads, each driving many non-blocking
// connections with epoll, share one client SSL_CTX (TLS 1.3, no default CA store). Scenarios:
//   smtp       connect, handshake, banner, EHLO, AUTH PLAIN, MAIL, RCPT, DATA + body, 250, then QUIT
//              (a new connection per message) or RSET and the next message (--keep-open);
//              --tls implicit|starttls|off; --pipelining: where the EHLO reply offers PIPELINING,
//              RFC 2920 groups (AUTH PLAIN + MAIL + RCPT + DATA, then the content + QUIT or RSET)
//   https      keep-alive GETs of one path with Basic auth (--tls off for plain HTTP)
//   handshake  connect, TLS 1.3 handshake, close: the ceiling for anything over TLS
// Bounded by --count and --duration. Reports throughput, per-phase latency (p50/p90/p99/max) and
// errors by kind, as a table and as JSON (--json FILE), with a progress line while it runs.
#include "../../common/lab/password.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

struct Options {
    std::string scenario = "smtp";
    std::string host = "127.0.0.1";
    int port = 9000;
    std::vector<int> morePorts;  // --port A,B,...: connections go to each in turn (several instances, no balancer)
    std::string tls = "implicit";
    int connections = 1;
    int threads = 2;
    long count = 1000;
    double duration = 30;
    size_t size = 1024;
    bool keepOpen = false;
    bool pipelining = false;  // RFC 2920 groups where the server offers PIPELINING (as Postfix and msmtp send)
    bool resume = false;
    int idle = 0;
    int sources = 0;  // connect from this many loopback addresses (127.1.x.y), as many clients would
    std::string user, password, to, path = "/";
    std::string ca;
    std::string json;
    std::string label;
    bool quiet = false;
};

// Latency samples per phase, in microseconds.
struct Stats {
    std::map<std::string, std::vector<double>> phases;
    std::map<std::string, long> errors;
    long completed = 0;
    void merge(const Stats& other) {
        for (const auto& [k, v] : other.phases) phases[k].insert(phases[k].end(), v.begin(), v.end());
        for (const auto& [k, v] : other.errors) errors[k] += v;
        completed += other.completed;
    }
};

struct Shared {
    Options opt;
    SSL_CTX* ctx = nullptr;
    std::vector<sockaddr_in> addrs;  // one per port, taken in turn
    std::atomic<unsigned> nextAddr{0};
    std::string body;  // prebuilt, dot-stuffed, with the terminating ".\r\n"
    std::string authLine;
    std::atomic<long> started{0};
    std::atomic<long> completed{0};
    std::atomic<bool> stop{false};
    std::atomic<int> idleReady{0};
    std::atomic<unsigned> nextSource{0};
    Clock::time_point hardDeadline = Clock::time_point::max();
};

// One connection's life, as a small state machine driven by epoll events.
struct Conn {
    enum class Phase { Connecting, Handshake, Reading, Writing, Idle, Done };
    int fd = -1;
    SSL* ssl = nullptr;
    SSL_SESSION* session = nullptr;  // for --resume
    Phase phase = Phase::Done;
    bool idleSlot = false;
    bool tlsUp = false;
    bool startTlsDone = false;
    int step = 0;            // index into the SMTP script
    std::string out;         // bytes still to send
    size_t outPos = 0;
    std::string in;          // bytes received, not yet consumed
    Clock::time_point tStart, tPhase, tMessage;
    bool messageStarted = false;
    bool eof = false;
    unsigned long generation = 0;
    bool workTaken = false;  // a new connection per message took its unit of work when it started
    bool grouped = false;    // RFC 2920: this connection sends its commands in groups (the server offers it)
    uint32_t interest = 0;   // what epoll watches for it now (want() changes it only when it differs)
};

class Worker {
public:
    Worker(Shared& shared, int slots, int idleSlots) : s_(shared) {
        ep_ = epoll_create1(0);
        conns_.resize(static_cast<size_t>(slots + idleSlots));
        for (int i = 0; i < idleSlots; ++i) conns_[static_cast<size_t>(slots + i)].idleSlot = true;
    }
    ~Worker() {
        for (auto& c : conns_) close(c, false);
        ::close(ep_);
    }

    Stats run() {
        for (size_t i = 0; i < conns_.size(); ++i) startConnection(i);
        epoll_event events[256];
        while (active_ > 0) {
            int n = epoll_wait(ep_, events, 256, 100);
            for (int k = 0; k < n; ++k) drive(events[k].data.u64);
            if (!s_.stop) continue;
            // No new work: let messages in flight finish, then drop the idle connections. A server
            // that stops answering is cut off at the hard deadline.
            bool busy = false;
            for (const auto& c : conns_) busy = busy || (c.phase != Conn::Phase::Done && !c.idleSlot);
            if (!busy || Clock::now() > s_.hardDeadline)
                for (auto& c : conns_)
                    if (c.phase != Conn::Phase::Done) {
                        if (c.phase != Conn::Phase::Idle) stats_.errors["cut-off-at-deadline"]++;
                        close(c, c.phase == Conn::Phase::Idle);
                    }
        }
        return stats_;
    }

private:
    bool takeWork() {
        if (s_.stop) return false;
        long n = ++s_.started;
        if (n > s_.opt.count) {
            s_.stop = true;
            return false;
        }
        return true;
    }

    void error(Conn& c, const std::string& kind) {
        stats_.errors[kind]++;
        close(c, false);
    }

    void close(Conn& c, bool clean) {
        if (c.phase == Conn::Phase::Done && c.fd < 0) return;
        if (c.ssl) {
            if (clean && c.tlsUp) SSL_shutdown(c.ssl);  // close_notify
            if (s_.opt.resume) {
                if (c.session) SSL_SESSION_free(c.session);
                c.session = SSL_get1_session(c.ssl);
            }
            SSL_free(c.ssl);
            c.ssl = nullptr;
        }
        if (c.fd >= 0) {
            epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
            ::close(c.fd);
            c.fd = -1;
        }
        if (c.phase != Conn::Phase::Done) --active_;
        c.phase = Conn::Phase::Done;
    }

    // The generator's own system calls are taken from the server's cores: an epoll_ctl only when the
    // interest changes (after each request it stays EPOLLIN), not one per request.
    void want(Conn& c, size_t index, bool write) {
        uint32_t events = write ? EPOLLOUT : EPOLLIN;
        if (c.interest == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = index;
        epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
        c.interest = events;
    }

    void startConnection(size_t index) {
        Conn& c = conns_[index];
        if (!c.idleSlot && !s_.opt.keepOpen && !takeWork()) return;
        if (!c.idleSlot && s_.opt.keepOpen && s_.stop) return;
        c.workTaken = !c.idleSlot && !s_.opt.keepOpen;
        ++c.generation;
        c.eof = false;
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (s_.opt.sources > 0) {
            // The servers limit connections per address: many clients come from many addresses.
            unsigned i = s_.nextSource++ % static_cast<unsigned>(s_.opt.sources);
            sockaddr_in from{};
            from.sin_family = AF_INET;
            from.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | ((i / 250) << 8) | (i % 250 + 1));
            if (::bind(c.fd, reinterpret_cast<const sockaddr*>(&from), sizeof from) != 0) error(c, "bind");
        }
        c.in.clear();
        c.out.clear();
        c.outPos = 0;
        c.step = 0;
        c.tlsUp = false;
        c.startTlsDone = false;
        c.grouped = false;
        c.messageStarted = false;
        c.tStart = c.tPhase = Clock::now();
        ++active_;
        c.phase = Conn::Phase::Connecting;
        const sockaddr_in& to = s_.addrs[s_.nextAddr++ % s_.addrs.size()];
        int rc = ::connect(c.fd, reinterpret_cast<const sockaddr*>(&to), sizeof to);
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = index;
        epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &ev);
        c.interest = EPOLLOUT;
        if (rc < 0 && errno != EINPROGRESS) error(c, "connect");
    }

    void finishConnection(size_t index, bool clean) {
        Conn& c = conns_[index];
        close(c, clean);
        if (!c.idleSlot && !s_.stop) startConnection(index);
    }

    void beginTls(Conn& c, size_t index) {
        c.ssl = SSL_new(s_.ctx);
        SSL_set_fd(c.ssl, c.fd);
        SSL_set_tlsext_host_name(c.ssl, "localhost");
        SSL_set1_host(c.ssl, "localhost");
        if (c.session) SSL_set_session(c.ssl, c.session);
        c.phase = Conn::Phase::Handshake;
        c.tPhase = Clock::now();
        handshake(c, index);
    }

    void handshake(Conn& c, size_t index) {
        int rc = SSL_connect(c.ssl);
        if (rc == 1) {
            c.tlsUp = true;
            stats_.phases["handshake"].push_back(since(c.tPhase));
            if (SSL_session_reused(c.ssl)) stats_.errors["(info) resumed"]++;
            afterHandshake(c, index);
            return;
        }
        int err = SSL_get_error(c.ssl, rc);
        if (err == SSL_ERROR_WANT_READ) want(c, index, false);
        else if (err == SSL_ERROR_WANT_WRITE) want(c, index, true);
        else {
            ERR_clear_error();
            error(c, "tls-handshake");
            if (!c.idleSlot && !s_.stop) startConnection(index);
        }
    }

    void afterHandshake(Conn& c, size_t index) {
        if (s_.opt.scenario == "handshake") {
            s_.completed++;
            stats_.completed++;
            stats_.phases["session"].push_back(since(c.tStart));
            finishConnection(index, true);
            return;
        }
        if (c.startTlsDone) {
            // RFC 3207: say EHLO again inside TLS.
            send(c, index, "EHLO load\r\n");
            return;
        }
        if (s_.opt.scenario == "https") {
            if (c.idleSlot) return idle(c, index);
            sendRequest(c, index);
            return;
        }
        c.phase = Conn::Phase::Reading;  // the banner
        c.tPhase = Clock::now();
        awaitRead(c, index);
    }

    void idle(Conn& c, size_t index) {
        c.phase = Conn::Phase::Idle;
        ++s_.idleReady;
        awaitRead(c, index);
    }

    // Waits for the server's next bytes, or takes them at once when OpenSSL has them buffered already
    // (read-ahead: the socket is then empty, and epoll would never say so).
    void awaitRead(Conn& c, size_t index) {
        want(c, index, false);
        if (c.tlsUp && SSL_has_pending(c.ssl)) readable(c, index);
    }

    void sendRequest(Conn& c, size_t index) {
        bool taken = c.workTaken;
        c.workTaken = false;
        if (!taken && !takeWork()) return finishConnection(index, true);
        c.tMessage = Clock::now();
        send(c, index, "GET " + s_.opt.path + " HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic " + s_.authLine +
                           "\r\nUser-Agent: maillab-load\r\n\r\n");
    }

    void send(Conn& c, size_t index, const std::string& data) {
        c.out = data;
        c.outPos = 0;
        c.phase = Conn::Phase::Writing;
        flush(c, index);
    }

    void flush(Conn& c, size_t index) {
        while (c.outPos < c.out.size()) {
            int n;
            if (c.tlsUp) {
                n = SSL_write(c.ssl, c.out.data() + c.outPos, static_cast<int>(c.out.size() - c.outPos));
                if (n <= 0) {
                    int err = SSL_get_error(c.ssl, n);
                    if (err == SSL_ERROR_WANT_WRITE) return want(c, index, true);
                    if (err == SSL_ERROR_WANT_READ) return want(c, index, false);
                    return lost(c, index, "write");
                }
            } else {
                n = static_cast<int>(::send(c.fd, c.out.data() + c.outPos, c.out.size() - c.outPos, MSG_NOSIGNAL));
                if (n < 0) {
                    if (errno == EAGAIN) return want(c, index, true);
                    return lost(c, index, "write");
                }
            }
            c.outPos += static_cast<size_t>(n);
        }
        c.phase = Conn::Phase::Reading;
        awaitRead(c, index);  // a reply may already be buffered inside OpenSSL
    }

    void lost(Conn& c, size_t index, const std::string& kind) {
        error(c, kind);
        if (!c.idleSlot && !s_.stop) startConnection(index);
    }

    // Reads what is there. Sets c.eof when the server closed (after its data, which is still
    // processed: a 221 arrives just before the close). False when the connection was lost.
    bool receive(Conn& c, size_t index) {
        char buf[16384];
        for (;;) {
            int n;
            if (c.tlsUp) {
                n = SSL_read(c.ssl, buf, sizeof buf);
                if (n <= 0) {
                    int err = SSL_get_error(c.ssl, n);
                    // Waiting to read again: back to EPOLLIN, also after a WANT_WRITE (a level-triggered
                    // EPOLLOUT left armed would wake this connection without end while it waits).
                    if (err == SSL_ERROR_WANT_READ) {
                        want(c, index, false);
                        return true;
                    }
                    if (err == SSL_ERROR_WANT_WRITE) {
                        want(c, index, true);
                        return true;
                    }
                    ERR_clear_error();
                    if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL) {
                        c.eof = true;
                        return true;
                    }
                    lost(c, index, "read");
                    return false;
                }
            } else {
                n = static_cast<int>(::recv(c.fd, buf, sizeof buf, 0));
                if (n < 0 && errno == EAGAIN) return true;
                if (n == 0) {
                    c.eof = true;
                    return true;
                }
                if (n < 0) {
                    lost(c, index, "read");
                    return false;
                }
            }
            c.in.append(buf, static_cast<size_t>(n));
            // Nothing more inside OpenSSL: epoll (level-triggered) says when more arrives, so no
            // read is spent only to hear EAGAIN after each reply.
            if (c.tlsUp && !SSL_has_pending(c.ssl)) {
                want(c, index, false);
                return true;
            }
        }
    }

    // A complete SMTP reply at the front of c.in: its code, or 0 when incomplete.
    static int takeReply(Conn& c, std::string* text = nullptr) {
        size_t pos = 0;
        for (;;) {
            size_t eol = c.in.find("\r\n", pos);
            if (eol == std::string::npos) return 0;
            if (eol - pos >= 4 && c.in[pos + 3] == '-') {
                pos = eol + 2;
                continue;
            }
            int code = std::atoi(c.in.substr(pos, 3).c_str());
            if (text) text->assign(c.in, 0, eol + 2);
            c.in.erase(0, eol + 2);
            return code;
        }
    }

    void readable(Conn& c, size_t index) {
        if (!receive(c, index)) return;
        if (c.phase == Conn::Phase::Idle) {
            c.in.clear();  // idle connections ignore what arrives (a timeout 421)
            if (c.eof) lost(c, index, "idle-closed-by-server");
            return;
        }
        bool eof = c.eof;
        c.eof = false;
        unsigned long generation = c.generation;
        if (s_.opt.scenario == "https") {
            httpResponse(c, index);
        } else {
            for (;;) {
                std::string text;
                int code = takeReply(c, c.step == 1 ? &text : nullptr);  // the EHLO reply's text: its keywords
                if (code == 0 || !smtpReply(c, index, code, text)) break;
            }
        }
        if (!eof || c.generation != generation || c.phase == Conn::Phase::Done) return;
        if (s_.opt.scenario == "https" && c.in.empty()) {
            finishConnection(index, false);  // keep-alive ended by the server between responses: reconnect
            return;
        }
        lost(c, index, "closed-by-server");  // closed while a reply was still awaited
    }

    void httpResponse(Conn& c, size_t index) {
        size_t end = c.in.find("\r\n\r\n");
        if (end == std::string::npos) return;
        size_t length = 0;
        std::string head = c.in.substr(0, end);
        for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        size_t cl = head.find("content-length:");
        if (cl != std::string::npos) length = std::strtoul(head.c_str() + cl + 15, nullptr, 10);
        if (c.in.size() < end + 4 + length) return;
        int status = std::atoi(c.in.substr(9, 3).c_str());
        c.in.erase(0, end + 4 + length);
        stats_.phases["request"].push_back(since(c.tMessage));
        if (status != 200 && status != 304) stats_.errors["http " + std::to_string(status)]++;
        else {
            s_.completed++;
            stats_.completed++;
        }
        sendRequest(c, index);
    }

    // The SMTP script. Returns false when the connection is gone or waiting on a write; true when the
    // next reply of a group (RFC 2920) may follow in what was read.
    bool smtpReply(Conn& c, size_t index, int code, const std::string& text) {
        const Options& o = s_.opt;
        auto expect = [&](int wanted, const char* what) {
            if (code == wanted) return true;
            stats_.errors[std::string(what) + " " + std::to_string(code)]++;
            close(c, false);
            if (!c.idleSlot && !s_.stop) startConnection(index);
            return false;
        };
        switch (c.step++) {
            case 0:  // banner
                if (!expect(220, "banner")) return false;
                stats_.phases["banner"].push_back(since(c.tPhase));
                send(c, index, "EHLO load\r\n");
                return false;
            case 1:  // EHLO
                if (!expect(250, "ehlo")) return false;
                // RFC 2920: groups only where the server says it takes them (a line "250-PIPELINING").
                c.grouped = o.pipelining && (text.find("-PIPELINING\r\n") != std::string::npos ||
                                             text.find(" PIPELINING\r\n") != std::string::npos);
                // Connections that sent groups (counted once: after STARTTLS's second EHLO, not its first).
                if (c.grouped && (o.tls != "starttls" || c.startTlsDone)) stats_.errors["(info) pipelined"]++;
                if (o.tls == "starttls" && !c.startTlsDone) {
                    send(c, index, "STARTTLS\r\n");
                    return false;
                }
                c.step = 3;
                return smtpAfterEhlo(c, index);
            case 2:  // STARTTLS
                if (!expect(220, "starttls")) return false;
                c.startTlsDone = true;
                c.step = 1;
                beginTls(c, index);
                return false;
            case 4:  // AUTH
                if (!expect(235, "auth")) return false;
                if (c.messageStarted) return true;  // MAIL, RCPT and DATA went with it
                if (c.idleSlot) {
                    idle(c, index);
                    return false;
                }
                return startMessage(c, index);
            case 5:  // MAIL
                if (!expect(250, "mail")) return false;
                if (c.grouped) return true;
                send(c, index, "RCPT TO:<" + o.to + ">\r\n");
                return false;
            case 6:  // RCPT
                if (!expect(250, "rcpt")) return false;
                if (c.grouped) return true;
                send(c, index, "DATA\r\n");
                return false;
            case 7:  // DATA
                if (!expect(354, "data")) return false;
                c.tPhase = Clock::now();
                // RFC 2920 3.1: the content may open a group; QUIT or RSET follows it in the same one.
                send(c, index, c.grouped ? s_.body + (o.keepOpen ? "RSET\r\n" : "QUIT\r\n") : s_.body);
                return false;
            case 8:  // the message's 250
                if (!expect(250, "message")) return false;
                stats_.phases["data-to-250"].push_back(since(c.tPhase));
                stats_.phases["message"].push_back(since(c.tMessage));
                s_.completed++;
                stats_.completed++;
                c.messageStarted = false;
                if (c.grouped) return true;  // the RSET or QUIT went with the content
                if (o.keepOpen) {
                    send(c, index, "RSET\r\n");
                    return false;
                }
                send(c, index, "QUIT\r\n");
                return false;
            case 9:  // RSET (kept open) or QUIT
                if (o.keepOpen) {
                    if (!expect(250, "rset")) return false;
                    return startMessage(c, index);
                }
                stats_.phases["session"].push_back(since(c.tStart));
                finishConnection(index, true);
                return false;
        }
        return false;
    }

    bool smtpAfterEhlo(Conn& c, size_t index) {
        c.step = 4;
        // RFC 4954 4: AUTH ends its group, except an initial response of a one-round-trip mechanism
        // without a security layer (PLAIN): MAIL, RCPT and DATA may follow it.
        if (c.grouped && !c.idleSlot && (c.workTaken || s_.opt.keepOpen)) {
            bool taken = c.workTaken;
            c.workTaken = false;
            if (taken || takeWork()) {
                c.messageStarted = true;
                c.tMessage = Clock::now();
                send(c, index, s_.authLine + envelope());
                return false;
            }
        }
        send(c, index, s_.authLine);
        return false;
    }

    // MAIL, RCPT and DATA: one group where the server takes them (RFC 2920), else MAIL alone.
    std::string mailLine() const { return "MAIL FROM:<" + s_.opt.user + "> SIZE=" + std::to_string(s_.body.size()) + "\r\n"; }
    std::string envelope() const { return mailLine() + "RCPT TO:<" + s_.opt.to + ">\r\nDATA\r\n"; }

    bool startMessage(Conn& c, size_t index) {
        bool taken = c.workTaken;
        c.workTaken = false;
        if (!taken && !takeWork()) {
            c.step = 10;
            send(c, index, "QUIT\r\n");
            finishConnection(index, true);
            return false;
        }
        c.step = 5;
        c.tMessage = Clock::now();
        if (c.grouped) {
            c.messageStarted = true;
            send(c, index, envelope());
            return false;
        }
        send(c, index, mailLine());
        return false;
    }

    void drive(uint64_t index) {
        Conn& c = conns_[index];
        switch (c.phase) {
            case Conn::Phase::Connecting: {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) return lost(c, index, "connect");
                stats_.phases["connect"].push_back(since(c.tStart));
                if (s_.opt.tls == "implicit" || s_.opt.scenario == "handshake") return beginTls(c, index);
                c.phase = Conn::Phase::Reading;
                c.tPhase = Clock::now();
                if (s_.opt.scenario == "https") {
                    if (c.idleSlot) return idle(c, index);
                    return sendRequest(c, index);
                }
                return want(c, index, false);
            }
            case Conn::Phase::Handshake: return handshake(c, index);
            case Conn::Phase::Writing: return flush(c, index);
            case Conn::Phase::Reading:
            case Conn::Phase::Idle: return readable(c, index);
            case Conn::Phase::Done: return;
        }
    }

    Shared& s_;
    int ep_;
    int active_ = 0;
    std::vector<Conn> conns_;
    Stats stats_;
};

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    size_t i = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) ;
    return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
}

void usage() {
    std::cerr << "usage: maillab-load --scenario smtp|https|handshake --port P[,P2...] [--host H] [--tls implicit|starttls|off]\n"
                 "       [--connections C] [--threads T] [--count N] [--duration S] [--size BYTES] [--keep-open]\n"
                 "       [--pipelining]\n"
                 "       [--resume] [--idle K] [--sources N] [--user U --password PW --to RCPT] [--path /p] [--ca FILE]\n"
                 "       [--json FILE] [--label TEXT] [--quiet]\n";
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--scenario") o.scenario = next();
        else if (a == "--host") o.host = next();
        else if (a == "--port") {
            std::string list = next();
            o.port = std::atoi(list.c_str());
            for (size_t comma = list.find(','); comma != std::string::npos; comma = list.find(',', comma + 1))
                o.morePorts.push_back(std::atoi(list.c_str() + comma + 1));
        }
        else if (a == "--tls") o.tls = next();
        else if (a == "--connections") o.connections = std::atoi(next().c_str());
        else if (a == "--threads") o.threads = std::atoi(next().c_str());
        else if (a == "--count") o.count = std::atol(next().c_str());
        else if (a == "--duration") o.duration = std::atof(next().c_str());
        else if (a == "--size") o.size = std::strtoul(next().c_str(), nullptr, 10);
        else if (a == "--keep-open") o.keepOpen = true;
        else if (a == "--pipelining") o.pipelining = true;
        else if (a == "--resume") o.resume = true;
        else if (a == "--idle") o.idle = std::atoi(next().c_str());
        else if (a == "--sources") o.sources = std::atoi(next().c_str());
        else if (a == "--user") o.user = next();
        else if (a == "--password") o.password = next();
        else if (a == "--to") o.to = next();
        else if (a == "--path") o.path = next();
        else if (a == "--ca") o.ca = next();
        else if (a == "--json") o.json = next();
        else if (a == "--label") o.label = next();
        else if (a == "--quiet") o.quiet = true;
        else {
            usage();
            return 2;
        }
    }
    if (o.scenario != "smtp" && o.scenario != "https" && o.scenario != "handshake") {
        usage();
        return 2;
    }
    if (o.to.empty()) o.to = o.user;
    rlimit nofile{};
    getrlimit(RLIMIT_NOFILE, &nofile);
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);

    Shared s;
    s.opt = o;
    s.ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(s.ctx, TLS1_3_VERSION);
    SSL_CTX_set1_groups_list(s.ctx, "X25519:P-256");
    // A record in one read, not a read of its 5-octet header and another of the rest.
    SSL_CTX_set_read_ahead(s.ctx, 1);
    if (!o.ca.empty()) {
        if (SSL_CTX_load_verify_locations(s.ctx, o.ca.c_str(), nullptr) != 1) {
            std::cerr << "maillab-load: cannot load " << o.ca << "\n";
            return 2;
        }
        SSL_CTX_set_verify(s.ctx, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(s.ctx, SSL_VERIFY_NONE, nullptr);  // measuring, not trusting: no CA store at all
    }
    if (o.resume) SSL_CTX_set_session_cache_mode(s.ctx, SSL_SESS_CACHE_CLIENT);
    std::vector<int> ports{o.port};
    ports.insert(ports.end(), o.morePorts.begin(), o.morePorts.end());
    for (int port : ports) {
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(port));
        inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr);
        s.addrs.push_back(addr);
    }
    if (o.scenario == "smtp") {
        s.authLine = "AUTH PLAIN " +
                     maillab::base64Encode(std::string("\0", 1) + o.user + std::string("\0", 1) + o.password) + "\r\n";
        std::string text = "From: <" + o.user + ">\r\nTo: <" + o.to + ">\r\nSubject: load\r\n\r\n";
        std::string line = "The quick brown fox jumps over the lazy dog; maillab load line.";
        while (text.size() < o.size) text += (text.size() % 7 == 0 ? "." : "") + line + "\r\n";  // some lines dot-stuffed
        std::string stuffed;
        size_t pos = 0;
        while (pos < text.size()) {
            size_t eol = text.find("\r\n", pos);
            std::string l = text.substr(pos, eol - pos);
            if (!l.empty() && l[0] == '.') stuffed += '.';
            stuffed += l + "\r\n";
            pos = eol + 2;
        }
        s.body = stuffed + ".\r\n";
    } else if (o.scenario == "https") {
        s.authLine = maillab::base64Encode(o.user + ":" + o.password);
    }

    auto t0 = Clock::now();
    std::vector<Stats> results(static_cast<size_t>(o.threads));
    std::vector<std::thread> threads;
    for (int t = 0; t < o.threads; ++t) {
        int slots = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
        int idle = o.idle / o.threads + (t < o.idle % o.threads ? 1 : 0);
        threads.emplace_back([&, t, slots, idle] {
            Worker w(s, slots, idle);
            results[static_cast<size_t>(t)] = w.run();
        });
    }
    s.hardDeadline = t0 + std::chrono::milliseconds(static_cast<long>(o.duration * 1000) + 10000);
    std::atomic<bool> finished{false};
    std::thread progress([&] {
        while (!finished) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
            if (elapsed >= o.duration) s.stop = true;
            long done = s.completed.load();
            if (!o.quiet)
                std::fprintf(stderr, "\r  %s %.1fs: %ld done, %.0f/s   ", o.label.c_str(), elapsed, done, done / std::max(elapsed, 1e-9));
        }
    });
    for (auto& th : threads) th.join();
    finished = true;
    progress.join();
    double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!o.quiet) std::fprintf(stderr, "\r%80s\r", "");

    Stats all;
    for (auto& r : results) all.merge(r);
    double rate = static_cast<double>(all.completed) / elapsed;
    const char* unit = o.scenario == "smtp" ? "messages" : o.scenario == "https" ? "requests" : "handshakes";
    std::ostringstream json;
    json << "{\"label\":\"" << o.label << "\",\"scenario\":\"" << o.scenario << "\",\"tls\":\"" << o.tls
         << "\",\"connections\":" << o.connections << ",\"idle\":" << o.idle << ",\"keep_open\":" << (o.keepOpen ? "true" : "false") << ",\"pipelining\":" << (o.pipelining ? "true" : "false")
         << ",\"size\":" << o.size << ",\"completed\":" << all.completed << ",\"seconds\":" << elapsed
         << ",\"per_second\":" << rate << ",\"latency_us\":{";
    std::printf("%s: %ld %s in %.2f s = %.1f/s (%d connections%s)\n", o.label.empty() ? o.scenario.c_str() : o.label.c_str(),
                all.completed, unit, elapsed, rate, o.connections, o.keepOpen ? ", kept open" : "");
    std::printf("  %-14s %10s %10s %10s %10s %8s\n", "phase (ms)", "p50", "p90", "p99", "max", "n");
    bool first = true;
    for (auto& [phase, v] : all.phases) {
        std::sort(v.begin(), v.end());
        double p50 = percentile(v, 50), p90 = percentile(v, 90), p99 = percentile(v, 99), mx = v.empty() ? 0 : v.back();
        std::printf("  %-14s %10.3f %10.3f %10.3f %10.3f %8zu\n", phase.c_str(), p50 / 1000, p90 / 1000, p99 / 1000, mx / 1000, v.size());
        json << (first ? "" : ",") << "\"" << phase << "\":{\"p50\":" << p50 << ",\"p90\":" << p90 << ",\"p99\":" << p99
             << ",\"max\":" << mx << ",\"n\":" << v.size() << "}";
        first = false;
    }
    json << "},\"errors\":{";
    first = true;
    for (const auto& [kind, n] : all.errors) {
        if (kind.rfind("(info)", 0) != 0) std::printf("  error %s: %ld\n", kind.c_str(), n);
        else std::printf("  %s: %ld\n", kind.c_str() + 7, n);
        json << (first ? "" : ",") << "\"" << kind << "\":" << n;
        first = false;
    }
    json << "}}";
    if (!o.json.empty()) {
        std::ofstream f(o.json, std::ios::app);
        f << json.str() << "\n";
    }
    SSL_CTX_free(s.ctx);
    long realErrors = 0;
    for (const auto& [kind, n] : all.errors)
        if (kind.rfind("(info)", 0) != 0) realErrors += n;
    return all.completed > 0 && realErrors == 0 ? 0 : 1;
}
