// The retriever's resources: JSON mailbox listing, one message as JSON or raw RFC 5322, an HTML inbox;
// HTTP Basic authentication (RFC 7617), conditional GET (RFC 9110 13), and errors as real HTTP.
#include "mail_api.h"
#include "story_view.h"

#include "mime_view.h"

#include "../common/lab/password.h"
#include "../common/net/rfc5322.h"
#include "../common/net/text.h"

#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeFormatter.h>
#include <Poco/DateTimeParser.h>
#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/String.h>
#include <Poco/Timestamp.h>
#include <Poco/URI.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <optional>
#include <set>
#include <sstream>
#include <variant>

namespace maillab::http {

namespace {

// A header's value by name, case-insensitive (RFC 9110 5.1); "" when absent.
std::string findHeader(const std::vector<std::pair<std::string, std::string>>& headers, const std::string& name) {
    for (const auto& [key, value] : headers)
        if (text::equalsIgnoringCase(key, name)) return value;
    return "";
}

const char* reasonCode(int status) {
    switch (status) {
        case 400: return "bad_request";
        case 401: return "unauthorized";
        case 403: return "forbidden";
        case 404: return "not_found";
        case 405: return "method_not_allowed";
        case 414: return "uri_too_long";
        case 429: return "too_many_requests";
        case 431: return "header_fields_too_large";
        case 500: return "internal_error";
        case 501: return "not_implemented";
        case 503: return "service_unavailable";
        case 505: return "http_version_not_supported";
    }
    return "error";
}

std::string toJson(const Poco::JSON::Object& object) {
    std::ostringstream out;
    object.stringify(out);
    return out.str();
}

ApiResponse error(int status, const std::string& message) {
    // One stable shape for every error: {"error": {"status": 404, "code": "not_found", "message": "..."}}
    Poco::JSON::Object inner;
    inner.set("status", status);
    inner.set("code", std::string(reasonCode(status)));
    inner.set("message", message);
    Poco::JSON::Object outer;
    outer.set("error", inner);
    ApiResponse r;
    r.status = status;
    r.body = toJson(outer);
    r.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
}


// A message's JSON can cost this many times its stored size while it is made and sent: the text,
// its UTF-8 repair (a control byte becomes three), the JSON and the bytes on the wire.
constexpr size_t kJsonCostFactor = 6;

// A listed field (subject, From...) is shown up to this many characters; the whole of it is in the
// message's own resource. Folded header fields have no length limit, and a listing of 50 must not
// become hundreds of megabytes.
constexpr size_t kMaxListedChars = 1000;
// The first bytes of a message read for its preview, and the characters of body shown.
constexpr int64_t kPreviewReadBytes = 8192;
constexpr size_t kPreviewChars = 300;

std::string shortened(const std::string& text, size_t most = kMaxListedChars) {
    if (text.size() <= most) return text;
    size_t cut = most;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
    return text.substr(0, cut) + "…";
}

// The start of the text, from the first bytes of the stored message: decoded as far as they go
// (a part cut at the end is what it is: the preview says nothing about it).
std::string bodyPreview(const std::string& start, int64_t size, const mime::Limits& limits) {
    if (start.find("\r\n\r\n") == std::string::npos)
        return static_cast<int64_t>(start.size()) < size ? "(the header is long: open the message to read it)" : "";
    std::string body = mime::viewMessage(start, limits).text;
    std::string shown = shortened(body, kPreviewChars);
    if (shown.size() == body.size() && static_cast<int64_t>(start.size()) < size) shown += "…";
    return shown;
}

// Every HTML page: no script, nothing loaded from anywhere (its one style is inline), no forms,
// no <base>, not framed. A mail's text on it is escaped text, and this stops what escaping missed.
const char* const kPagePolicy =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
// A downloaded part, should a browser still render it: a sandboxed document that runs nothing.
const char* const kPartPolicy = "default-src 'none'; sandbox";

// "1.2 MB" for people; the JSON has octets.
std::string humanSize(size_t octets) {
    const char* units[] = {"bytes", "KB", "MB", "GB"};
    double value = static_cast<double>(octets);
    int unit = 0;
    while (value >= 1024 && unit < 3) {
        value /= 1024;
        ++unit;
    }
    char text[32];
    std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
    return text;
}

Poco::JSON::Object summaryJson(const MessageSummary& m) {
    Poco::JSON::Object o;
    o.set("id", m.id);
    // Decoded (RFC 2047) and addresses shown one way (mime::displayAddresses): the raw resource
    // has the fields as written.
    o.set("from", shortened(mime::displayAddresses(m.from)));
    // Who really sent it: the account that authenticated (the envelope sender, which submission
    // policy ties to it). The header From above is whatever the sender typed.
    o.set("authenticated_sender", shortened(validUtf8(m.envelopeFrom)));
    o.set("to", shortened(mime::displayAddresses(m.to)));
    o.set("subject", shortened(mime::decodeHeader(m.subject)));
    o.set("date", shortened(validUtf8(m.date)));
    o.set("size", m.size);
    o.set("received_at", httpDate(m.receivedAt));
    return o;
}

bool parseNumber(const std::string& text, int64_t& value) {
    if (text.empty() || text.size() > 18 || text.find_first_not_of("0123456789") != std::string::npos) return false;
    value = std::stoll(text);
    return true;
}

// RFC 9110 13.1.2 If-None-Match (weak comparison), then 13.1.3 If-Modified-Since.
// ?offset=&limit= of a listing or inbox page; a 400 when either is not a number in range.
std::optional<ApiResponse> pageFrom(const Poco::URI::QueryParameters& query, int64_t maxPageSize, int64_t& offset,
                                    int64_t& limit) {
    for (const auto& [key, value] : query) {
        if (key == "offset" && !parseNumber(value, offset)) return error(400, "offset must be a number");
        if (key == "limit" && (!parseNumber(value, limit) || limit < 1 || limit > maxPageSize))
            return error(400, "limit must be 1 to " + std::to_string(maxPageSize));
    }
    return std::nullopt;
}

bool notModified(const ApiRequest& request, const std::string& etag, int64_t lastModified) {
    std::string inm = request.header("If-None-Match");
    if (!inm.empty()) {
        if (inm == "*") return true;
        std::istringstream list(inm);
        for (std::string tag; std::getline(list, tag, ',');) {
            size_t b = tag.find_first_not_of(" \t");
            if (b == std::string::npos) continue;
            tag = tag.substr(b);
            tag.erase(tag.find_last_not_of(" \t") + 1);
            if (tag.rfind("W/", 0) == 0) tag = tag.substr(2);
            if (tag == etag) return true;
        }
        return false;  // If-Modified-Since is ignored when If-None-Match is present
    }
    std::string ims = request.header("If-Modified-Since");
    if (!ims.empty() && lastModified > 0) {
        Poco::DateTime parsed;
        int tz = 0;
        if (Poco::DateTimeParser::tryParse(Poco::DateTimeFormat::HTTP_FORMAT, ims, parsed, tz))
            return lastModified <= parsed.timestamp().epochTime() - tz;
    }
    return false;
}

ApiResponse ok(const std::string& contentType, std::string body, const std::string& etag, int64_t lastModified) {
    ApiResponse r;
    r.body = std::move(body);
    r.headers.emplace_back("Content-Type", contentType);
    r.headers.emplace_back("ETag", etag);
    if (lastModified > 0) r.headers.emplace_back("Last-Modified", httpDate(lastModified));
    // Private: the mail is the user's. no-cache: reuse only after revalidation (the 304 below).
    r.headers.emplace_back("Cache-Control", "private, no-cache");
    return r;
}

ApiResponse conditional(const ApiRequest& request, ApiResponse full, const std::string& etag, int64_t lastModified) {
    if (!notModified(request, etag, lastModified)) return full;
    ApiResponse r;
    r.status = 304;  // RFC 9110 15.4.5: no body, same validators
    r.headers.emplace_back("ETag", etag);
    if (lastModified > 0) r.headers.emplace_back("Last-Modified", httpDate(lastModified));
    r.headers.emplace_back("Cache-Control", "private, no-cache");
    return r;
}

const char* const kInboxStyle =
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;width:100%}"
    "td,th{border-bottom:1px solid #ddd;padding:.4em;text-align:left;vertical-align:top}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}#fields th{width:1%;white-space:nowrap;padding-right:2em}";

}  // namespace

