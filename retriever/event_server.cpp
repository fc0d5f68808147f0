// The retriever's HTTPS GETs on the event-loop core: see event_server.h.
#include "event_server.h"

#include "../common/lab/tls_provenance.h"
#include "../common/net/event_gate.h"
#include "../common/net/guarded_connection.h"
#include "../common/net/log_text.h"
#include "../common/net/text.h"
#include "../common/net/tls.h"

#include <Poco/Net/HTTPResponse.h>

#include <http_parser.h>

#include <cctype>
#include <climits>
#include <ctime>
#include <mutex>

namespace maillab::retriever_events {

namespace {

using namespace std::chrono;
using text::equalsIgnoringCase;

// Poco's HTTP request limits, kept so the two cores refuse the same heads (a bare 400, then close):
// Poco::Net::MessageHeader and HTTPRequest.
constexpr size_t kMaxFields = 100;
constexpr size_t kMaxNameLength = 256;
constexpr size_t kMaxValueLength = 8192;
constexpr size_t kMaxMethodLength = 32;
constexpr size_t kMaxUriLength = 16384;
constexpr size_t kLargeBody = 65536;
const char* const kBareBadRequest = "HTTP/1.1 400 Bad Request\r\nConnection: Close\r\n\r\n";

// RFC 9110 6.6.1: the Date header, IMF-fixdate; made once per second per thread.
const std::string& dateNow() {
    thread_local time_t made = 0;
    thread_local std::string text;
    time_t now = std::time(nullptr);
    if (now != made) {
        made = now;
        text = http::httpDate(static_cast<int64_t>(now));
    }
    return text;
}

}  // namespace

bool looksLikeRequestLine(std::string_view bytes) {
    // RFC 9112 3: method SP request-target SP HTTP-version CRLF, the method a token (RFC 9110 5.6.2).
    // A scan, not std::regex: libstdc++'s matcher recurses per character, and this runs on a loop
    // thread over bytes anyone can send.
    size_t end = bytes.find('\n');
    if (end == std::string_view::npos) return false;
    std::string_view line = bytes.substr(0, end);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = line.find(' ');
    size_t last = line.rfind(' ');
    if (first == std::string_view::npos || first == 0 || last == first) return false;
    static const std::string_view kTokenPunctuation = "!#$%&'*+-.^_`|~";
    for (char c : line.substr(0, first))
        if (!std::isalnum(static_cast<unsigned char>(c)) && kTokenPunctuation.find(c) == std::string_view::npos) return false;
    std::string_view target = line.substr(first + 1, last - first - 1);
    if (target.empty() || target.find_first_of(" \t") != std::string_view::npos) return false;
    std::string_view version = line.substr(last + 1);
    return version.size() == 8 && version.substr(0, 5) == "HTTP/" && std::isdigit(static_cast<unsigned char>(version[5])) &&
           version[6] == '.' && std::isdigit(static_cast<unsigned char>(version[7]));
}

std::string responseHead(const http::ApiResponse& response, bool http10, bool keepAlive, const std::string& date,
                         const std::string& software, size_t contentLength) {
    std::string head;
    head.reserve(256 + 64 * response.headers.size());
    head += http10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    head += std::to_string(response.status);
    head += ' ';
    head += Poco::Net::HTTPResponse::getReasonForStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(response.status));
    head += "\r\nDate: " + date;
    head += keepAlive ? "\r\nConnection: Keep-Alive" : "\r\nConnection: Close";
    if (!software.empty()) head += "\r\nServer: " + software;
    for (const auto& [name, value] : response.headers) head += "\r\n" + name + ": " + value;
    // RFC 9110 8.6: a 304's Content-Length could only be the 200's length; it has none (nginx's way).
    if (response.status != 304) head += "\r\nContent-Length: " + std::to_string(contentLength);
    head += "\r\n\r\n";
    return head;
}

