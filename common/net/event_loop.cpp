// The event-loop core: see event_loop.h. Level-triggered epoll, one descriptor per connection
// watched for reading (and for writing only while a write or handshake waits for room); OpenSSL reads
// the raw descriptor with read-ahead, so a TLS record costs one read instead of two, and writes its
// records to a buffer of the connection's (wire_) that one write empties.
#include "event_loop.h"

#include "tls.h"

#include <openssl/err.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sysexits.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>

namespace maillab::net {

namespace {

constexpr size_t kReadBytes = 16 * 1024 + 512;  // one TLS record's plaintext (RFC 8446 5.1: 2^14) and then some
constexpr int kMaxEvents = 256;
constexpr int kAcceptsPerWake = 32;  // then the other loops (and this loop's connections) get a turn
constexpr size_t kPeekBytes = 64;
constexpr std::chrono::milliseconds kListenerPause{100};  // out of descriptors: accept again after this
// A drained answer's buffer is kept for the next one up to this size; a larger one (a big message's
// body, moved in by send) is freed: idle keep-alive connections must not each hold their last answer.
constexpr size_t kKeptOutputBytes = 64 * 1024;
// Records made ahead of the socket at most (a large answer is made into records as they leave).
constexpr size_t kWireBytes = 64 * 1024;
// A written-out wire buffer is kept up to this size (an idle connection holds no more).
constexpr size_t kKeptWireBytes = 16 * 1024;
// epoll_event.data: a connection's address (even: aligned), or an odd tag: the wake-up descriptor, a listener.
constexpr uint64_t kWakeTag = 1;
uint64_t listenerTag(size_t index) { return 3 + 2 * index; }

// The reason OpenSSL gives for the error it just reported, and the error queue emptied (the next
// SSL call on this thread must start from an empty queue).
// `sysError`: errno as the failed SSL call left it (SSL_ERROR_SYSCALL: the socket's own error; 0 when
// the client just closed), saved before anything else can change it.
std::string tlsError(int sslError, int sysError = 0) {
    unsigned long code = ERR_get_error();
    std::string reason;
    if (code != 0) {
        char text[256];
        ERR_error_string_n(code, text, sizeof text);
        reason = text;
    } else if (sslError == SSL_ERROR_SYSCALL) {
        reason = sysError != 0 ? std::strerror(sysError) : "connection closed without close_notify";
    } else {
        reason = "TLS error " + std::to_string(sslError);
    }
    ERR_clear_error();
    return reason;
}

// The write BIO of every TLS connection: OpenSSL's records are appended to the connection's wire_
// (BIO data), which Connection::pushWire writes to the socket. Flushes are no-ops: OpenSSL flushes
// after each handshake flight and alert, and each was a write and a TCP segment of its own.
int wireWrite(BIO* bio, const char* data, int size) {
    if (size <= 0) return 0;
    try {
        static_cast<std::string*>(BIO_get_data(bio))->append(data, static_cast<size_t>(size));
    } catch (...) {
        return -1;  // no exception through OpenSSL's frames: the write fails, and the connection with it
    }
    return size;
}
long wireCtrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }
int wireCreate(BIO* bio) {
    BIO_set_init(bio, 1);
    return 1;
}
BIO_METHOD* wireMethod() {
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "maillab wire");
        if (m) {
            BIO_meth_set_write(m, wireWrite);
            BIO_meth_set_ctrl(m, wireCtrl);
            BIO_meth_set_create(m, wireCreate);
        }
        return m;
    }();
    return method;
}

// "host" and "host:port" ("[v6]:port") of a socket address, as Poco's SocketAddress writes them.
void describe(const sockaddr_storage& address, std::string& host, std::string& hostPort) {
    char text[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (address.ss_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(&address);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
        port = ntohs(in->sin_port);
        host = text;
        hostPort = host + ":" + std::to_string(port);
    } else {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
        port = ntohs(in6->sin6_port);
        host = text;
        hostPort = "[" + host + "]:" + std::to_string(port);
    }
}

}  // namespace

void Protocol::onDeadline(Connection& connection) { connection.close("deadline"); }

// ---- Connection ---------------------------------------------------------------------------------

Connection::Connection(EventLoop& loop, int fd, uint64_t id) : loop_(loop), fd_(fd), id_(id) {}

Connection::~Connection() {
    protocol_.reset();  // its limiter slot leaves the waiting list before the descriptor can be reused
    if (ssl_) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
}

void Connection::send(std::string bytes, bool last) {
    if (state_ != State::Open || closeWhenSent_) return;
    if (out_.empty()) {
        out_ = std::move(bytes);
        outSent_ = 0;
    } else {
        out_ += bytes;
    }
    if (last) closeWhenSent_ = true;
    flush();
}