ApiResponse errorResponse(int status, const std::string& message) { return error(status, message); }

std::string ApiRequest::header(const std::string& name) const { return findHeader(headers, name); }

std::string ApiResponse::header(const std::string& name) const { return findHeader(headers, name); }

std::string httpDate(int64_t unixSeconds) {
    return Poco::DateTimeFormatter::format(Poco::Timestamp::fromEpochTime(static_cast<std::time_t>(unixSeconds)),
                                           Poco::DateTimeFormat::HTTP_FORMAT);
}

bool parseBasicAuthorization(const std::string& value, std::string& user, std::string& password) {
    if (value.size() < 6 || !text::equalsIgnoringCase(value.substr(0, 6), "basic ")) return false;
    std::string encoded = value.substr(6);
    encoded.erase(0, encoded.find_first_not_of(' '));
    std::string decoded;
    try {
        decoded = maillab::base64Decode(encoded);
    } catch (const std::exception&) {
        return false;
    }
    size_t colon = decoded.find(':');  // RFC 7617 2: the user-id cannot contain a colon
    if (colon == std::string::npos) return false;
    user = decoded.substr(0, colon);
    password = decoded.substr(colon + 1);
    return true;
}

bool MailApi::cachedListing(const std::string& key, const std::string& etag, std::string& body) {
    std::lock_guard<std::mutex> lock(cacheMutex_);
    auto it = listings_.find(key);
    if (it == listings_.end() || it->second.etag != etag) return false;
    body = it->second.body;
    return true;
}

void MailApi::rememberListing(const std::string& key, const std::string& etag, const std::string& body) {
    // Bounded in bytes, not entries: a page of long subjects is megabytes. A listing bigger than
    // an eighth of the cache is not kept; past the bound the cache starts afresh rather than grow.
    const size_t cost = key.size() + etag.size() + body.size();
    if (cost > limits_.listingCacheBytes / 8) return;
    std::lock_guard<std::mutex> lock(cacheMutex_);
    if (auto it = listings_.find(key); it != listings_.end()) {
        listingCacheBytes_ -= key.size() + it->second.etag.size() + it->second.body.size();
        listings_.erase(it);
    }
    if (listingCacheBytes_ + cost > limits_.listingCacheBytes) {
        listings_.clear();
        listingCacheBytes_ = 0;
    }
    listings_[key] = CachedListing{etag, body};
    listingCacheBytes_ += cost;
}