struct EventServer::Shared {
    Settings settings;
    std::unique_ptr<net::EventGate> gate;  // admission, refusals (503) and the proxy-refused line; outlives the core
    std::unique_ptr<net::WorkerPool> workers;  // logins that wait (a slow hash, a held check), workersOnly requests
    // A logged-in user's work: a heavy resource's rest, the login's provenance record. Apart from
    // the logins' hashes, so a flood of unknown names (a hash each) never stalls students who are in.
    std::unique_ptr<net::WorkerPool> answers;
    // The first answer of each TLS session on a class server waits for its provenance record (a short
    // store write): a lane of its own, ahead of no heavy answer and no hash.
    std::unique_ptr<net::WorkerPool> records;
    std::unique_ptr<net::EventCore> core;
    http_parser_settings parserSettings{};
};

namespace {

// What a protocol of this server logs with: the clear-text check finds the connection's own id here.
class LoggedProtocol : public net::GatedProtocol {
public:
    explicit LoggedProtocol(ConnectionLog log) : log_(std::move(log)) {}
    const ConnectionLog& log() const override { return log_; }

protected:
    ConnectionLog log_;
};

// The 503 of a login that could not be checked in time (the thread core's, mail_api.cpp's words).
http::ApiResponse authenticationBusy(const std::string& triedUser) {
    http::ApiResponse busy = http::errorResponse(503, "Authentication temporarily unavailable");
    busy.triedUser = triedUser;
    return busy;
}

// The 503 of a request that waited too long, or found no place, for a worker and needs no slow login.
http::ApiResponse serverBusy() {
    http::ApiResponse busy = http::errorResponse(503, "Server busy: too many requests waiting; try again in a moment");
    busy.headers.emplace_back("Retry-After", "2");
    return busy;
}

// One admitted HTTP connection: bytes in, http-parser frames each request head, MailApi answers.
// One request at a time: while its answer drains or a worker has it, reading pauses (the client's
// next requests wait in the socket, TCP's flow control holds the rest), and what one read brought
// past it waits in pending_, parsed from pendingOffset_ once the answer is out.
class HttpConnection : public LoggedProtocol {
public:
    HttpConnection(EventServer::Shared& shared, ConnectionLimiter::Slot slot, net::Connection& connection)
        : LoggedProtocol(shared.gate->newLog(connection.peer())),
          shared_(shared), s_(shared.settings), slot_(std::move(slot)),
          provenance_(std::make_shared<TlsProvenance>(s_.provenance ? s_.store : nullptr, "http")) {
        slot_.waiting(connection.fd());  // the handshake waits for the client
        http_parser_init(&parser_, HTTP_REQUEST);
        parser_.data = this;
    }

    void onReady(net::Connection& connection) override {
        if (connection.ssl()) provenance_->noteSession(connection.ssl(), connection.peer().address);
        awaitRequest(connection, s_.firstRequestWait);
    }

    void onBytes(net::Connection& connection, const char* data, size_t size) override {
        if (pendingOffset_ < pending_.size() || !readyForRequest()) {
            // Not expected (reading pauses first), but never unbounded.
            if (pending_.size() - pendingOffset_ + size > s_.maxPendingBytes) return tooMuchPending(connection);
            pending_.append(data, size);
            if (readyForRequest()) continueInput(connection);
            return;
        }
        size_t used = parseRequests(connection, data, size);
        if (used < size && !closing_) {
            if (size - used > s_.maxPendingBytes) return tooMuchPending(connection);
            pending_.assign(data + used, size - used);  // the next requests, pipelined: after this answer
            pendingOffset_ = 0;
        }
    }

    // The client reads our answer slowly: each write that goes on restarts timeoutSeconds (as Poco's
    // send timeout); once all is sent, the keep-alive wait for the next request begins.
    void onWritten(net::Connection& connection, bool drained) override {
        if (!draining_) return;
        if (!drained) return connection.setDeadline(s_.firstRequestWait);
        draining_ = false;
        hold_.reset();  // sent: its share of http.maxResponseBytesInFlight is free
        if (!keepAlive_) return;
        awaitRequest(connection, s_.keepAliveTimeout);
        continueInput(connection);
    }

    void onDeadline(net::Connection& connection) override {
        if (draining_) {
            log_.peerEvent("disconnect", "reason=send-timeout");
            timedOut_ = true;
        } else if (headStarted_) {
            log_.peerEvent("disconnect", "reason=request-head-timeout");
            timedOut_ = true;
        }
        connection.close("deadline");  // before any byte: the keep-alive (or first-request) wait ended
    }