void Connection::closeAfterSend() {
    if (state_ == State::Closed || state_ == State::Lingering) return;
    closeWhenSent_ = true;
    if (bytesQueued() == 0) flush();
}

void Connection::close(const std::string& reason) {
    if (state_ == State::Closed) return;
    Ending ending;
    ending.phase = state_ == State::Proxy ? Phase::Proxy
                   : state_ == State::ClearTextCheck ? Phase::ClearTextCheck
                   : state_ == State::Handshake ? Phase::Handshake
                                                : Phase::Open;
    ending.reason = reason;
    ending.deadline = deadlinePassed_;
    finish(ending);
}

void Connection::setDeadline(std::chrono::milliseconds within) {
    if (state_ == State::Closed) return;
    loop_.arm(*this, Clock::now() + within);
}

void Connection::clearDeadline() { loop_.disarm(*this); }

void Connection::pauseReading() {
    if (paused_) return;
    paused_ = true;
    readInterestKept_ = true;  // until a read arrives while paused (onEvents)
    updateInterest();
}

void Connection::resumeReading() {
    if (!paused_) return;
    paused_ = false;
    readInterestKept_ = false;
    updateInterest();
    // OpenSSL may hold bytes already read from the socket: epoll would not say so.
    if (state_ == State::Open && ssl_ && SSL_has_pending(ssl_)) readTls();
}

void Connection::updateInterest() {
    if (state_ == State::Closed) return;
    uint32_t events = 0;
    if (!paused_ || readInterestKept_ || state_ != State::Open || writeBlockedOnRead_) events |= EPOLLIN;
    if ((wantWrite_ && !writeBlockedOnRead_) || readBlockedOnWrite_) events |= EPOLLOUT;
    if (events != interest_) {
        interest_ = events;
        loop_.watch(*this, events);
    }
}

void Connection::onEvents(uint32_t events) {
    switch (state_) {
    case State::Proxy:
        readProxy();
        break;
    case State::ClearTextCheck:
        checkClearText();
        break;
    case State::Handshake:
        handshake();
        break;
    case State::Open:
        if (wantWrite_ && (events & ((writeBlockedOnRead_ ? EPOLLIN : EPOLLOUT) | EPOLLERR | EPOLLHUP))) flush();
        if (state_ == State::Open && paused_ && !wantWrite_ && !readBlockedOnWrite_ && (events & (EPOLLERR | EPOLLHUP))) {
            // Reading is paused (a worker has the request), but epoll reports a hang-up or an error
            // whatever we watch, each time we wait: the client is gone, and no answer can reach it.
            // Ended now, instead of spinning until the worker's answer (which then finds no connection).
            int error = 0;
            socklen_t length = sizeof error;
            ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &error, &length);
            return finish(Ending{Phase::Open, error != 0 ? std::strerror(error) : "", false, error == 0});
        }
        if (state_ == State::Open && paused_ && readInterestKept_ && (events & EPOLLIN)) {
            // Bytes (or a FIN) while paused: stop watching them, level-triggered epoll would repeat it.
            readInterestKept_ = false;
            updateInterest();
        }
        if (state_ == State::Open && (readBlockedOnWrite_ || (!paused_ && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))))) {
            readBlockedOnWrite_ = false;
            updateInterest();  // else EPOLLOUT stays armed on a writable socket: a busy loop
            readTls();
        }
        break;
    case State::Lingering: {
        if (wantWrite_) {
            flush();
            if (state_ != State::Lingering || wantWrite_) break;
        }
        char buf[4096];
        ssize_t n;
        while ((n = ::recv(fd_, buf, sizeof buf, 0)) > 0) {
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) finish(Ending{Phase::Open, "", false, true});
        break;
    }
    case State::Closed:
        break;
    }
}