size_t MailApi::listingCacheBytes() const {
    std::lock_guard<std::mutex> lock(cacheMutex_);
    return listingCacheBytes_;
}

MailApi::MailApi(Store& store, Authenticator& auth, ApiLimits limits, std::function<int64_t()> clock, ClassView classView)
    : store_(store), auth_(auth), limits_(limits), clock_(std::move(clock)), class_(std::move(classView)),
      responses_(limits.maxResponseBytesInFlight) {
    if (!clock_) clock_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
}

// Framing first (RFC 9112): what this server cannot frame exactly is refused, and the connection
// closed, so that nothing left unread is taken for the next request (request smuggling). Then the
// limits and the method.
std::optional<ApiResponse> MailApi::checkFraming(const ApiRequest& request) const {
    auto refuse = [&](int status, const std::string& why) {
        ApiResponse r = error(status, why);
        r.closeConnection = true;
        return r;
    };
    // RFC 9110 2.5: a later HTTP/1.x is read as the 1.1 it includes (answered 1.1); another major
    // version is not this protocol.
    const std::string& v = request.version;
    if (v.size() != 8 || v.compare(0, 7, "HTTP/1.") != 0 || !std::isdigit(static_cast<unsigned char>(v[7])))
        return refuse(505, "HTTP version not supported: use HTTP/1.1");
    // RFC 9110 9.1: a method this server does not know is 501; a known one it does not allow, 405.
    static const std::set<std::string> kKnownMethods = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT",
                                                        "OPTIONS", "TRACE", "PATCH"};
    // Closed: what framing an unknown method's request has is not known.
    if (!kKnownMethods.count(request.method))
        return refuse(501, "Method " + request.method.substr(0, 20) + " not implemented; use GET or HEAD");
    auto wrongMethod = [&] {
        ApiResponse r = error(405, "Method " + request.method.substr(0, 20) + " not allowed; use GET or HEAD");
        r.headers.emplace_back("Allow", "GET, HEAD");
        return r;
    };
    // A POST or PUT with a body is refused for its method (RFC 9110 15.5.6), and the connection ends:
    // its body is never read.
    const bool readsNoBody = request.method == "GET" || request.method == "HEAD";
    auto bodyRefusal = [&](const std::string& why) {
        if (readsNoBody) return refuse(400, why);
        ApiResponse r = wrongMethod();
        r.closeConnection = true;
        return r;
    };
    int contentLengths = 0, hosts = 0, authorizations = 0;
    for (const auto& [name, value] : request.headers) {
        if (text::equalsIgnoringCase(name, "Host")) ++hosts;
        if (text::equalsIgnoringCase(name, "Authorization")) ++authorizations;
        if (name.empty() || name.find_first_of(" \t") != std::string::npos)  // RFC 9112 5.1: no space before ':'
            return refuse(400, "Malformed header field name");
        if (text::equalsIgnoringCase(name, "Transfer-Encoding"))
            return bodyRefusal("Transfer-Encoding is not accepted on a GET (no request body here)");
        if (text::equalsIgnoringCase(name, "Content-Length")) {
            ++contentLengths;
            if (value.find_first_not_of(" 0") != std::string::npos)
                return bodyRefusal("A GET carries no body (Content-Length must be 0)");
        }
    }
    if (contentLengths > 1) return refuse(400, "Duplicate Content-Length");
    // RFC 9112 3.2: an HTTP/1.1 request without Host, or any request with more than one, gets 400.
    if (hosts > 1) return refuse(400, "More than one Host header field");
    // RFC 9110 5.3: Authorization is not a list; two of them would let the proxy in front and this
    // server read different credentials.
    if (authorizations > 1) return refuse(400, "More than one Authorization header field");
    if (hosts == 0 && request.version != "HTTP/1.0")
        return refuse(400, "An HTTP/1.1 request needs a Host header field (RFC 9112 3.2)");
    if (request.target.size() > limits_.maxUriLength)
        return error(414, "Request target longer than " + std::to_string(limits_.maxUriLength) + " octets");
    size_t headerBytes = 0;
    for (const auto& [k, v] : request.headers) headerBytes += k.size() + v.size() + 4;
    if (headerBytes > limits_.maxHeaderBytes)
        return error(431, "Request header fields larger than " + std::to_string(limits_.maxHeaderBytes) + " octets");
    if (!readsNoBody) return wrongMethod();
    return std::nullopt;
}

// The resources (docs/retriever.md): each path shape and the member that answers it. {address} is
// a mailbox (lower-cased), {id} a message number.
const MailApi::Resource MailApi::kResources[] = {
    {{}, Kind::Inbox, Need::Owner, &MailApi::inboxPage},
    {{"mailboxes", "{address}"}, Kind::Inbox, Need::Owner, &MailApi::inboxPage},
    {{"mailboxes", "{address}", "messages"}, Kind::List, Need::Owner, &MailApi::listing},
    {{"mailboxes", "{address}", "messages", "{id}"}, Kind::Message, Need::Owner, &MailApi::message},
    {{"mailboxes", "{address}", "messages", "{id}", "raw"}, Kind::Raw, Need::Owner, &MailApi::message},
    {{"mailboxes", "{address}", "messages", "{id}", "page"}, Kind::Page, Need::Owner, &MailApi::message},
    {{"mailboxes", "{address}", "messages", "{id}", "parts", "{part}"}, Kind::Part, Need::Owner, &MailApi::message},
    {{"mailboxes", "{address}", "messages", "{id}", "story"}, Kind::Story, Need::Owner, &MailApi::story},
    // The class board (class servers): the instructor's account only.
    {{"class"}, Kind::Board, Need::Instructor, &MailApi::classBoardPage},
    {{"metrics"}, Kind::Metrics, Need::Instructor, &MailApi::metrics},
    // Mozilla's autoconfig for mail clients (autoconfig.h), no login: what Thunderbird asks for.
    {{".well-known", "autoconfig", "mail", "config-v1.1.xml"}, Kind::Autoconfig, Need::Nobody, &MailApi::autoconfig},
    {{"mail", "config-v1.1.xml"}, Kind::Autoconfig, Need::Nobody, &MailApi::autoconfig},
};