    void onClosed(net::Connection&, const net::Ending& ending) override {
        closing_ = true;
        slot_.working();  // out of the waiting list before the socket is closed
        if (timedOut_) return;
        if (slot_.evicted()) {
            log_.peerEvent("evicted", "reason=\"the server was full and this connection waited longest for its client\"");
        } else if (ending.phase == net::Phase::Handshake || ending.phase == net::Phase::ClearTextCheck) {
            if (!ending.peerClosed)
                log_.peerEvent("disconnect", "reason=" + (ending.deadline ? std::string("handshake-timeout") : logValue(ending.reason)));
        } else if (!ending.reason.empty() && !ending.peerClosed && ending.reason != "server stopping" &&
                   ending.reason != "deadline") {
            log_.peerEvent("disconnect", "reason=" + logValue(ending.reason));
        }
    }

private:
    // Waiting for a request's first byte (`wait`), then for the rest of its head (requestHeadTimeout
    // in all, counted from the end of the previous answer, as the thread core's watchdog does).
    void awaitRequest(net::Connection& connection, milliseconds wait) {
        headStarted_ = false;
        waitStarted_ = net::Clock::now();
        firstWait_ = wait;
        connection.setDeadline(wait);
        slot_.waiting(connection.fd());
    }

    // No answer is draining or being made, and the connection goes on: the next request may be read.
    bool readyForRequest() const { return !busy_ && !draining_ && keepAlive_ && !closing_; }

    // Requests in data, one after another (a loop, not a call per request), each answered before the
    // next is parsed; stops where one must wait (a worker, an answer draining) or the connection
    // ends. Returns the bytes used.
    size_t parseRequests(net::Connection& connection, const char* data, size_t size) {
        size_t offset = 0;
        while (offset < size && readyForRequest()) offset += feed(connection, data + offset, size - offset);
        return closing_ ? size : offset;
    }

    // An answer is out (or a worker's was sent): the requests that waited in pending_, then, once none
    // is left and the connection is ready for one, reading again.
    void continueInput(net::Connection& connection) {
        if (pendingOffset_ < pending_.size())
            pendingOffset_ += parseRequests(connection, pending_.data() + pendingOffset_, pending_.size() - pendingOffset_);
        if (pendingOffset_ >= pending_.size() || closing_) {
            pending_.clear();
            pending_.shrink_to_fit();
            pendingOffset_ = 0;
        }
        if (readyForRequest() && pending_.empty()) connection.resumeReading();
    }

    void tooMuchPending(net::Connection& connection) {
        badRequest(connection, "More than " + std::to_string(s_.maxPendingBytes) +
                                   " bytes of pipelined requests ahead of their answers (retriever.events.maxPendingBytes)");
    }

    // One request head (or part of one) from data; returns the bytes the parser took.
    size_t feed(net::Connection& connection, const char* data, size_t size) {
        if (!headStarted_ && size > 0) {
            headStarted_ = true;
            // The head's total from the start of the wait: the keep-alive wait, then the head itself.
            auto end = waitStarted_ + (requests_ == 0 ? s_.requestHeadTimeout : firstWait_ + s_.requestHeadTimeout);
            connection.setDeadline(duration_cast<milliseconds>(std::max(end - net::Clock::now(), net::Clock::duration(1))));
        }
        size_t parsed = http_parser_execute(&parser_, &shared_.parserSettings, data, size);
        if (HTTP_PARSER_ERRNO(&parser_) == HPE_PAUSED) {
            dispatch(connection);
            return parsed;
        }
        if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK || parsed != size || refusedHead_) {
            // Where Poco's MessageException gives a bare 400, the answer says what was wrong.
            std::string why = !refusedWhy_.empty() ? refusedWhy_
                              : std::string("Malformed request head: ") +
                                    http_errno_description(HTTP_PARSER_ERRNO(&parser_)) +
                                    " (RFC 9112: request line, header fields, CRLF)";
            // RFC 9110 9.1: a method http-parser does not know, on a well-formed request line, is one
            // this server does not implement (as the thread core's MailApi says); other bytes are 400.
            bool unknownMethod = refusedWhy_.empty() && HTTP_PARSER_ERRNO(&parser_) == HPE_INVALID_METHOD &&
                                 looksLikeRequestLine(std::string_view(data, size));
            if (unknownMethod) why = "Method not implemented; use GET or HEAD";
            badRequest(connection, why, unknownMethod ? 501 : 400);
            return size;
        }
        return size;
    }