// PROXY header (proxy_protocol.h): read exactly what the parser says it needs at least, so the
// client's own bytes (its ClientHello) stay in the socket for OpenSSL.
void Connection::readProxy() {
    const proxy::Settings& settings = loop_.settings().proxy;
    for (;;) {
        proxy::Result result = proxy::parse(proxyBytes_.data(), proxyBytes_.size(), settings.maxBytes);
        if (result.status == proxy::Status::Invalid) return proxyFailed(result.error);
        if (result.status == proxy::Status::Complete) {
            const proxy::Header& header = result.header;
            if (header.hasAddresses && !header.local) {
                peer_.via = peer_.address;
                peer_.host = header.sourceAddress;
                bool v6 = header.sourceAddress.find(':') != std::string::npos;
                peer_.address = (v6 ? "[" + header.sourceAddress + "]" : header.sourceAddress) + ":" +
                                std::to_string(header.sourcePort);
            }
            clearDeadline();
            return startTls();
        }
        size_t want = std::max(result.needed, proxyBytes_.size() + 1) - proxyBytes_.size();
        char buf[512];
        ssize_t n = ::recv(fd_, buf, std::min(want, sizeof buf), 0);
        if (n > 0) {
            proxyBytes_.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        return proxyFailed(n == 0 ? "closed before its PROXY header was complete" : std::strerror(errno));
    }
}

void Connection::proxyFailed(const std::string& error) {
    peer_.ok = false;
    peer_.error = error;
    close("PROXY header: " + error);
    if (loop_.settings().proxyRefused) loop_.settings().proxyRefused(peer_);
}

// After the PROXY header (or at once): the server's protocol, then TLS or the clear-text check.
void Connection::startTls() {
    const CoreSettings& settings = loop_.settings();
    acceptedAt_ = Clock::now();
    loop_.arm(*this, acceptedAt_ + settings.handshakeTimeout);
    protocol_ = settings.open ? settings.open(*this) : nullptr;
    if (!protocol_) return close("refused");
    if (state_ == State::Closed) return;
    if (!settings.tls) {
        state_ = State::Open;
        clearDeadline();
        updateInterest();
        protocol_->onReady(*this);
        if (state_ == State::Open) readTls();
        return;
    }
    state_ = settings.clearText ? State::ClearTextCheck : State::Handshake;
    if (state_ == State::ClearTextCheck && settings.silenceHint.count() > 0 && settings.silenceHint < settings.handshakeTimeout &&
        armed_ && deadline_ == acceptedAt_ + settings.handshakeTimeout) {
        loop_.arm(*this, acceptedAt_ + settings.silenceHint);  // the factory left the handshake's deadline: hint first
        silenceHintArmed_ = true;
    }
    if (!attachTls(settings.tls)) return close("SSL_new: " + tlsError(SSL_ERROR_SSL));
    if (state_ == State::ClearTextCheck) checkClearText();
    else handshake();
}

// Plain text on the TLS port: a TLS client's first byte is 0x16 (RFC 8446 5.1); it is only peeked.
// Other bytes are nobody's but ours: they are read (so no busy loop on a peeked descriptor).
void Connection::checkClearText() {
    char buf[kPeekBytes];
    if (firstBytes_.empty()) {
        ssize_t n = ::recv(fd_, buf, 1, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        if (n <= 0) return finish(Ending{Phase::ClearTextCheck, n == 0 ? "" : std::strerror(errno), false, n == 0});
        if (static_cast<unsigned char>(buf[0]) == 0x16) {
            if (silenceHintArmed_) {
                silenceHintArmed_ = false;
                loop_.arm(*this, acceptedAt_ + loop_.settings().handshakeTimeout);
            }
            state_ = State::Handshake;
            return handshake();
        }
    }
    for (;;) {
        ssize_t n = ::recv(fd_, buf, kPeekBytes - std::min(kPeekBytes, firstBytes_.size()), 0);
        if (n > 0) firstBytes_.append(buf, static_cast<size_t>(n));
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) && mayBecomeHttpRequest(firstBytes_))
            return;  // "GE": wait for the rest of the method (within the handshake deadline)
        if (n > 0 && firstBytes_.size() < kPeekBytes && mayBecomeHttpRequest(firstBytes_)) continue;
        break;
    }
    answerInClear();
}

// The server's answer to clear text on the TLS port (or to silence), sent in clear; then the close.
void Connection::answerInClear() {
    std::string answer = loop_.settings().clearText(*this, firstBytes_);
    if (state_ != State::ClearTextCheck) return;
    SSL_free(ssl_);
    ssl_ = nullptr;
    state_ = State::Lingering;  // what the client sends now is read and dropped
    out_ = answer;
    outSent_ = 0;
    closeWhenSent_ = true;
    flush();
}