// Finds the resource for the request target. Poco::URI decodes percent-escapes in each segment;
// nothing from the path reaches SQL except as a bound parameter, and nothing reaches the file system.
std::variant<MailApi::Route, ApiResponse> MailApi::route(const ApiRequest& request) const {
    std::vector<std::string> segments;
    Route found;
    try {
        Poco::URI uri(request.target);
        uri.getPathSegments(segments);
        found.query = uri.getQueryParameters();
        // RFC 9112 3.2.2: the absolute-form (https://host/path, what a proxy is sent) MUST be accepted
        // by a server; its path is the resource. Another scheme, or no path at all, is not ours.
        const std::string scheme = Poco::toLower(uri.getScheme());
        bool absoluteForm = (scheme == "https" || scheme == "http") && !uri.getAuthority().empty();
        bool originForm = scheme.empty() && !request.target.empty() && request.target[0] == '/';
        if (!absoluteForm && !originForm)
            return error(400, "Request target must be an absolute path (/mailboxes/...) or an https:// URL");
    } catch (const Poco::Exception&) {
        return error(400, "Malformed request target");
    }
    bool badId = false, badPart = false;
    for (const Resource& resource : kResources) {
        if (resource.path.size() != segments.size()) continue;
        Route candidate = found;
        bool match = true;
        for (size_t i = 0; match && i < segments.size(); ++i) {
            const std::string& want = resource.path[i];
            if (want == "{address}") candidate.mailbox = auth_.normalizeUser(segments[i]);  // "ana" is ana@<lab domain>, as at login
            else if (want == "{id}") badId = !(match = parseNumber(segments[i], candidate.id)) || badId;
            else if (want == "{part}") badPart = !(match = parseNumber(segments[i], candidate.part)) || badPart;
            else match = segments[i] == want;
        }
        if (match) {
            candidate.kind = resource.kind;
            candidate.need = resource.need;
            candidate.answer = resource.answer;
            return candidate;
        }
    }
    if (badId) return error(404, "No such message");
    if (badPart) return error(404, "No such part: parts are numbered from 1 (see the message's \"attachments\")");
    if (!segments.empty() && segments[0] == "mailboxes") return error(404, "No such resource");
    return error(404, "No such resource; see /mailboxes/<address>/messages");
}

// Who asks (RFC 7617 Basic; no registration here: accounts are made by the sender), and whether the
// mailbox is theirs. Returns the user, or the refusal.
std::variant<std::string, ApiResponse> MailApi::authenticate(const ApiRequest& request, Route& route) {
    std::string user, password;
    std::string authorization = request.header("Authorization");
    auto unauthorized = [&](const std::string& why) {
        ApiResponse r = error(401, why);
        r.headers.emplace_back("WWW-Authenticate",
                               "Basic realm=\"maillab " + auth_.policy().labDomain + "\", charset=\"UTF-8\"");
        return r;
    };
    if (authorization.empty()) return unauthorized("Authentication required: send the account's address and password");
    if (!parseBasicAuthorization(authorization, user, password))
        return unauthorized("Malformed Authorization header: expected Basic credentials");
    if (!request.overTls && !limits_.plaintextAuthAllowed)
        // RFC 7617 4: Basic sends the password in clear; without TLS it is refused unless the lab allows it.
        return error(403, "Credentials sent without TLS are refused (start the server with --allow-plaintext-auth to see why)");
    AuthResult result;
    try {
        if (request.mayWait) {
            result = auth_.authenticate(user, password, false, request.peer);
        } else if (std::optional<AuthResult> atOnce = auth_.authenticateWithoutWaiting(user, password, request.peer)) {
            result = std::move(*atOnce);
        } else {
            ApiResponse later;
            later.handOff = true;
            later.triedUser = user;
            return later;
        }
    } catch (const std::exception&) {
        ApiResponse r = error(503, "Authentication temporarily unavailable");
        r.triedUser = user;
        return r;
    }
    if (result.outcome == AuthOutcome::Throttled) {
        if (result.knownAccount) noteActivity(result.user, activity::loginFailedKind(result.knownSource));
        ApiResponse r = error(429, "Too many failed logins for this account; no password checked");
        r.headers.emplace_back("Retry-After", std::to_string(result.retryAfterSeconds));
        r.closeConnection = true;
        r.triedUser = user;
        return r;
    }
    if (result.outcome != AuthOutcome::Ok) {
        if (result.knownAccount) noteActivity(result.user, activity::loginFailedKind(result.knownSource));
        ApiResponse r = unauthorized("Wrong address or password (the sender's account and password; forgotten it? "
                                     "`make password USER=" + auth_.nameToShow(result.user) +
                                     "` sets a new one, on a class server the instructor)");
        r.closeConnection = true;
        r.triedUser = user;
        return r;
    }
    noteActivity(result.user, activity::kLogin);
    if (route.need == Need::Instructor) {
        auto account = store_.findAccount(result.user);
        if (!account || account->role != "instructor") {
            ApiResponse r = error(403, "The class board is for the instructor's account, not " + result.user +
                                           " (the instructor runs: maillab-admin set-role ACCOUNT instructor)");
            r.user = result.user;
            return r;
        }
        return result.user;
    }
    if (route.mailbox.empty()) route.mailbox = result.user;
    if (route.mailbox != result.user) {
        ApiResponse r = error(403, "You may read only your own mailbox, " + result.user + ": /mailboxes/" +
                                       result.user + "/messages");
        r.user = result.user;
        return r;
    }
    return result.user;
}