    // A 400 (or 501) that ends the connection, saying why (the API's error shape).
    void badRequest(net::Connection& connection, const std::string& why, int status = 400) {
        if (closing_) return;
        closing_ = true;
        http::ApiResponse result = http::errorResponse(status, why);
        std::string wire = responseHead(result, false, false, dateNow(), s_.software, result.body.size()) + result.body;
        log_.peerEvent("request", "status=" + std::to_string(status) + " reason=" + quotedLogValue(why));
        connection.send(std::move(wire));
        connection.closeAfterSend();
    }

    // ---- http-parser callbacks ----
    static HttpConnection& self(http_parser* parser) { return *static_cast<HttpConnection*>(parser->data); }

public:
    static int onMessageBegin(http_parser* parser) {
        HttpConnection& c = self(parser);
        c.request_ = http::ApiRequest{};
        c.request_.overTls = c.s_.overTls;
        c.fieldOpen_ = false;
        c.refusedHead_ = false;
        c.refusedWhy_.clear();
        return 0;
    }
    static int onUrl(http_parser* parser, const char* at, size_t length) {
        HttpConnection& c = self(parser);
        c.request_.target.append(at, length);
        if (c.request_.target.size() > kMaxUriLength)
            return c.refuseHead("Request target longer than " + std::to_string(kMaxUriLength) + " bytes");
        return 0;
    }
    static int onHeaderField(http_parser* parser, const char* at, size_t length) {
        HttpConnection& c = self(parser);
        if (!c.fieldOpen_) {
            if (c.request_.headers.size() >= kMaxFields)
                return c.refuseHead("More than " + std::to_string(kMaxFields) + " header fields");
            c.request_.headers.emplace_back();
            c.fieldOpen_ = true;
        }
        c.request_.headers.back().first.append(at, length);
        if (c.request_.headers.back().first.size() > kMaxNameLength)
            return c.refuseHead("Header field name longer than " + std::to_string(kMaxNameLength) + " bytes");
        return 0;
    }
    static int onHeaderValue(http_parser* parser, const char* at, size_t length) {
        HttpConnection& c = self(parser);
        c.fieldOpen_ = false;
        if (c.request_.headers.empty()) return c.refuseHead("Header field value without a name");
        c.request_.headers.back().second.append(at, length);
        if (c.request_.headers.back().second.size() > kMaxValueLength)
            return c.refuseHead("Header field value longer than " + std::to_string(kMaxValueLength) + " bytes");
        return 0;
    }
    static int onHeadersComplete(http_parser* parser) {
        HttpConnection& c = self(parser);
        c.request_.method = http_method_str(static_cast<http_method>(parser->method));
        if (c.request_.method.size() > kMaxMethodLength) return c.refuseHead("Method name too long");
        c.request_.version = "HTTP/" + std::to_string(parser->http_major) + "." + std::to_string(parser->http_minor);
        for (auto& [name, value] : c.request_.headers) {
            while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
        }
        // A head that announces a body is answered at once (MailApi refuses it and the connection
        // closes): no waiting for a body nobody reads.
        c.hasBody_ = (parser->flags & F_CHUNKED) || (parser->content_length > 0 && parser->content_length != ULLONG_MAX);
        if (c.hasBody_) http_parser_pause(parser, 1);
        return 0;
    }
    static int onMessageComplete(http_parser* parser) {
        if (HTTP_PARSER_ERRNO(parser) != HPE_PAUSED) http_parser_pause(parser, 1);
        return 0;
    }

private:
    int refuseHead(std::string why) {
        refusedHead_ = true;
        refusedWhy_ = std::move(why);
        return -1;
    }