// CoreSettings::silenceHint passed in the clear-text check: a client that has sent nothing is answered
// in clear (a plain SMTP client waiting for a banner); one whose bytes just came is looked at as usual.
void Connection::silenceHintPassed() {
    silenceHintArmed_ = false;
    loop_.arm(*this, acceptedAt_ + loop_.settings().handshakeTimeout);
    char first;
    if (!firstBytes_.empty() || ::recv(fd_, &first, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return checkClearText();
    answerInClear();
}

void Connection::startTlsAfterSend(SSL_CTX* context) {
    if (state_ != State::Open || ssl_ || closeWhenSent_) return;
    tlsAfterSend_ = context;
    if (bytesQueued() == 0) flush();
}

// STARTTLS: the same set-up as an implicit-TLS accept, on the open clear connection.
void Connection::beginTls(SSL_CTX* context) {
    state_ = State::Handshake;
    setDeadline(loop_.settings().handshakeTimeout);
    if (!attachTls(context)) return close("SSL_new: " + tlsError(SSL_ERROR_SSL));
    handshake();
}

bool Connection::attachTls(SSL_CTX* context) {
    ssl_ = SSL_new(context);
    if (!ssl_) return false;
    BIO* socket = BIO_new_socket(fd_, BIO_NOCLOSE);
    BIO* wire = wireMethod() ? BIO_new(wireMethod()) : nullptr;
    if (!socket || !wire) {
        BIO_free(socket);
        BIO_free(wire);
        return false;
    }
    BIO_set_data(wire, &wire_);
    SSL_set_bio(ssl_, socket, wire);
    SSL_set_accept_state(ssl_);
    SSL_set_read_ahead(ssl_, 1);  // one read per record (header and body together), more when they came
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    return true;
}

bool Connection::pushWire(Push mode, bool* moved) {
    if (moved) *moved = false;
    while (wireSent_ < wire_.size()) {
        ssize_t sent = ::send(fd_, wire_.data() + wireSent_, wire_.size() - wireSent_, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0 && errno == EINTR) continue;
        if (sent < 0 && mode == Push::LastWords) break;
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wantWrite_ = true;
            updateInterest();
            return false;
        }
        if (sent < 0) {
            close(std::strerror(errno));
            return false;
        }
        wireSent_ += static_cast<size_t>(sent);
        if (moved) *moved = true;
    }
    bool all = wireSent_ == wire_.size();
    wire_.clear();
    if (wire_.capacity() > kKeptWireBytes) std::string().swap(wire_);
    wireSent_ = 0;
    return all;
}

void Connection::makeCloseNotify() {
    if (shutDown_) return;
    shutDown_ = true;
    if (!ssl_) return;
    SSL_shutdown(ssl_);
    ERR_clear_error();
}

void Connection::handshake() {
    if (!pushWire()) return;  // the last flight leaves first
    errno = 0;
    int rc = SSL_do_handshake(ssl_);
    int sysError = errno;
    if (rc == 1) {
        state_ = State::Open;
        clearDeadline();
        wantWrite_ = false;
        updateInterest();
        // The protocol's first answer (a banner, a greeting) goes in the write of the session ticket.
        holdingWrites_ = true;
        try {
            protocol_->onReady(*this);
        } catch (...) {
            holdingWrites_ = false;
            throw;
        }
        holdingWrites_ = false;
        if (state_ == State::Closed) return;
        bool held = out_.size() > outSent_;
        flush();
        // A protocol that saw its first answer queued (bytesQueued) and waits for it to leave hears so,
        // as it would have from a send that blocked.
        if (held && state_ == State::Open && bytesQueued() == 0 && protocol_) protocol_->onWritten(*this, true);
        if (state_ == State::Open && !paused_) readTls();  // the request may have come with the handshake
        return;
    }
    int error = SSL_get_error(ssl_, rc);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        if (!pushWire()) return;  // EPOLLOUT: handshake() again once there is room
        wantWrite_ = false;
        updateInterest();
        return;
    }
    std::string reason = tlsError(error, sysError);
    pushWire(Push::LastWords);  // the alert that says why (a TLS 1.2 client hears protocol_version)
    finish(Ending{Phase::Handshake, reason, false, false});
}

void Connection::readTls() {
    std::vector<char>& buffer = loop_.readBuffer_;
    for (;;) {
        if (state_ != State::Open || paused_) return;
        int n;
        int sysError = 0;
        if (ssl_) {
            // Our records (a KeyUpdate's answers) wait for the client to read them: so does its next
            // record, as when a write to the socket blocked (else a client that never reads grows wire_).
            if (wire_.size() - wireSent_ >= kWireBytes && !pushWire()) {
                if (state_ == State::Closed) return;
                readBlockedOnWrite_ = true;
                updateInterest();
                return;
            }
            errno = 0;
            n = SSL_read(ssl_, buffer.data(), static_cast<int>(buffer.size()));
            sysError = errno;  // the socket's error, if any, before anything else can change errno
            // A record of ours it made (a KeyUpdate's answer, an alert): sent now, or on EPOLLOUT.
            if (wireSent_ < wire_.size() && !pushWire() && state_ == State::Closed) return;
        } else {
            ssize_t got = ::recv(fd_, buffer.data(), buffer.size(), 0);
            if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
            if (got <= 0) return finish(Ending{Phase::Open, got == 0 ? "" : std::strerror(errno), false, got == 0});
            n = static_cast<int>(got);
        }
        if (n > 0) {
            protocol_->onBytes(*this, buffer.data(), static_cast<size_t>(n));
            // Level-triggered: bytes still in the socket wake us again; bytes OpenSSL already holds do not.
            if (ssl_ && SSL_has_pending(ssl_)) continue;
            if (!ssl_ && static_cast<size_t>(n) == buffer.size()) continue;
            return;
        }
        int error = SSL_get_error(ssl_, n);
        if (error == SSL_ERROR_WANT_READ) return;
        if (error == SSL_ERROR_WANT_WRITE) {
            readBlockedOnWrite_ = true;
            updateInterest();
            return;
        }
        if (error == SSL_ERROR_ZERO_RETURN) return finish(Ending{Phase::Open, "", false, true});
        std::string reason = tlsError(error, sysError);
        // A client that just closes (no close_notify) is how most clients end a keep-alive connection.
        bool eof = reason.find("unexpected eof") != std::string::npos || reason == "connection closed without close_notify";
        return finish(Ending{Phase::Open, reason, false, eof});
    }
}

