// The retriever's HTTP resources as a socket-free function: a request (method, target, headers) in,
// a response (status, headers, body) out. server.cpp adapts it to Poco's HTTPServer; the unit tests
// call it directly. The resources are documented in docs/retriever.md.
#pragma once
#include "autoconfig.h"

#include "../common/lab/auth.h"
#include "../common/lab/class_board.h"
#include "../common/lab/store.h"
#include "../common/net/text.h"
#include "mime_view.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace maillab::http {

struct ApiLimits {
    size_t maxUriLength = 2048;    // longer request targets get 414
    size_t maxHeaderBytes = 8192;  // all header names and values together; more gets 431
    int64_t defaultPageSize = 50;
    int64_t maxPageSize = 500;
    bool plaintextAuthAllowed = false;  // --tls off only: accept Basic credentials sent in clear
    size_t listingCacheBytes = 16 * 1024 * 1024;  // the JSON listings kept for repeated GETs, in all
    // What the responses being built and sent may cost in memory at once (a message's JSON costs up
    // to kJsonCostFactor times its stored size); a response past it gets 503 and Retry-After.
    size_t maxResponseBytesInFlight = 128 * 1024 * 1024;
    mime::Limits mime;  // how much of a message's MIME structure its views decode
};

// The bytes of responses in flight, shared by a server's requests (like the sender's DataBudget).
class ResponseBudget {
public:
    explicit ResponseBudget(size_t limit) : limit_(limit) {}
    // A hold on `bytes` for as long as the returned pointer lives; nullptr when they do not fit.
    std::shared_ptr<void> take(size_t bytes);
    size_t inUse() const;

private:
    size_t limit_;
    mutable std::mutex mutex_;
    size_t inUse_ = 0;
};

struct ApiRequest {
    std::string method;  // "GET"
    std::string target;  // "/mailboxes/ana%40447.edu/messages?limit=10"
    std::vector<std::pair<std::string, std::string>> headers;
    bool overTls = true;  // false on a --tls off server
    std::string peer;     // the client's IP address (the guess budget of sources that logged in before)
    std::string version = "HTTP/1.1";  // as on the request line
    // False on an event loop, which must not wait: a login that would (the account's check held by
    // another thread, a slow hash, a store write) is not run, and the response says handOff.
    bool mayWait = true;
    std::string header(const std::string& name) const;  // case-insensitive; "" when absent
};

struct ApiResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;           // for HEAD: what GET would send (the server sends only its length)
    bool closeConnection = false;  // after a failed login: the next guess pays a new handshake
    std::string user;           // the authenticated user, for the log; "" when none
    std::string triedUser;      // a refused login's user name as the client sent it, for the log
    std::shared_ptr<void> hold;  // the response's place in the ResponseBudget, until it is sent
    // With mayWait false: nothing was answered nor changed; handle the request again where waiting is
    // allowed (triedUser names the login's user, for a 503 if that cannot be done in time).
    bool handOff = false;
    // With handOff, when set: the login and the route were checked on the loop, and what is left is
    // work too heavy for it (a whole message read and decoded, a page built): a worker calls this
    // for the response, instead of handling the request again.
    std::function<ApiResponse()> rest;
    std::string header(const std::string& name) const;
};

// The API's one error shape: {"error": {"status": 503, "code": "service_unavailable", "message": ...}}.
ApiResponse errorResponse(int status, const std::string& message);

// What a class server adds (common/class.properties): the board's activity counts, and the roster
// and stuck time its /class page and /metrics read.
struct ClassView {
    ActivityRecorder* activity = nullptr;
    Roster roster;
    int64_t stuckSeconds = 20 * 60;
    int refreshSeconds = 10;
};