    bool keepAliveRequested() const {
        std::string connection = request_.header("Connection");
        if (request_.version == "HTTP/1.0") return equalsIgnoringCase(connection, "keep-alive");
        return !equalsIgnoringCase(connection, "close");
    }

    static http::ApiResponse handle(http::MailApi& api, const http::ApiRequest& request) {
        try {
            return api.handle(request);
        } catch (const std::exception&) {
            // On the loop an exception would end every connection (the process): one 500, this one closed.
            http::ApiResponse result = http::errorResponse(500, "Internal error");
            result.closeConnection = true;
            return result;
        }
    }

    void dispatch(net::Connection& connection) {
        connection.clearDeadline();  // the head is in: no deadline while we answer
        slot_.working();
        ++requests_;
        request_.peer = connection.peer().host;
        if (s_.verbose) {
            log_.line("C: " + escapeControl(request_.method + " " + request_.target + " " + request_.version));
            for (const auto& [name, value] : request_.headers)
                log_.line("C: " + escapeControl(name) + ": " +
                          (equalsIgnoringCase(name, "Authorization") ? "<redacted>" : escapeControl(value)));
        }
        // The whole request on a worker (a copy: the connection may close meanwhile).
        auto whole = [this] { return std::function<http::ApiResponse()>([api = s_.api, request = request_] { return handle(*api, request); }); };
        if (s_.workersOnly) {
            // Its cause, if it waits too long: the login when there is one (the thread core's words), else the queue.
            bool login = !request_.header("Authorization").empty();
            return toWorker(connection, *shared_.workers, whole(), login ? Late::Login : Late::Busy, "");
        }
        // On the loop, MailApi answers what needs no waiting; what would wait comes back handOff.
        request_.mayWait = false;
        http::ApiResponse result = handle(*s_.api, request_);
        request_.mayWait = true;
        // The login checked, the rest heavy (a whole message, a page): on a worker, apart from the hashes.
        if (result.handOff && result.rest) return toWorker(connection, *shared_.answers, std::move(result.rest), Late::Busy, "");
        if (result.handOff) return toWorker(connection, *shared_.workers, whole(), Late::Login, result.triedUser);
        // Recording the login's TLS session is a store write: on a worker, before the answer leaves.
        if (provenance_->wouldRecord(result.user)) {
            auto answered = std::make_shared<http::ApiResponse>(std::move(result));
            return toWorker(connection, *shared_.records, [answered] { return std::move(*answered); }, Late::Never, "", answered);
        }
        respond(connection, std::move(result));
    }

    // What a request that waited past workerWait is answered: the thread core's answer to a login that
    // found no hash place in time, a busy server's, or nothing (a finished answer whose record waited).
    enum class Late { Login, Busy, Never };

    http::ApiResponse lateAnswer(Late late, const std::string& triedUser) const {
        return late == Late::Login ? authenticationBusy(triedUser) : serverBusy();
    }

    // `make` (the request, or the rest of its answer) on a worker of `pool`, then the login's
    // provenance record, the loop serving its other connections meanwhile; reading paused until the
    // answer is sent. A full queue is answered at once (`answered`, when only its record was left,
    // goes without the record) and reading goes on.
    void toWorker(net::Connection& connection, net::WorkerPool& pool, std::function<http::ApiResponse()> make, Late late,
                  const std::string& triedUser, std::shared_ptr<http::ApiResponse> answered = nullptr) {
        busy_ = true;
        connection.pauseReading();
        net::EventLoop* loop = &connection.loop();
        uint64_t id = connection.id();
        auto done = [loop, id, self = this](http::ApiResponse result) {
            auto shared = std::make_shared<http::ApiResponse>(std::move(result));
            // Runs only while the connection is open, and so while this protocol object lives.
            loop->post(id, [self, shared](net::Connection& connection) {
                // Answer first: reading resumed before would hand a pipelined request that OpenSSL
                // already holds to the parser still paused on this one (answered twice).
                self->busy_ = false;
                self->respond(connection, std::move(*shared));
                self->continueInput(connection);
            });
        };
        // The worker touches only copies and shared state: the connection may close meanwhile.
        bool queued = pool.run(
            [done, make, provenance = provenance_, log = log_]() mutable {
                http::ApiResponse result;
                try {
                    result = make();
                } catch (const std::exception&) {  // bad_alloc, a Poco exception: this request's 500, not the process
                    result = http::errorResponse(500, "Internal error");
                    result.closeConnection = true;
                }
                try {
                    provenance->recordLogin(result.user, log);
                } catch (const std::exception& e) {
                    log.peerEvent("provenance", "recorded=no reason=" + logValue(e.what()));
                }
                done(std::move(result));
            },
            // A request that waited too long is answered 503; a login's record, done, still runs.
            late == Late::Never ? std::function<void()>()
                                : std::function<void()>([done, answer = lateAnswer(late, triedUser)] { done(answer); }));
        if (queued) return;
        // A full queue: answered as a worker's answer is, through the loop's posts (still busy, reading
        // paused). Answering here would resume reading inside the parse that dispatched this request:
        // the same request parsed again (a 503 per level while the queue stays full), or a pipelined
        // read overwriting the buffer being parsed.
        if (answered) log_.peerEvent("provenance", "recorded=no reason=\"no worker free to record it\"");
        done(answered ? std::move(*answered) : lateAnswer(late, triedUser));
    }