void Connection::flush() {
    if (holdingWrites_ || state_ == State::Closed) return;
    const bool resumed = wantWrite_;  // the socket had been full: moving bytes now is news (onWritten)
    for (;;) {
        if (ssl_) {
            if (wireSent_ > 0) {  // what has left goes, or wire_ would grow to the whole answer
                wire_.erase(0, wireSent_);
                wireSent_ = 0;
            }
            // The protocol's bytes made into records (into wire_), as far as kWireBytes ahead of the socket.
            while (outSent_ < out_.size() && wire_.size() - wireSent_ < kWireBytes) {
                size_t left = std::min(out_.size() - outSent_, kWireBytes);
                errno = 0;
                int n = SSL_write(ssl_, out_.data() + outSent_, static_cast<int>(left));
                if (n <= 0) {
                    int sysError = errno;
                    int error = SSL_get_error(ssl_, n);
                    if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
                        if (!pushWire()) return;
                        wantWrite_ = true;
                        // WANT_READ: OpenSSL must read (a post-handshake message) before it writes again;
                        // waiting for writability would spin on a socket that is always writable.
                        writeBlockedOnRead_ = error == SSL_ERROR_WANT_READ;
                        updateInterest();
                        return;
                    }
                    pushWire(Push::LastWords);
                    return finish(Ending{Phase::Open, tlsError(error, sysError), false, false});
                }
                outSent_ += static_cast<size_t>(n);
                writeBlockedOnRead_ = false;
            }
            // closeAfterSend: nothing can be queued after the last reply, so its close_notify goes with it.
            if (outSent_ == out_.size() && closeWhenSent_ && !tlsAfterSend_) makeCloseNotify();
            bool moved = false;
            bool allSent = pushWire(Push::UntilBlocked, &moved);
            if (state_ == State::Closed) return;
            // Part of the answer left a socket that had been full: news (the whole answer is told below).
            if (moved && (!allSent || outSent_ < out_.size()) && resumed && protocol_ && state_ == State::Open)
                protocol_->onWritten(*this, false);
            if (!allSent || state_ == State::Closed) return;
            if (outSent_ < out_.size()) continue;
            break;
        }
        if (outSent_ == out_.size()) break;
        size_t left = std::min(out_.size() - outSent_, static_cast<size_t>(INT_MAX));
        ssize_t sent = ::send(fd_, out_.data() + outSent_, left, MSG_NOSIGNAL);
        if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            wantWrite_ = true;
            updateInterest();
            return;
        }
        if (sent < 0) return finish(Ending{Phase::Open, std::strerror(errno), false, false});
        outSent_ += static_cast<size_t>(sent);
        if (wantWrite_ && protocol_ && state_ == State::Open && outSent_ < out_.size()) protocol_->onWritten(*this, false);
        if (state_ == State::Closed) return;
    }
    writeBlockedOnRead_ = false;
    out_.clear();
    if (out_.capacity() > kKeptOutputBytes) std::string().swap(out_);
    outSent_ = 0;
    if (wantWrite_) {
        wantWrite_ = false;
        updateInterest();
        if (protocol_ && state_ == State::Open) protocol_->onWritten(*this, true);
        // The protocol may have sent its next answer meanwhile: a close then waits for that one too.
        if (state_ == State::Closed || bytesQueued() > 0) return;
    }
    if (tlsAfterSend_ && state_ == State::Open && !closeWhenSent_) {
        SSL_CTX* context = tlsAfterSend_;
        tlsAfterSend_ = nullptr;
        return beginTls(context);
    }
    if (closeWhenSent_ && !finSent_ && state_ != State::Closed) {
        // Our close (close_notify and FIN), then the client's FIN read within the linger time: closing
        // with its bytes unread would be a TCP RST that can destroy our last answer before it is read.
        makeCloseNotify();
        if (!lingerStarted_) {
            lingerStarted_ = true;
            state_ = State::Lingering;
            paused_ = false;
            readInterestKept_ = false;
            updateInterest();
            setDeadline(std::chrono::milliseconds(loop_.settings().lingerMilliseconds));
        }
        if (!pushWire()) return;  // the FIN once close_notify has left
        finSent_ = true;
        ::shutdown(fd_, SHUT_WR);
    }
}