class MailApi {
public:
    MailApi(Store& store, Authenticator& auth, ApiLimits limits, std::function<int64_t()> clock = nullptr,
            ClassView classView = {});
    ApiResponse handle(const ApiRequest& request);
    size_t listingCacheBytes() const;  // what the listing cache holds now
    size_t responseBytesInFlight() const { return responses_.inUse(); }
    // What the mail-client autoconfig document names (autoconfig.h): set before serving.
    void setAutoconfig(autoconfig::Settings settings) { autoconfig_ = std::move(settings); }

private:
    enum class Kind { Inbox, List, Message, Raw, Page, Part, Story, Board, Metrics, Autoconfig };
    // What a resource needs of the authenticated user: to own the mailbox, or the instructor role.
    // Nobody: no login at all (the mail-client autoconfig document).
    enum class Need { Owner, Instructor, Nobody };
    struct Route;
    using Answer = ApiResponse (MailApi::*)(const Route&, const ApiRequest&);
    struct Route {
        Kind kind = Kind::Inbox;
        std::string mailbox;  // "" = the authenticated user's own
        int64_t id = 0;
        int64_t part = 0;  // a part's index (1, 2, ...) in the order of the message
        std::vector<std::pair<std::string, std::string>> query;
        Need need = Need::Owner;
        Answer answer = nullptr;
    };
    struct Resource {
        std::vector<std::string> path;  // segments; "{address}", "{id}" and "{part}" match any
        Kind kind;
        Need need;
        Answer answer;
    };
    static const Resource kResources[];

    struct Page {
        int64_t offset = 0, limit = 0;
        MailboxStats stats;
        std::string etag;
    };
    std::variant<Page, ApiResponse> page(const Route& route, char kind);

    std::optional<ApiResponse> checkFraming(const ApiRequest& request) const;
    std::variant<Route, ApiResponse> route(const ApiRequest& request) const;
    std::variant<std::string, ApiResponse> authenticate(const ApiRequest& request, Route& route);
    ApiResponse listing(const Route& route, const ApiRequest& request);
    ApiResponse message(const Route& route, const ApiRequest& request);
    ApiResponse inboxPage(const Route& route, const ApiRequest& request);
    ApiResponse story(const Route& route, const ApiRequest& request);
    std::string messagePage(const Route& route, const MessageSummary& m, const mime::View& view) const;
    ApiResponse classBoardPage(const Route& route, const ApiRequest& request);
    ApiResponse metrics(const Route& route, const ApiRequest& request);
    ApiResponse autoconfig(const Route& route, const ApiRequest& request);
    // With mayWait false (an event loop): the handOff whose `rest` answers the route on a worker.
    ApiResponse onWorker(const Route& route, const ApiRequest& request);
    // What every answer gets once made: nosniff, the user, the reader's activity.
    void finishAnswer(ApiResponse& response, const Route& route, const std::string& user);
    autoconfig::Settings autoconfig_;
    void noteActivity(const std::string& account, const char* kind);

    // Rendered JSON listings by mailbox, offset and limit, valid while their validator is: new mail
    // changes the validator, so a stale body is never served.
    struct CachedListing {
        std::string etag;
        std::string body;
    };
    bool cachedListing(const std::string& key, const std::string& etag, std::string& body);
    void rememberListing(const std::string& key, const std::string& etag, const std::string& body);

    Store& store_;
    Authenticator& auth_;
    ApiLimits limits_;
    std::function<int64_t()> clock_;
    ClassView class_;
    ResponseBudget responses_;
    mutable std::mutex cacheMutex_;
    size_t listingCacheBytes_ = 0;
    std::unordered_map<std::string, CachedListing> listings_;
};

// Helpers, public for the tests.
using text::htmlEscape;
using text::validUtf8;  // invalid sequences become U+FFFD
std::string httpDate(int64_t unixSeconds);        // RFC 9110 5.6.7 IMF-fixdate
// Splits "user:password" from an "Authorization: Basic ..." value (RFC 7617); false when malformed.
bool parseBasicAuthorization(const std::string& value, std::string& user, std::string& password);

}  // namespace maillab::http