    void respond(net::Connection& connection, http::ApiResponse result) {
        if (closing_) return;
        bool http10 = request_.version == "HTTP/1.0";
        bool mayKeep = s_.maxKeepAliveRequests <= 0 || requests_ < s_.maxKeepAliveRequests;
        bool keepAlive = keepAliveRequested() && mayKeep && !result.closeConnection && !hasBody_;
        bool withBody = result.status != 304 && request_.method != "HEAD";  // HEAD: GET's length, no body
        std::string wire = responseHead(result, http10, keepAlive, dateNow(), s_.software, result.body.size());
        // A line per failure or refusal (4xx, 5xx) always; per successful request only with --verbose.
        // Written before the answer leaves: whoever reads the answer finds its line in the log.
        if (s_.verbose || result.status >= 400)
            log_.peerEvent("request", "method=" +
                                   logValue(request_.method) + " path=" + logValue(request_.target.substr(0, 200)) +
                                   " status=" + std::to_string(result.status) + " bytes=" + std::to_string(result.body.size()) +
                                   (result.user.empty() ? "" : " user=" + result.user) +
                                   (result.triedUser.empty() ? "" : " tried=" + quotedLogValue(result.triedUser.substr(0, 200))));
        if (s_.verbose) {
            size_t end = wire.find("\r\n\r\n");
            std::string head = wire.substr(0, end);
            size_t start = 0;
            while (start < head.size()) {
                size_t stop = head.find("\r\n", start);
                if (stop == std::string::npos) stop = head.size();
                log_.line("S: " + head.substr(start, stop - start));
                start = stop + 2;
            }
        }
        if (withBody && result.body.size() > kLargeBody) {
            connection.send(std::move(wire));  // a large body is not copied behind its headers
            connection.send(std::move(result.body));
        } else {
            if (withBody) wire += result.body;
            connection.send(std::move(wire));
        }

        keepAlive_ = keepAlive;
        if (keepAlive) {
            http_parser_init(&parser_, HTTP_REQUEST);
            parser_.data = this;
        }
        if (connection.bytesQueued() > 0) {
            // Not all of it left yet: the next wait starts once the client has read it (onWritten);
            // till then its place in the response budget is held, and nothing more is read.
            hold_ = std::move(result.hold);
            draining_ = true;
            connection.pauseReading();
            connection.setDeadline(s_.firstRequestWait);
            if (!keepAlive) connection.closeAfterSend();
            return;
        }
        // All sent: result (and its place in the budget) goes now.
        if (!keepAlive) return connection.closeAfterSend();
        awaitRequest(connection, s_.keepAliveTimeout);
    }