ApiResponse MailApi::handle(const ApiRequest& request) {
    if (auto refused = checkFraming(request)) return *refused;
    auto routed = route(request);
    if (auto* refused = std::get_if<ApiResponse>(&routed)) return *refused;
    Route& resource = std::get<Route>(routed);
    auto who = resource.need == Need::Nobody ? std::variant<std::string, ApiResponse>(std::string())
                                             : authenticate(request, resource);
    if (auto* refused = std::get_if<ApiResponse>(&who)) return *refused;
    ApiResponse response;
    try {
        response = (this->*resource.answer)(resource, request);
    } catch (const StoreError&) {
        return error(503, "Mail store busy; try again");
    }
    const std::string& user = std::get<std::string>(who);
    if (response.handOff) {
        // The rest on a worker: the login is not checked again (nor its activity noted twice).
        response.user = user;
        response.rest = [this, resource, user, rest = std::move(response.rest)]() {
            ApiResponse finished;
            try {
                finished = rest();
            } catch (const StoreError&) {
                finished = error(503, "Mail store busy; try again");
            }
            finishAnswer(finished, resource, user);
            return finished;
        };
        return response;
    }
    finishAnswer(response, resource, user);
    return response;
}

void MailApi::finishAnswer(ApiResponse& response, const Route& route, const std::string& user) {
    response.headers.emplace_back("X-Content-Type-Options", "nosniff");
    response.user = user;
    if (route.need == Need::Owner && response.status == 200) noteActivity(response.user, activity::kMailboxRead);
    if (response.status == 304) noteActivity(response.user, activity::kNotModified);
}

// An event loop answers only what is cheap (errors, 304s, cached listings, autoconfig); a resource
// that reads or builds much (a whole message of up to 10 MB, its MIME decoding, an HTML page, the
// class board) would hold every other connection of the loop meanwhile, so its rest goes to a worker.
ApiResponse MailApi::onWorker(const Route& route, const ApiRequest& request) {
    ApiResponse later;
    later.handOff = true;
    ApiRequest waiting = request;
    waiting.mayWait = true;
    later.rest = [this, route, waiting = std::move(waiting)]() { return (this->*route.answer)(route, waiting); };
    return later;
}

void MailApi::noteActivity(const std::string& account, const char* kind) {
    if (class_.activity) class_.activity->note(account, kind, clock_());
}

ApiResponse MailApi::classBoardPage(const Route& route, const ApiRequest& request) {
    if (!request.mayWait) return onWorker(route, request);
    Board board = classBoard(store_, class_.roster, clock_(), class_.stuckSeconds);
    ApiResponse r;
    r.body = boardHtml(board, class_.refreshSeconds);
    r.headers.emplace_back("Content-Type", "text/html; charset=utf-8");
    r.headers.emplace_back("Cache-Control", "no-store");
    r.headers.emplace_back("Content-Security-Policy", kPagePolicy);
    return r;
}

ApiResponse MailApi::autoconfig(const Route&, const ApiRequest& request) {
    ApiResponse r;
    r.body = autoconfig::configXml(autoconfig_, autoconfig::hostFor(autoconfig_, request.header("Host")));
    r.headers.emplace_back("Content-Type", "text/xml; charset=utf-8");
    r.headers.emplace_back("Cache-Control", "no-cache");
    return r;
}