void Connection::finish(Ending ending) {
    if (state_ == State::Closed) return;
    bool wasOpen = state_ == State::Open;
    state_ = State::Closed;
    loop_.disarm(*this);
    if (ending.reason.empty() && deadlinePassed_) ending.deadline = true;
    if (wasOpen && ssl_ && ending.peerClosed) {
        makeCloseNotify();  // our close_notify in answer to the client's close, as a blocking socket would
        pushWire(Push::LastWords);
    }
    ::epoll_ctl(loop_.epoll_, EPOLL_CTL_DEL, fd_, nullptr);
    if (protocol_) protocol_->onClosed(*this, ending);
    loop_.finished_.push_back(id_);
}

// ---- EventLoop ----------------------------------------------------------------------------------

EventLoop::EventLoop(const CoreSettings& settings, const std::vector<int>& listeners, std::atomic<uint64_t>& ids)
    : settings_(settings), listeners_(listeners), ids_(ids), readBuffer_(kReadBytes) {
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    wake_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_ < 0 || wake_ < 0) throw std::runtime_error(std::string("event loop: ") + std::strerror(errno));
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kWakeTag;
    ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &event);
    for (size_t i = 0; i < listeners_.size(); ++i) {
        epoll_event listen{};
        // EPOLLEXCLUSIVE: one waiting loop is woken per new connection, not all of them.
        listen.events = EPOLLIN | EPOLLEXCLUSIVE;
        listen.data.u64 = listenerTag(i);
        if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, listeners_[i], &listen) != 0)
            throw std::runtime_error(std::string("event loop: watching a listener: ") + std::strerror(errno));
    }
}

EventLoop::~EventLoop() {
    connections_.clear();
    closeAdopted();  // handed over after the loop stopped
    if (wake_ >= 0) ::close(wake_);
    if (epoll_ >= 0) ::close(epoll_);
}

void EventLoop::watch(Connection& connection, uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.ptr = &connection;
    if (::epoll_ctl(epoll_, EPOLL_CTL_MOD, connection.fd_, &event) != 0 && errno == ENOENT)
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, connection.fd_, &event);
}

void EventLoop::arm(Connection& connection, Clock::time_point at) {
    connection.deadline_ = at;
    connection.deadlinePassed_ = false;
    // A later deadline than the armed one (each reply pushes the client's on) leaves the timer where it
    // is: when it fires, expireTimers moves it to the deadline. No tree erase and insert per command.
    if (connection.armed_ && connection.timer_->first <= at) return;
    disarm(connection);
    connection.timer_ = timers_.emplace(at, connection.id_);
    connection.armed_ = true;
}

void EventLoop::disarm(Connection& connection) {
    if (!connection.armed_) return;
    timers_.erase(connection.timer_);
    connection.armed_ = false;
}

void EventLoop::pauseListeners() {
    if (listenersPaused_) return;
    for (int listener : listeners_) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener, nullptr);
    listenersPaused_ = true;
    listenersResume_ = Clock::now() + kListenerPause;
}

void EventLoop::resumeListeners() {
    if (!listenersPaused_ || Clock::now() < listenersResume_) return;
    listenersPaused_ = false;
    for (size_t i = 0; i < listeners_.size(); ++i) {
        epoll_event listen{};
        listen.events = EPOLLIN | EPOLLEXCLUSIVE;
        listen.data.u64 = listenerTag(i);
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, listeners_[i], &listen);
    }
}

int EventLoop::waitMilliseconds() const {
    if (timers_.empty() && !listenersPaused_) return -1;
    Clock::time_point next = timers_.empty() ? listenersResume_ : timers_.begin()->first;
    if (listenersPaused_) next = std::min(next, listenersResume_);
    auto left = next - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(left).count()) + 1;
}

void EventLoop::expireTimers() {
    auto now = Clock::now();
    while (!timers_.empty() && timers_.begin()->first <= now) {
        uint64_t id = timers_.begin()->second;
        timers_.erase(timers_.begin());
        auto found = connections_.find(id);
        if (found == connections_.end()) continue;
        Connection& connection = *found->second;
        if (connection.deadline_ > now) {  // pushed on since it was armed (arm): not passed yet
            connection.timer_ = timers_.emplace(connection.deadline_, id);
            continue;
        }
        connection.armed_ = false;
        connection.deadlinePassed_ = true;
        try {
            if (connection.state_ == Connection::State::Lingering) {
                connection.finish(Ending{Phase::Open, "", false, false});
            } else if (connection.state_ == Connection::State::Proxy) {
                connection.proxyFailed("no complete PROXY header within " + std::to_string(settings_.proxy.timeoutMs) + " ms");
            } else if (connection.state_ == Connection::State::Open) {
                connection.protocol_->onDeadline(connection);
            } else if (connection.state_ == Connection::State::ClearTextCheck && connection.silenceHintArmed_) {
                connection.silenceHintPassed();
            } else {
                connection.close("deadline");
            }
        } catch (const std::exception& e) {
            contain(id, "deadline", e.what());
        } catch (...) {
            contain(id, "deadline", "unknown exception");
        }
    }
}