    EventServer::Shared& shared_;
    const Settings& s_;
    ConnectionLimiter::Slot slot_;
    http_parser parser_{};
    http::ApiRequest request_;
    std::string pending_;       // bytes read past the request being answered
    size_t pendingOffset_ = 0;  // where in pending_ the next request starts
    // The login's TLS session (class servers), shared with a worker that records it.
    std::shared_ptr<TlsProvenance> provenance_;
    int requests_ = 0;
    bool busy_ = false, headStarted_ = false, fieldOpen_ = false, refusedHead_ = false, hasBody_ = false;
    std::string refusedWhy_;  // the limit a head passed, for its 400
    bool timedOut_ = false;
    bool draining_ = false;   // an answer is still being sent (the client reads slowly)
    bool keepAlive_ = true;
    bool closing_ = false;    // a 400 or the end: nothing more is parsed or answered
    net::Clock::time_point waitStarted_;
    milliseconds firstWait_{0};
    std::shared_ptr<void> hold_;  // the draining answer's place in http.maxResponseBytesInFlight
};

}  // namespace

EventServer::EventServer(Settings settings) : shared_(std::make_unique<Shared>()) {
    shared_->settings = std::move(settings);
    http_parser_settings& p = shared_->parserSettings;
    http_parser_settings_init(&p);
    p.on_message_begin = &HttpConnection::onMessageBegin;
    p.on_url = &HttpConnection::onUrl;
    p.on_header_field = &HttpConnection::onHeaderField;
    p.on_header_value = &HttpConnection::onHeaderValue;
    p.on_headers_complete = &HttpConnection::onHeadersComplete;
    p.on_message_complete = &HttpConnection::onMessageComplete;
}

EventServer::~EventServer() { stop(); }

int EventServer::threads() const { return shared_->core ? shared_->core->threads() : 0; }

int EventServer::workers() const { return shared_->settings.workers; }

void EventServer::start(const std::vector<int>& listeners) {
    Shared& shared = *shared_;
    const Settings& s = shared.settings;
    shared.workers = std::make_unique<net::WorkerPool>(s.workers, s.maxQueuedRequests, s.workerWait);
    if (!s.workersOnly) {  // with workersOnly every request, its answer and its record, is one worker's job
        shared.answers = std::make_unique<net::WorkerPool>(s.answerWorkers, s.maxQueuedRequests, s.workerWait);
        shared.records = std::make_unique<net::WorkerPool>(1, s.maxQueuedRequests, milliseconds(0));
    }
    net::CoreSettings core;
    core.threads = s.threads;
    core.tls = s.overTls ? s.tls : nullptr;
    core.handshakeTimeout = s.handshakeTimeout;
    core.proxy = s.proxy;
    if (s.plainHttpAnswer)
        core.clearText = [&shared](net::Connection& connection, const std::string& seen) {
            // The connection's own log (its one id); a refused one says answered=closed in its refusal line.
            const net::GatedProtocol& protocol = net::EventGate::protocolOf(connection);
            if (!protocol.answersClearText()) return std::string();
            bool http = classifyFirstBytes(seen) == FirstBytes::HttpRequest;
            std::string first = seen.substr(0, seen.find_first_of("\r\n"));
            protocol.log().peerEvent("plaintext-on-tls", "first=" + quotedLogValue(first) +
                                                             " answered=" + (http ? "400" : "closed") + " waited_ms=0");
            return http ? shared.settings.plainHttpAnswer(seen, connection.localPort()) : std::string();
        };
    // Admission and refusals (common/net/event_gate.h): the 503 in http_guard.cpp's words, RFC 9110 15.6.4.
    shared.gate = std::make_unique<net::EventGate>(net::EventGateSettings{
        s.logger, s.nextConnectionId, s.limiter, s.overTls, s.maxRefusalHandshakes, s.refusalTimeout, s.refusal, "503"});
    shared.gate->install(core, [&shared](net::Connection& connection, ConnectionLimiter::Slot slot) {
        return std::make_unique<HttpConnection>(shared, std::move(slot), connection);
    });
    shared.core = std::make_unique<net::EventCore>(core);
    shared.core->start(listeners);
}

void EventServer::stop() {
    if (shared_->core) shared_->core->stop();  // no loop takes a worker's answer any more
    shared_->workers.reset();                  // the jobs still queued run, their answers dropped
    shared_->answers.reset();
    shared_->records.reset();
    shared_->core.reset();
}

}  // namespace maillab::retriever_events