ApiResponse MailApi::metrics(const Route& route, const ApiRequest& request) {
    if (!request.mayWait) return onWorker(route, request);
    Board board = classBoard(store_, class_.roster, clock_(), class_.stuckSeconds);
    ApiResponse r;
    r.body = boardMetrics(board);
    r.headers.emplace_back("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    r.headers.emplace_back("Cache-Control", "no-store");
    return r;
}

// A page of a mailbox (?offset=&limit=), its totals, and its validator: the newest id and the count
// change with every delivery, so a page's ETag changes exactly when its content can.
std::variant<MailApi::Page, ApiResponse> MailApi::page(const Route& route, char kind) {
    Page p;
    p.limit = limits_.defaultPageSize;
    if (auto bad = pageFrom(route.query, limits_.maxPageSize, p.offset, p.limit)) return *bad;
    p.stats = store_.mailboxStats(route.mailbox);
    p.etag = std::string("\"") + kind + std::to_string(p.stats.newestId) + "." + std::to_string(p.stats.count) + "." +
             std::to_string(p.offset) + "." + std::to_string(p.limit) + "\"";
    return p;
}

ApiResponse MailApi::listing(const Route& route, const ApiRequest& request) {
    auto paged = page(route, 'L');
    if (auto* bad = std::get_if<ApiResponse>(&paged)) return *bad;
    auto& [offset, limit, stats, etag] = std::get<Page>(paged);
    std::string key = route.mailbox + "|" + std::to_string(offset) + "|" + std::to_string(limit);
    std::string cached;
    if (cachedListing(key, etag, cached)) {
        return conditional(request, ok("application/json; charset=utf-8", std::move(cached), etag, stats.changedAt),
                           etag, stats.changedAt);
    }
    if (!request.mayWait) return onWorker(route, request);  // a page of summaries to read and render
    Poco::JSON::Object body;
    body.set("mailbox", route.mailbox);
    body.set("total", stats.count);
    body.set("offset", offset);
    body.set("limit", limit);
    Poco::JSON::Array list;
    for (const auto& m : store_.listMessages(route.mailbox, offset, limit)) list.add(summaryJson(m));
    body.set("messages", list);
    std::string base = "/mailboxes/" + route.mailbox + "/messages";
    if (offset + limit < stats.count)
        body.set("next", base + "?offset=" + std::to_string(offset + limit) + "&limit=" + std::to_string(limit));
    else
        body.set("next", Poco::Dynamic::Var());
    std::string json = toJson(body);
    rememberListing(key, etag, json);
    return conditional(request, ok("application/json; charset=utf-8", std::move(json), etag, stats.changedAt),
                       etag, stats.changedAt);
}

// One message: as JSON (summary, header fields, decoded text, parts), exactly as stored, as its own
// HTML page, or one of its parts as a download.
ApiResponse MailApi::message(const Route& route, const ApiRequest& request) {
    auto found = store_.findMessage(route.mailbox, route.id);
    if (!found) return error(404, "No message " + std::to_string(route.id) + " in " + route.mailbox);
    const MessageSummary m = *found;
    // Stored messages never change, so the id is a strong validator: a revalidation is answered
    // 304 without reading the message at all.
    // The raw octets as message/rfc822 (a browser saves it, for a mail program) or, with ?view=text,
    // as text the browser shows in its tab (what the pages link to: "show original").
    const bool rawAsText = route.kind == Kind::Raw &&
                           std::any_of(route.query.begin(), route.query.end(),
                                       [](const auto& p) { return p.first == "view" && p.second == "text"; });
    const char* tag = rawAsText ? "T" : route.kind == Kind::Raw ? "R" : route.kind == Kind::Page ? "P"
                                                                     : route.kind == Kind::Part ? "A" : "M";
    std::string etag = std::string("\"") + tag + std::to_string(m.id) +
                       (route.kind == Kind::Part ? "." + std::to_string(route.part) : "") + "\"";
    if (notModified(request, etag, m.receivedAt)) return conditional(request, ApiResponse{}, etag, m.receivedAt);
    if (!request.mayWait) return onWorker(route, request);
    // Its place in the response budget first, then the text: 40 parallel GETs of a 10 MB message
    // wait their turn (503, Retry-After) instead of holding 40 copies at once. A part costs the
    // stored text, its decoded copy and the response.
    size_t factor = route.kind == Kind::Raw ? 2 : route.kind == Kind::Part ? 3 : kJsonCostFactor;
    std::shared_ptr<void> hold = responses_.take(static_cast<size_t>(m.size) * factor);
    if (!hold) {
        ApiResponse busy = error(503, "Too many large responses at once; try again in a moment");
        busy.headers.emplace_back("Retry-After", "2");
        return busy;
    }
    auto message = store_.getMessage(route.mailbox, route.id);
    if (!message) return error(404, "No message " + std::to_string(route.id) + " in " + route.mailbox);
    ApiResponse full;
    if (route.kind == Kind::Raw) {
        full = ok(rawAsText ? "text/plain; charset=utf-8" : "message/rfc822", std::move(message->raw), etag, m.receivedAt);
        if (!rawAsText)
            full.headers.emplace_back("Content-Disposition",
                                      "inline; filename=\"message-" + std::to_string(m.id) + ".eml\"");
    } else if (route.kind == Kind::Part) {
        mime::View view = mime::viewMessage(message->raw, limits_.mime, static_cast<size_t>(route.part));
        message.reset();
        if (!view.partFound)
            return error(404, "Message " + std::to_string(m.id) + " has no part " + std::to_string(route.part) +
                                  " (its parts: 1 to " + std::to_string(view.parts.size()) + ")");
        const mime::Part& part = view.parts[static_cast<size_t>(route.part) - 1];
        // RFC 6266: always a download, under a name that cannot leave the download folder or the
        // header line; a type a browser could run is served as octets (and nosniff, in handle()).
        full = ok(mime::servedContentType(part.contentType, part.charset), std::move(view.partBytes), etag, m.receivedAt);
        full.headers.emplace_back("Content-Disposition",
                                  mime::attachmentDisposition(mime::safeFileName(part.fileName, part.index)));
        full.headers.emplace_back("Content-Security-Policy", kPartPolicy);
    } else {
        mime::View view = mime::viewMessage(message->raw, limits_.mime);
        rfc5322::HeaderSection section = rfc5322::parseHeaderSection(message->raw);
        if (route.kind == Kind::Page) {
            message.reset();
            full = ok("text/html; charset=utf-8", messagePage(route, m, view), etag, m.receivedAt);
            full.headers.emplace_back("Content-Security-Policy", kPagePolicy);
        } else {
            Poco::JSON::Object body = summaryJson(m);
            Poco::JSON::Array headerList;  // the fields as written: the wire, for the lab
            for (const auto& h : section.fields) {
                Poco::JSON::Object field;
                field.set("name", validUtf8(h.name));
                field.set("value", validUtf8(h.value));
                headerList.add(field);
            }
            message.reset();  // the stored text goes before the JSON is made: one large copy at a time
            body.set("headers", headerList);
            if (!view.cc.empty()) body.set("cc", view.cc);
            std::string base = "/mailboxes/" + route.mailbox + "/messages/" + std::to_string(m.id);
            body.set("raw", base + "/raw");
            body.set("page", base + "/page");
            body.set("body_type", view.textType);
            Poco::JSON::Array parts, attachments;
            for (const mime::Part& part : view.parts) {
                Poco::JSON::Object p;
                p.set("index", static_cast<int64_t>(part.index));
                p.set("type", part.contentType);
                p.set("name", part.fileName);
                p.set("disposition", part.disposition);
                p.set("size", static_cast<int64_t>(part.size));
                p.set("url", base + "/parts/" + std::to_string(part.index));
                if (part.isTextBody) p.set("text_body", true);
                parts.add(p);
                if (part.isAttachment) attachments.add(p);
            }
            body.set("attachments", attachments);
            body.set("parts", parts);
            Poco::JSON::Array problems;
            for (const auto& problem : view.problems) problems.add(problem);
            body.set("mime_problems", problems);
            body.set("body", std::move(view.text));
            full = ok("application/json; charset=utf-8", toJson(body), etag, m.receivedAt);
        }
    }
    full.hold = std::move(hold);
    return conditional(request, std::move(full), etag, m.receivedAt);
}

// A message on its own page: decoded header fields, the whole text, its attachments as links, the
// raw message one click away. Everything from the mail is escaped text.
std::string MailApi::messagePage(const Route& route, const MessageSummary& m, const mime::View& view) const {
    std::string base = "/mailboxes/" + htmlEscape(route.mailbox) + "/messages/" + std::to_string(m.id);
    std::string subject = view.subject.empty() ? "(no subject)" : view.subject;
    std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + htmlEscape(subject) +
                       "</title><style>" + kInboxStyle + "</style></head><body>\n<p><a id=\"inbox\" href=\"/mailboxes/" +
                       htmlEscape(route.mailbox) + "/\">Inbox</a></p>\n<h1 id=\"subject\">" + htmlEscape(subject) +
                       "</h1>\n<table id=\"fields\">";
    auto row = [&](const char* id, const char* label, const std::string& value) {
        if (!value.empty())
            html += std::string("<tr><th>") + label + "</th><td id=\"" + id + "\">" + htmlEscape(value) + "</td></tr>";
    };
    row("from", "From", view.from);
    row("sender", "Sent by (authenticated)", validUtf8(m.envelopeFrom));
    row("to", "To", view.to);
    row("cc", "Cc", view.cc);
    row("date", "Date", view.date);
    html += "</table>\n";
    bool any = false;
    for (const mime::Part& part : view.parts) {
        if (!part.isAttachment) continue;
        if (!any) html += "<h2>Attachments</h2>\n<ul id=\"attachments\">\n";
        any = true;
        std::string name = part.fileName.empty() ? "part " + std::to_string(part.index) : part.fileName;
        html += "<li><a class=\"attachment\" href=\"" + base + "/parts/" + std::to_string(part.index) + "\">" +
                htmlEscape(name) + "</a> (" + htmlEscape(part.contentType) + ", " + humanSize(part.size) + ")</li>\n";
    }
    if (any) html += "</ul>\n";
    if (view.textType == "text/html")
        html += "<p class=\"note\">This message is HTML: shown here as its text, nothing of it is run or loaded.</p>\n";
    html += "<pre id=\"body\">" + htmlEscape(view.text) + "</pre>\n";
    if (!view.problems.empty()) {
        html += "<h2>Could not all be decoded</h2>\n<ul id=\"problems\">\n";
        for (const auto& problem : view.problems) html += "<li>" + htmlEscape(problem) + "</li>\n";
        html += "</ul>\n";
    }
    html += "<p><a id=\"raw\" href=\"" + base + "/raw?view=text\">raw</a> (as sent, " + std::to_string(m.size) +
            " octets) · <a id=\"json\" href=\"" + base + "\">JSON</a> · <a id=\"story\" href=\"" + base +
            "/story\">how it arrived</a> (the SMTP session that delivered it)</p>\n</body></html>\n";
    return html;
}

std::shared_ptr<void> ResponseBudget::take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    // One response alone always gets through (else a message larger than the budget is unreadable).
    if (inUse_ > 0 && inUse_ + bytes > limit_) return nullptr;
    inUse_ += bytes;
    // Not null (a null shared_ptr tests false): it points at the budget, and its deleter gives back.
    return std::shared_ptr<void>(static_cast<void*>(this), [this, bytes](void*) {
        std::lock_guard<std::mutex> lock(mutex_);
        inUse_ -= bytes;
    });
}