void EventLoop::accept(int listener) {
    for (int i = 0; i < kAcceptsPerWake; ++i) {
        sockaddr_storage address{};
        socklen_t length = sizeof address;
        int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&address), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            // Out of descriptors: the listener stays readable, so stop watching it for a moment instead
            // of spinning (the pending client waits in the backlog). EAGAIN: another loop took it.
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) pauseListeners();
            return;
        }
        // To the loop with the fewest connections: the first loop woken would otherwise take a whole
        // burst (20 connections opened at once all on one loop, the other core's loop idle: kept-open
        // delivery ran 5-8% slower so, issue 22).
        EventLoop* target = this;
        for (EventLoop* sibling : siblings_)
            if (sibling->load_.load(std::memory_order_relaxed) < target->load_.load(std::memory_order_relaxed)) target = sibling;
        ++target->load_;
        if (target == this) welcome(fd, address);
        else target->adopt(fd, address);
    }
}

void EventLoop::adopt(int fd, const sockaddr_storage& address) {
    {
        std::lock_guard<std::mutex> lock(postMutex_);
        bool taken = false;
        if (!adoptionsClosed_) {
            try {
                adopted_.emplace_back(fd, address);
                taken = true;
            } catch (...) {  // no memory: refused below, like a loop that has stopped
            }
        }
        if (!taken) {
            ::close(fd);  // this loop has stopped (or could not take it): the client sees a close
            --load_;
            return;
        }
        if (posted_.size() + adopted_.size() > 1) return;  // its wake-up is written already (post)
    }
    wake();
}

void EventLoop::welcome(int fd, const sockaddr_storage& address) {
    int one = 1;
    // A response leaves in one write; Nagle would hold the next one for the client's delayed ACK.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint64_t id = ids_++;
    std::unique_ptr<Connection> owned;
    Connection* made = nullptr;
    try {
        owned = std::make_unique<Connection>(*this, fd, id);
        made = owned.get();
        connections_.emplace(id, std::move(owned));
    } catch (...) {  // no memory: never served, the client sees a close
        if (!made) ::close(fd);  // else `owned`, still holding it, closes it
        --load_;
        std::cerr << "event loop: a new connection could not be set up (out of memory); it is closed" << std::endl;
        return;
    }
    Connection& connection = *made;
    // From here a throw ends the connection like any other (contain): it leaves through destroy().
    try {
        describe(address, connection.peer_.host, connection.peer_.address);
        sockaddr_storage local{};
        socklen_t localLength = sizeof local;
        if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &localLength) == 0)
            connection.localPort_ = ntohs(local.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&local)->sin_port
                                                                   : reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
        connection.interest_ = EPOLLIN;
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.ptr = &connection;
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
        std::string host = connection.peer_.host;
        if (host.rfind("::ffff:", 0) == 0) host = host.substr(7);  // an IPv4 client on a dual-stack socket
        if (!settings_.proxy.trusted.empty() && settings_.proxy.trusted.contains(host)) {
            connection.state_ = Connection::State::Proxy;
            arm(connection, Clock::now() + std::chrono::milliseconds(settings_.proxy.timeoutMs));
            connection.readProxy();
        } else {
            connection.startTls();
        }
    } catch (const std::exception& e) {
        contain(id, "accept", e.what());
    } catch (...) {
        contain(id, "accept", "unknown exception");
    }
}

void EventLoop::post(uint64_t connectionId, std::function<void(Connection&)> work) {
    {
        std::lock_guard<std::mutex> lock(postMutex_);
        posted_.emplace_back(connectionId, std::move(work));
        // A list that was not empty has its wake-up written already and not yet taken (drainPosts
        // reads the eventfd before it swaps the list out): one write per batch of answers, not per
        // answer (a group commit finishes many deliveries at once).
        if (posted_.size() + adopted_.size() > 1) return;
    }
    wake();
}

void EventLoop::drainPosts() {
    uint64_t count;
    ssize_t n = ::read(wake_, &count, sizeof count);
    (void)n;
    std::vector<std::pair<uint64_t, std::function<void(Connection&)>>> work;
    std::vector<std::pair<int, sockaddr_storage>> adopted;
    {
        std::lock_guard<std::mutex> lock(postMutex_);
        work.swap(posted_);
        adopted.swap(adopted_);
    }
    for (auto& [fd, address] : adopted) welcome(fd, address);
    for (auto& [id, job] : work) {
        auto found = connections_.find(id);
        if (found == connections_.end() || found->second->state_ == Connection::State::Closed) continue;
        try {
            job(*found->second);
        } catch (const std::exception& e) {
            contain(id, "posted job", e.what());
        } catch (...) {
            contain(id, "posted job", "unknown exception");
        }
    }
}