size_t ResponseBudget::inUse() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return inUse_;
}

// The session that delivered the message (issue 19): an HTML page, or the stored JSON when the
// client asks for JSON (Accept: application/json).
ApiResponse MailApi::story(const Route& route, const ApiRequest& request) {
    auto found = store_.findMessage(route.mailbox, route.id);
    if (!found) return error(404, "No message " + std::to_string(route.id) + " in " + route.mailbox);
    // A stored story never changes; its two representations (Vary: Accept) are told apart by their
    // strong validators (RFC 9110 8.8.3: a strong ETag names one representation).
    bool asJson = request.header("Accept").find("application/json") != std::string::npos;
    std::string etag = "\"S" + std::to_string(found->id) + (asJson ? "j" : "h") + "\"";
    if (notModified(request, etag, found->receivedAt)) {
        ApiResponse same = conditional(request, ApiResponse{}, etag, found->receivedAt);
        same.headers.emplace_back("Vary", "Accept");  // RFC 9110 15.4.5: as the 200 would say
        return same;
    }
    if (!request.mayWait) return onWorker(route, request);
    std::string json = store_.messageStory(route.mailbox, route.id).value_or("");
    ApiResponse full;
    if (asJson) {
        full = ok("application/json; charset=utf-8", json.empty() ? "{}" : json, etag, found->receivedAt);
    } else {
        full = ok("text/html; charset=utf-8", storyHtml(json, route.mailbox, route.id), etag, found->receivedAt);
        full.headers.emplace_back("Content-Security-Policy", kPagePolicy);
    }
    full.headers.emplace_back("Vary", "Accept");
    return conditional(request, std::move(full), etag, found->receivedAt);
}

ApiResponse MailApi::inboxPage(const Route& route, const ApiRequest& request) {
    // Paged like the JSON listing, and each message shown by a preview of its body: the
    // page never holds whole messages (a 10 MB body would make a 60 MB page of escapes).
    auto paged = page(route, 'H');
    if (auto* bad = std::get_if<ApiResponse>(&paged)) return *bad;
    auto& [offset, limit, stats, etag] = std::get<Page>(paged);
    if (notModified(request, etag, stats.changedAt))
        return conditional(request, ApiResponse{}, etag, stats.changedAt);
    if (!request.mayWait) return onWorker(route, request);  // previews of up to maxPageSize messages
    std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Inbox of " +
                       htmlEscape(route.mailbox) + "</title><style>" + kInboxStyle + "</style></head><body>\n<h1>Inbox of " +
                       htmlEscape(route.mailbox) + "</h1>\n<p id=\"count\">" + std::to_string(stats.count) +
                       (stats.count == 1 ? " message" : " messages") +
                       (offset >= stats.count && offset > 0
                            ? std::string(" (none shown: this page starts after the last one; the newest are at ?offset=0)")
                        : stats.count > limit || offset > 0
                            ? " (" + std::to_string(offset + 1) + " to " +
                                  std::to_string(std::min(stats.count, offset + limit)) + " shown, newest first)"
                            : "") +
                       "</p>\n<table id=\"messages\"><thead><tr><th>#</th><th>From (header)</th><th>Sent by (authenticated)</th><th>Subject</th><th>Date</th>"
                       "<th>Size</th></tr></thead><tbody>\n";
    std::string base = "/mailboxes/" + htmlEscape(route.mailbox) + "/messages/";  // lab addresses need no escaping in a path
    for (const auto& [m, start] : store_.listMessageStarts(route.mailbox, offset, limit, kPreviewReadBytes)) {
        std::string id = std::to_string(m.id);
        html += "<tr class=\"message\" data-id=\"" + id + "\"><td>" + id + "</td><td class=\"from\">" +
                (m.from.empty() ? std::string("(no From: header)") : htmlEscape(shortened(mime::displayAddresses(m.from)))) +
                "</td><td class=\"sender\">" +
                htmlEscape(shortened(validUtf8(m.envelopeFrom))) + "</td><td class=\"subject\"><a class=\"open\" href=\"" +
                base + id + "/page\">" + htmlEscape(shortened(m.subject.empty() ? "(no subject)" : mime::decodeHeader(m.subject))) +
                "</a><details><summary>preview</summary><pre class=\"body\">" +
                htmlEscape(bodyPreview(start, m.size, limits_.mime)) + "</pre><a href=\"" + base + id +
                "/raw?view=text\">raw</a> · <a href=\"" + base + id + "\">JSON</a> · <a class=\"story\" href=\"" + base + id +
                "/story\">how it arrived</a></details></td><td>" +
                htmlEscape(shortened(validUtf8(m.date))) + "</td><td>" + std::to_string(m.size) + "</td></tr>\n";
    }
    html += "</tbody></table>\n";
    std::string page = "?limit=" + std::to_string(limit) + "&amp;offset=";
    if (offset > 0)
        html += "<a id=\"newer\" href=\"" + page + std::to_string(std::max<int64_t>(0, offset - limit)) + "\">newer</a>\n";
    if (offset + limit < stats.count)
        html += "<a id=\"older\" href=\"" + page + std::to_string(offset + limit) + "\">older</a>\n";
    html += "</body></html>\n";
    ApiResponse full = ok("text/html; charset=utf-8", html, etag, stats.changedAt);
    // The page holds no scripts and loads nothing: say so to the browser.
    full.headers.emplace_back("Content-Security-Policy", kPagePolicy);
    return conditional(request, full, etag, stats.changedAt);
}

}  // namespace maillab::http