// The connection's protocol or our own code threw (a protocol's bug, bad_alloc): only this connection
// ends, with a line on stderr (the protocol's log may be what threw); the loop goes on with the rest.
void EventLoop::contain(uint64_t id, const char* where, const char* what) {
    std::cerr << "event loop: connection " << id << ": exception in " << where << ": " << what
              << "; the connection is closed" << std::endl;
    auto found = connections_.find(id);
    if (found == connections_.end()) return;
    Connection& connection = *found->second;
    try {
        connection.close(std::string("internal error: ") + what);
    } catch (...) {
        // Its onClosed threw (now or in the first place): closed without it, as below.
    }
    if (std::find(finished_.begin(), finished_.end(), id) != finished_.end()) return;
    connection.state_ = Connection::State::Closed;
    disarm(connection);
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, connection.fd_, nullptr);
    finished_.push_back(id);  // the protocol is destroyed with the connection, at the round's end
}

void EventLoop::destroy(uint64_t id) {
    auto found = connections_.find(id);
    if (found == connections_.end()) return;
    connections_.erase(found);
    --load_;
}

void EventLoop::run() {
    std::vector<epoll_event> events(kMaxEvents);
    while (!stopping_) {
        int n = ::epoll_wait(epoll_, events.data(), kMaxEvents, waitMilliseconds());
        if (n < 0 && errno != EINTR) {
            // Not expected (EBADF, EINVAL, EFAULT: a bug); a loop that just returned would leave its
            // connections and its share of the accepts unserved, silently. The process stops instead.
            std::cerr << "event loop: epoll_wait: " << std::strerror(errno) << "; stopping the process" << std::endl;
            std::_Exit(EX_SOFTWARE);  // sysexits.h: an internal error (70)
        }
        for (int i = 0; i < n; ++i) {
            uint64_t tag = events[i].data.u64;
            if (tag == kWakeTag) {
                drainPosts();
            } else if (tag & 1) {
                try {
                    accept(listeners_[(tag - 3) / 2]);
                } catch (const std::exception& e) {  // before the connection existed (bad_alloc): the client sees a close
                    std::cerr << "event loop: exception accepting a connection: " << e.what() << std::endl;
                } catch (...) {
                    std::cerr << "event loop: exception accepting a connection" << std::endl;
                }
            } else {
                // Closed connections live until the end of this round: an event still queued finds them.
                auto* connection = static_cast<Connection*>(events[i].data.ptr);
                if (connection->state_ == Connection::State::Closed) continue;
                try {
                    connection->onEvents(events[i].events);
                } catch (const std::exception& e) {
                    contain(connection->id_, "events", e.what());
                } catch (...) {
                    contain(connection->id_, "events", "unknown exception");
                }
            }
        }
        expireTimers();
        resumeListeners();
        for (uint64_t id : finished_) destroy(id);
        finished_.clear();
    }
    // Stopping: every connection ends (an idle keep-alive one at once), its protocol told so.
    for (auto& [id, connection] : connections_) connection->finish(Ending{Phase::Open, "server stopping", false, false});
    finished_.clear();
    connections_.clear();
    closeAdopted();
}

void EventLoop::closeAdopted() {
    std::lock_guard<std::mutex> lock(postMutex_);
    adoptionsClosed_ = true;  // a loop still accepting closes what it would hand over
    for (auto& [fd, address] : adopted_) ::close(fd);  // handed over as this loop stopped: never served
    adopted_.clear();
}

void EventLoop::stop() {
    stopping_ = true;
    wake();
}

void EventLoop::wake() {
    uint64_t one = 1;
    ssize_t written = ::write(wake_, &one, sizeof one);
    (void)written;  // a full counter still wakes the loop
}

// ---- EventCore ----------------------------------------------------------------------------------

EventCore::EventCore(CoreSettings settings) : settings_(std::move(settings)) {}

EventCore::~EventCore() { stop(); }

void EventCore::start(const std::vector<int>& listeners) {
    for (int fd : listeners) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    int threads = settings_.threads > 0 ? settings_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 0; i < threads; ++i) loops_.push_back(std::make_unique<EventLoop>(settings_, listeners, ids_));
    for (auto& loop : loops_)
        for (auto& other : loops_)
            if (other != loop) loop->siblings_.push_back(other.get());
    for (auto& loop : loops_) threads_.emplace_back([&loop] { loop->run(); });
}

// The loops stay (stopped) until the core goes: a worker finishing late may still post to one.
void EventCore::stop() {
    for (auto& loop : loops_) loop->stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
}

}  // namespace maillab::net
