// The retriever's resources without sockets: routing, Basic auth, ownership, conditional GET, errors.
#include "fixtures.h"

#include "../../common/lab/password.h"
#include "../../retriever/mail_api.h"

#include "catch.hpp"

using namespace maillab;
using namespace maillab::http;
using maillab::testing::LabFixture;

namespace {
struct ApiHarness {
    LabFixture lab;
    std::unique_ptr<MailApi> api;
    std::vector<int64_t> ids;

    explicit ApiHarness(ApiLimits limits = {}) {
        lab.addUser("ana@447.edu", "11111447");
        lab.addUser("bob@447.edu", "22222447");
        api = std::make_unique<MailApi>(*lab.store, *lab.auth, limits, [this] { return lab.now; });
        for (int i = 1; i <= 3; ++i) {
            NewMessage m;
            m.queueId = "Q" + std::to_string(i);
            m.envelopeFrom = "ana@447.edu";
            m.recipients = {"bob@447.edu"};
            m.from = "Ana <ana@447.edu>";
            m.to = "bob@447.edu";
            m.subject = "Note <" + std::to_string(i) + ">";
            m.date = "Mon, 23 Nov 2026 10:00:00 +0000";
            m.receivedAt = 1795000000 + i;
            m.raw = "From: Ana <ana@447.edu>\r\nSubject: " + m.subject + "\r\n\r\nbody " + std::to_string(i) + "\r\n";
            ids.push_back(lab.store->deliver(m).front());
        }
    }

    // A request as a client sends it: Host, Basic credentials (none when user is empty), extra fields.
    static ApiRequest request(const std::string& target, const std::string& user = "bob@447.edu",
                              const std::string& password = "22222447",
                              std::vector<std::pair<std::string, std::string>> extra = {}, const std::string& method = "GET") {
        ApiRequest r;
        r.method = method;
        r.target = target;
        r.headers.emplace_back("Host", "localhost");
        if (!user.empty()) r.headers.emplace_back("Authorization", "Basic " + base64Encode(user + ":" + password));
        for (auto& h : extra) r.headers.push_back(h);
        return r;
    }

    ApiResponse get(const std::string& target, const std::string& user = "bob@447.edu",
                    const std::string& password = "22222447",
                    std::vector<std::pair<std::string, std::string>> extra = {}, const std::string& method = "GET") {
        return api->handle(request(target, user, password, std::move(extra), method));
    }

    // A GET as bob that must be answered 200 with this Content-Type (both checked here).
    ApiResponse served(const std::string& target, const std::string& contentType) {
        ApiResponse r = get(target);
        CHECK(r.status == 200);
        CHECK(r.header("Content-Type") == contentType);
        return r;
    }
};
}  // namespace

TEST_CASE("listing: own mailbox, newest first, paged, JSON", "[api]") {
    ApiHarness h;
    auto r = h.served("/mailboxes/bob@447.edu/messages", "application/json; charset=utf-8");
    CHECK(r.body.find("\"total\":3") != std::string::npos);
    CHECK(r.body.find("Note <3>") < r.body.find("Note <1>"));
    auto page = h.get("/mailboxes/bob%40447.edu/messages?offset=1&limit=1");
    CHECK(page.status == 200);
    CHECK(page.body.find("Note <2>") != std::string::npos);
    CHECK(page.body.find("Note <3>") == std::string::npos);
    CHECK(page.body.find("\"next\":\"/mailboxes/bob@447.edu/messages?offset=2&limit=1\"") != std::string::npos);
    CHECK(h.get("/mailboxes/bob@447.edu/messages?limit=0").status == 400);
    CHECK(h.get("/mailboxes/bob@447.edu/messages?offset=-1").status == 400);
}

TEST_CASE("one message as JSON and raw", "[api]") {
    ApiHarness h;
    std::string id = std::to_string(h.ids[0]);
    auto json = h.get("/mailboxes/bob@447.edu/messages/" + id);
    CHECK(json.status == 200);
    CHECK(json.body.find("\"body\":\"body 1\\n\"") != std::string::npos);  // the decoded text: lines end in "\n"
    CHECK(json.body.find("\"body_type\":\"text/plain\"") != std::string::npos);
    CHECK(json.body.find("{\"name\":\"Subject\",\"value\":\"Note <1>\"}") != std::string::npos);
    auto raw = h.served("/mailboxes/bob@447.edu/messages/" + id + "/raw", "message/rfc822");
    CHECK(raw.body.rfind("From: Ana <ana@447.edu>\r\n", 0) == 0);
    CHECK(raw.header("Content-Disposition").find(".eml") != std::string::npos);
    // ?view=text: the same octets for the browser's tab, under their own validator.
    auto shown = h.served("/mailboxes/bob@447.edu/messages/" + id + "/raw?view=text", "text/plain; charset=utf-8");
    CHECK(shown.body == raw.body);
    CHECK(shown.header("Content-Disposition").empty());
    CHECK(shown.header("ETag") != raw.header("ETag"));
    auto page = h.served("/mailboxes/bob@447.edu/messages/" + id + "/page", "text/html; charset=utf-8");
    CHECK(page.body.find("/raw?view=text\">raw</a>") != std::string::npos);
}

TEST_CASE("the HTML inbox escapes what it shows", "[api][html]") {
    ApiHarness h;
    auto r = h.served("/", "text/html; charset=utf-8");
    CHECK(r.body.find("Note &lt;1&gt;") != std::string::npos);
    CHECK(r.body.find("Note <1>") == std::string::npos);
    CHECK(r.body.find("data-id=\"" + std::to_string(h.ids[2]) + "\"") != std::string::npos);
    CHECK(r.header("Content-Security-Policy").find("default-src 'none'") != std::string::npos);
    CHECK(h.get("/mailboxes/bob@447.edu/").status == 200);
}

TEST_CASE("authentication: 401 with a challenge, never registration", "[api][auth]") {
    ApiHarness h;
    auto none = h.get("/", "");
    CHECK(none.status == 401);
    CHECK(none.header("WWW-Authenticate") == "Basic realm=\"maillab 447.edu\", charset=\"UTF-8\"");
    auto wrong = h.get("/", "bob@447.edu", "00000447");
    CHECK(wrong.status == 401);
    CHECK(wrong.closeConnection);
    CHECK(wrong.body.find("make password USER=bob`") != std::string::npos);  // the fix names the account
    auto foreign = h.get("/", "<b>x</b>@elsewhere.org", "1");
    CHECK(foreign.status == 401);
    CHECK(foreign.body.find("USER=<you>") != std::string::npos);  // nothing the client sent comes back
    CHECK(h.get("/", "newuser@447.edu", "").status == 401);
    CHECK_FALSE(h.lab.store->findAccount("newuser@447.edu"));
    ApiRequest bad;
    bad.method = "GET";
    bad.target = "/";
    bad.headers.emplace_back("Host", "localhost");
    bad.headers.emplace_back("Authorization", "Basic !!!");
    CHECK(h.api->handle(bad).status == 401);
    // A bare name means the lab domain, as everywhere in the lab.
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "bob", "22222447").status == 200);
}

TEST_CASE("a user never reads another user's mail", "[api][auth]") {
    ApiHarness h;
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "ana@447.edu", "11111447").status == 403);
    CHECK(h.get("/mailboxes/BOB@447.edu/messages/" + std::to_string(h.ids[0]), "ana@447.edu", "11111447").status == 403);
    // Ana's own view of Bob's message id: not found, not leaked.
    CHECK(h.get("/mailboxes/ana@447.edu/messages/" + std::to_string(h.ids[0]), "ana@447.edu", "11111447").status == 404);
    auto list = h.get("/mailboxes/ana@447.edu/messages", "ana@447.edu", "11111447");
    CHECK(list.body.find("\"total\":0") != std::string::npos);
}

TEST_CASE("a spent guess budget gets 429 with Retry-After", "[api][auth]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 1;
    policy.guessRefillSeconds = 300;
    ApiHarness h;
    Authenticator strict(*h.lab.store, policy, [&] { return h.lab.now; });
    MailApi api(*h.lab.store, strict, {}, [&] { return h.lab.now; });
    ApiRequest r;
    r.method = "GET";
    r.target = "/";
    r.headers.emplace_back("Host", "localhost");
    r.headers.emplace_back("Authorization", "Basic " + base64Encode("bob@447.edu:x"));
    CHECK(api.handle(r).status == 401);
    auto locked = api.handle(r);
    CHECK(locked.status == 429);
    CHECK(locked.header("Retry-After") == "300");
}

TEST_CASE("conditional GET answers 304", "[api][cache]") {
    ApiHarness h;
    auto first = h.get("/mailboxes/bob@447.edu/messages");
    std::string etag = first.header("ETag");
    REQUIRE_FALSE(etag.empty());
    auto again = h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447", {{"If-None-Match", etag}});
    CHECK(again.status == 304);
    CHECK(again.body.empty());
    CHECK(again.header("ETag") == etag);
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447", {{"If-None-Match", "W/" + etag}}).status == 304);
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447", {{"If-None-Match", "\"other\""}}).status == 200);
    auto since = h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447",
                       {{"If-Modified-Since", first.header("Last-Modified")}});
    CHECK(since.status == 304);
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447",
                {{"If-Modified-Since", httpDate(1795000000)}}).status == 200);
    // New mail changes the validator.
    NewMessage m;
    m.queueId = "Q9";
    m.envelopeFrom = "ana@447.edu";
    m.recipients = {"bob@447.edu"};
    m.receivedAt = 1795000100;
    m.raw = "x\r\n";
    h.lab.store->deliver(m);
    CHECK(h.get("/mailboxes/bob@447.edu/messages", "bob@447.edu", "22222447", {{"If-None-Match", etag}}).status == 200);
    // A deletion (POP3's DELE) changes the listing too: its Last-Modified moves, so a client that
    // revalidates with If-Modified-Since alone gets the new listing, not a 304 for the old one.
    const std::string listing = "/mailboxes/bob@447.edu/messages";
    const std::string seen = h.get(listing).header("Last-Modified");
    REQUIRE(h.get(listing, "bob@447.edu", "22222447", {{"If-Modified-Since", seen}}).status == 304);
    REQUIRE(h.lab.store->deleteMessages("bob@447.edu", {h.ids[1]}) == 1);
    auto afterDelete = h.get(listing, "bob@447.edu", "22222447", {{"If-Modified-Since", seen}});
    CHECK(afterDelete.status == 200);
    CHECK(afterDelete.header("Last-Modified") != seen);
    CHECK(h.get("/", "bob@447.edu", "22222447", {{"If-Modified-Since", seen}}).status == 200);  // the HTML inbox too
    std::string id = std::to_string(h.ids[0]);
    auto msg = h.get("/mailboxes/bob@447.edu/messages/" + id);
    CHECK(h.get("/mailboxes/bob@447.edu/messages/" + id, "bob@447.edu", "22222447", {{"If-None-Match", msg.header("ETag")}}).status == 304);
}

TEST_CASE("errors: 404, 405 with Allow, 414, 431, 400, one JSON shape", "[api][errors]") {
    ApiLimits limits;
    limits.maxUriLength = 100;
    limits.maxHeaderBytes = 300;
    ApiHarness h(limits);
    auto missing = h.get("/mailboxes/bob@447.edu/messages/999999");
    CHECK(missing.status == 404);
    CHECK(missing.body.find("\"code\":\"not_found\"") != std::string::npos);
    CHECK(missing.body.find("\"status\":404") != std::string::npos);
    CHECK(h.get("/mailboxes/bob@447.edu/messages/abc").status == 404);
    CHECK(h.get("/mailboxes/bob@447.edu/messages/1/other").status == 404);
    CHECK(h.get("/etc/passwd").status == 404);
    CHECK(h.get("/mailboxes/bob@447.edu/messages/1%27%20OR%201=1").status == 404);
    auto post = h.get("/", "bob@447.edu", "22222447", {}, "POST");
    CHECK(post.status == 405);
    CHECK(post.header("Allow") == "GET, HEAD");
    CHECK_FALSE(post.closeConnection);  // no body: the connection serves on
    // With a body: still the method's 405 (RFC 9110 15.5.6), and the connection ends (its body unread).
    auto posted = h.get("/", "bob@447.edu", "22222447", {{"Content-Length", "5"}}, "POST");
    CHECK(posted.status == 405);
    CHECK(posted.header("Allow") == "GET, HEAD");
    CHECK(posted.closeConnection);
    auto chunked = h.get("/", "bob@447.edu", "22222447", {{"Transfer-Encoding", "chunked"}}, "PUT");
    CHECK(chunked.status == 405);
    CHECK(chunked.closeConnection);
    CHECK(h.get("/", "bob@447.edu", "22222447", {{"Content-Length", "5"}}).status == 400);  // a GET with a body
    CHECK(h.get("/mailboxes/" + std::string(120, 'a')).status == 414);
    CHECK(h.get("/", "bob@447.edu", "22222447", {{"X-Big", std::string(400, 'x')}}).status == 431);
    // RFC 9112 3.2.2: the absolute-form is accepted, its path is the resource; other forms are not ours.
    CHECK(h.get("https://localhost:9100/mailboxes/bob@447.edu/messages").body.find("\"total\":3") != std::string::npos);
    CHECK(h.get("HTTP://elsewhere").status == 200);  // no path: "/", the inbox
    CHECK(h.get("ftp://localhost/").status == 400);
    CHECK(h.get("*").status == 400);
    CHECK(h.get("mailboxes/bob@447.edu/messages").status == 400);
    CHECK(h.get("/", "bob@447.edu", "22222447", {}, "HEAD").status == 200);
    // RFC 9110 9.1: a method nobody defined is 501 (and the connection ends: its framing is unknown);
    // a defined one that is not allowed here stays 405.
    auto unknown = h.get("/", "bob@447.edu", "22222447", {}, "FOO");
    CHECK(unknown.status == 501);
    CHECK(unknown.closeConnection);
    CHECK(unknown.body.find("\"code\":\"not_implemented\"") != std::string::npos);
    CHECK(h.get("/", "bob@447.edu", "22222447", {}, "PROPFIND").status == 501);
    CHECK(h.get("/", "bob@447.edu", "22222447", {}, "get").status == 501);  // methods are case-sensitive
    CHECK(h.get("/", "bob@447.edu", "22222447", {}, "OPTIONS").status == 405);
}

TEST_CASE("RFC 9110 2.5: a later HTTP/1.x is read as HTTP/1.1, another major version is 505", "[api][framing]") {
    ApiHarness h;
    ApiRequest r = ApiHarness::request("/");
    for (const char* version : {"HTTP/1.1", "HTTP/1.2", "HTTP/1.9"}) {
        r.version = version;
        CHECK(h.api->handle(r).status == 200);
    }
    ApiRequest noHost = r;
    noHost.headers.erase(noHost.headers.begin());  // Host: a later 1.x needs one as 1.1 does
    CHECK(h.api->handle(noHost).status == 400);
    for (const char* version : {"HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "HTTP/1.x", "HTTP/3"}) {
        r.version = version;
        auto refused = h.api->handle(r);
        CHECK(refused.status == 505);
        CHECK(refused.closeConnection);
    }
}

TEST_CASE("RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host", "[api][framing]") {
    ApiHarness h;
    ApiRequest r;
    r.method = "GET";
    r.target = "/";
    r.headers.emplace_back("Authorization", "Basic " + base64Encode("bob@447.edu:22222447"));
    auto missing = h.api->handle(r);
    CHECK(missing.status == 400);
    CHECK(missing.closeConnection);
    r.version = "HTTP/1.0";
    CHECK(h.api->handle(r).status == 200);  // HTTP/1.0 had no Host
    r.headers.emplace_back("Host", "a");
    r.headers.emplace_back("host", "b");
    CHECK(h.api->handle(r).status == 400);
}

TEST_CASE("RFC 9110 5.3: two Authorization fields are refused, not one of them chosen", "[api][framing]") {
    ApiHarness h;
    auto twice = h.get("/", "bob@447.edu", "22222447", {{"authorization", "Basic " + base64Encode("ana@447.edu:11111447")}});
    CHECK(twice.status == 400);
    CHECK(twice.closeConnection);
    CHECK(twice.body.find("More than one Authorization header field") != std::string::npos);
}

TEST_CASE("helpers: UTF-8 repair, HTML escaping, HTTP dates, Basic parsing", "[api]") {
    CHECK(validUtf8("caf\xc3\xa9") == "caf\xc3\xa9");
    CHECK(validUtf8("a\xff" "b") == "a\xEF\xBF\xBD" "b");
    CHECK(validUtf8("\xc0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD");
    // C0 and C1 controls (ESC, CSI U+009B, OSC U+009D) never reach a terminal; tab, CR, LF stay.
    CHECK(validUtf8("a\x1b[2Jb\xc2\x9b" "31mc\xc2\x9d" "0;x\x07") ==
          "a\xEF\xBF\xBD[2Jb\xEF\xBF\xBD" "31mc\xEF\xBF\xBD" "0;x\xEF\xBF\xBD");
    CHECK(validUtf8("a\tb\r\nc\xc2\xa0") == "a\tb\r\nc\xc2\xa0");  // U+00A0 is text
    // RFC 3629: no surrogates (ED A0 80), nothing past U+10FFFF (F4 90 80 80), no overlong E0 80 80.
    CHECK(validUtf8("\xed\xa0\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK(validUtf8("\xf4\x90\x80\x80").find("\xf4") == std::string::npos);
    CHECK(validUtf8("\xe0\x80\x80").find("\xe0") == std::string::npos);
    CHECK(validUtf8("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");
    CHECK(htmlEscape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    CHECK(httpDate(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example
    std::string user, password;
    CHECK(parseBasicAuthorization("Basic " + base64Encode("ana@447.edu:pa:ss"), user, password));
    CHECK(user == "ana@447.edu");
    CHECK(password == "pa:ss");
    CHECK_FALSE(parseBasicAuthorization("Bearer abc", user, password));
    CHECK_FALSE(parseBasicAuthorization("Basic " + base64Encode("nocolon"), user, password));
}

TEST_CASE("plain HTTP: credentials refused unless the lab allows them", "[api][auth]") {
    ApiHarness h;
    ApiRequest r = ApiHarness::request("/");
    r.overTls = false;
    auto refused = h.api->handle(r);
    CHECK(refused.status == 403);
    CHECK(refused.body.find("--allow-plaintext-auth") != std::string::npos);
    ApiLimits allow;
    allow.plaintextAuthAllowed = true;
    MailApi open(*h.lab.store, *h.lab.auth, allow, [&] { return h.lab.now; });
    CHECK(open.handle(r).status == 200);
}

TEST_CASE("a forged header From is shown beside who really sent the message", "[api]") {
    ApiHarness h;
    NewMessage m;
    m.queueId = "QF";
    m.envelopeFrom = "ana@447.edu";  // the account that authenticated
    m.recipients = {"bob@447.edu"};
    m.from = "The President <president@447.edu>";
    m.subject = "Urgent";
    m.receivedAt = 1795000100;
    m.raw = "From: The President <president@447.edu>\r\nSubject: Urgent\r\n\r\nsend money\r\n";
    h.lab.store->deliver(m);
    auto list = h.get("/mailboxes/bob@447.edu/messages?limit=1");
    REQUIRE(list.status == 200);
    CHECK(list.body.find("\"from\":\"The President <president@447.edu>\"") != std::string::npos);
    CHECK(list.body.find("\"authenticated_sender\":\"ana@447.edu\"") != std::string::npos);
    auto inbox = h.get("/", "bob@447.edu", "22222447", {{"Accept", "text/html"}});
    REQUIRE(inbox.status == 200);
    CHECK(inbox.body.find("<td class=\"sender\">ana@447.edu</td>") != std::string::npos);
}

TEST_CASE("the HTML inbox pages its messages and shows previews, never whole bodies", "[api][html][limits]") {
    ApiLimits limits;
    limits.defaultPageSize = 2;
    ApiHarness h(limits);
    NewMessage big;
    big.queueId = "QBIG";
    big.envelopeFrom = "ana@447.edu";
    big.recipients = {"bob@447.edu"};
    big.from = "ana@447.edu";
    big.subject = std::string(5000, 'S');
    big.date = "Mon, 23 Nov 2026 10:00:00 +0000";
    big.receivedAt = 1795000100;
    big.raw = "Subject: long\r\n\r\n" + std::string(2 * 1024 * 1024, '"');
    int64_t bigId = h.lab.store->deliver(big).front();
    auto first = h.get("/");
    REQUIRE(first.status == 200);
    CHECK(first.body.find("data-id=\"" + std::to_string(bigId) + "\"") != std::string::npos);  // newest first
    CHECK(first.body.find("data-id=\"" + std::to_string(h.ids[0]) + "\"") == std::string::npos);  // on a later page
    CHECK(first.body.size() < 20000);  // a preview of the 2 MB body and a shortened subject, not 12 MB of &quot;
    CHECK(first.body.find(std::string(1000, 'S') + "…") != std::string::npos);
    CHECK(first.body.find("id=\"older\" href=\"?limit=2&amp;offset=2\"") != std::string::npos);
    CHECK(first.body.find("4 messages (1 to 2 shown") != std::string::npos);
    auto second = h.get("/?limit=2&offset=2");
    CHECK(second.body.find("data-id=\"" + std::to_string(h.ids[0]) + "\"") != std::string::npos);
    CHECK(second.body.find("id=\"newer\"") != std::string::npos);
    CHECK(second.body.find("body 1") != std::string::npos);  // a short body is shown whole
    CHECK(h.get("/?limit=0").status == 400);
    // Past the end: the page says none is shown and where the newest are (it said "4 to 4 shown").
    auto beyond = h.get("/?limit=2&offset=10");
    CHECK(beyond.status == 200);
    CHECK(beyond.body.find("4 messages (none shown: this page starts after the last one") != std::string::npos);
    CHECK(beyond.body.find("class=\"message\"") == std::string::npos);
    // The JSON listing shortens listed fields too; the message itself has them whole.
    auto listing = h.get("/mailboxes/bob@447.edu/messages?limit=1");
    CHECK(listing.body.size() < 3000);
    CHECK(h.get("/mailboxes/bob@447.edu/messages/" + std::to_string(bigId) + "/raw").body.size() > 2 * 1024 * 1024);
}

TEST_CASE("the listing cache is bounded in bytes", "[api][limits]") {
    ApiLimits limits;
    limits.listingCacheBytes = 64 * 1024;
    ApiHarness h(limits);
    for (int limit = 1; limit <= 200; ++limit) {
        REQUIRE(h.get("/mailboxes/bob@447.edu/messages?limit=" + std::to_string(limit)).status == 200);
        CHECK(h.api->listingCacheBytes() <= limits.listingCacheBytes);
    }
    CHECK(h.api->listingCacheBytes() > 0);
}

TEST_CASE("large responses wait for room in the response budget: 503 with Retry-After, never a copy each", "[api][memory]") {
    ApiLimits limits;
    limits.maxResponseBytesInFlight = 100;  // less than one message's JSON: one at a time
    ApiHarness h(limits);
    std::string target = "/mailboxes/bob@447.edu/messages/" + std::to_string(h.ids[0]);
    ApiResponse first = h.get(target);  // still being sent: it keeps its place
    REQUIRE(first.status == 200);
    ApiResponse second = h.get(target);
    CHECK(second.status == 503);
    CHECK(second.header("Retry-After") == "2");
    CHECK(h.get(target, "bob@447.edu", "22222447", {{"If-None-Match", first.header("ETag")}}).status == 304);  // costs nothing
    first = ApiResponse{};  // sent
    CHECK(h.api->responseBytesInFlight() == 0);
    CHECK(h.get(target).status == 200);
}

namespace {
// Delivers `raw` to bob, indexed as the sender would (From, To, Subject as written); returns its id.
int64_t deliverRaw(ApiHarness& h, const std::string& raw) {
    NewMessage m;
    m.queueId = "QM";
    m.envelopeFrom = "ana@447.edu";
    m.recipients = {"bob@447.edu"};
    auto field = [&](const std::string& name) {
        size_t at = raw.find(name + ": ");
        return at == std::string::npos ? std::string() : raw.substr(at + name.size() + 2, raw.find("\r\n", at) - at - name.size() - 2);
    };
    m.from = field("From");
    m.to = field("To");
    m.subject = field("Subject");
    m.receivedAt = 1795000200;
    m.raw = raw;
    return h.lab.store->deliver(m).front();
}

const std::string kAttachmentMail =
    "From: Ana =?utf-8?q?M=C3=BCller?= <ana@447.edu>\r\n"
    "To: <bob@447.edu>\r\n"
    "Subject: Diagramm =?utf-8?q?f=C3=BCr?= dich\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    "\r\n"
    "--XX\r\n"
    "Content-Type: text/plain; charset=\"utf-8\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "f=C3=BCr dich\r\n"
    "--XX\r\n"
    "Content-Type: image/png\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename*=utf-8''Gr%C3%B6%C3%9Fe.png\r\n"
    "\r\n"
    "iVBORw0KGgoAAGRhdGE=\r\n"
    "--XX\r\n"
    "Content-Type: text/html\r\n"
    "Content-Disposition: attachment; filename=\"../../etc/passwd\"\r\n"
    "\r\n"
    "<script>alert(1)</script>\r\n"
    "--XX\r\n"
    "Content-Type: image/svg+xml\r\n"
    "Content-Disposition: attachment; filename=\"a\\\"\r\n"
    " X-Evil: 1.svg\"\r\n"
    "\r\n"
    "<svg/>\r\n"
    "--XX--\r\n";
}  // namespace

TEST_CASE("MIME: the JSON has decoded fields, the text, and the attachments with their URLs", "[api][mime]") {
    ApiHarness h;
    std::string id = std::to_string(deliverRaw(h, kAttachmentMail));
    auto listing = h.get("/mailboxes/bob@447.edu/messages?limit=1");
    CHECK(listing.body.find("\"subject\":\"Diagramm f\xC3\xBCr dich\"") != std::string::npos);
    CHECK(listing.body.find("\"from\":\"Ana M\xC3\xBCller <ana@447.edu>\"") != std::string::npos);
    CHECK(listing.body.find("\"to\":\"bob@447.edu\"") != std::string::npos);  // "<bob@447.edu>" shown as the address
    auto json = h.get("/mailboxes/bob@447.edu/messages/" + id);
    REQUIRE(json.status == 200);
    CHECK(json.body.find("\"body\":\"f\xC3\xBCr dich\"") != std::string::npos);
    std::string base = "/mailboxes/bob@447.edu/messages/" + id;
    CHECK(json.body.find("\"name\":\"Gr\xC3\xB6\xC3\x9F" "e.png\"") != std::string::npos);
    CHECK(json.body.find("\"url\":\"" + base + "/parts/2\"") != std::string::npos);
    CHECK(json.body.find("\"size\":14") != std::string::npos);
    CHECK(json.body.find("\"page\":\"" + base + "/page\"") != std::string::npos);
    // The header fields as written stay: the wire is the lab's subject.
    CHECK(json.body.find("\"value\":\"Diagramm =?utf-8?q?f=C3=BCr?= dich\"") != std::string::npos);
}

TEST_CASE("MIME: a part downloads byte for byte, under a safe name and type", "[api][mime]") {
    ApiHarness h;
    std::string base = "/mailboxes/bob@447.edu/messages/" + std::to_string(deliverRaw(h, kAttachmentMail));
    auto png = h.get(base + "/parts/2");
    REQUIRE(png.status == 200);
    CHECK(png.body == std::string("\x89PNG\r\n\x1a\n\0\0data", 14));
    CHECK(png.header("Content-Type") == "image/png");
    CHECK(png.header("Content-Disposition") ==
          "attachment; filename=\"Gr____e.png\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe.png");
    CHECK(png.header("X-Content-Type-Options") == "nosniff");
    CHECK(png.header("Content-Security-Policy").find("sandbox") != std::string::npos);
    auto html = h.get(base + "/parts/3");
    CHECK(html.header("Content-Type") == "application/octet-stream");
    CHECK(html.header("Content-Disposition") == "attachment; filename=\"passwd\"; filename*=UTF-8''passwd");
    auto svg = h.get(base + "/parts/4");
    CHECK(svg.header("Content-Type") == "application/octet-stream");
    std::string evil = svg.header("Content-Disposition");
    CHECK(evil.find_first_of("\r\n") == std::string::npos);
    CHECK(evil.rfind("attachment; filename=\"a_ X-Evil_ 1.svg\";", 0) == 0);
    CHECK(h.get(base + "/parts/1").header("Content-Type") == "text/plain; charset=utf-8");
    // Validators, errors, ownership: as for the message itself.
    CHECK(h.get(base + "/parts/2", "bob@447.edu", "22222447", {{"If-None-Match", png.header("ETag")}}).status == 304);
    CHECK(h.get(base + "/parts/5").status == 404);
    CHECK(h.get(base + "/parts/0").status == 404);
    CHECK(h.get(base + "/parts/x").status == 404);
    CHECK(h.get(base + "/parts/-1").body.find("No such part: parts are numbered from 1") != std::string::npos);
    CHECK(h.get(base + "/parts/2", "ana@447.edu", "11111447").status == 403);
    CHECK(h.get(base + "/parts/2", "").status == 401);
}

TEST_CASE("MIME: the message page and the inbox show decoded text, never markup, under a strict policy", "[api][mime][html]") {
    ApiHarness h;
    std::string base = "/mailboxes/bob@447.edu/messages/" + std::to_string(deliverRaw(h, kAttachmentMail));
    auto page = h.get(base + "/page");
    REQUIRE(page.status == 200);
    CHECK(page.header("Content-Type") == "text/html; charset=utf-8");
    std::string policy = page.header("Content-Security-Policy");
    CHECK(policy.find("default-src 'none'") != std::string::npos);
    CHECK(policy.find("script-src") == std::string::npos);  // none: default-src 'none' forbids scripts
    CHECK(page.body.find("<h1 id=\"subject\">Diagramm f\xC3\xBCr dich</h1>") != std::string::npos);
    CHECK(page.body.find("Ana M\xC3\xBCller &lt;ana@447.edu&gt;") != std::string::npos);
    CHECK(page.body.find("<pre id=\"body\">f\xC3\xBCr dich</pre>") != std::string::npos);
    CHECK(page.body.find("href=\"" + base + "/parts/2\">Gr\xC3\xB6\xC3\x9F" "e.png</a>") != std::string::npos);
    CHECK(page.body.find("href=\"" + base + "/raw?view=text\"") != std::string::npos);
    CHECK(page.body.find("<script") == std::string::npos);
    auto inbox = h.get("/");
    CHECK(inbox.body.find(base + "/page\">Diagramm f\xC3\xBCr dich</a>") != std::string::npos);
    CHECK(inbox.header("Content-Security-Policy") == policy);

    std::string htmlMail = "From: ana@447.edu\r\nSubject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                           "<p>Hello <b>Bob</b></p><script>document.title='pwned'</script>"
                           "<img src=\"https://evil.example/track.png\"><p>a &lt;tag&gt; as text</p>\r\n";
    std::string htmlBase = "/mailboxes/bob@447.edu/messages/" + std::to_string(deliverRaw(h, htmlMail));
    auto htmlPage = h.get(htmlBase + "/page");
    CHECK(htmlPage.body.find("Hello Bob\na &lt;tag&gt; as text") != std::string::npos);
    CHECK(htmlPage.body.find("pwned") == std::string::npos);
    CHECK(htmlPage.body.find("evil.example") == std::string::npos);
    CHECK(htmlPage.body.find("<img") == std::string::npos);
}

TEST_CASE("MIME: the limits are the server's settings", "[api][mime][limits]") {
    ApiLimits limits;
    limits.mime.maxParts = 2;
    ApiHarness h(limits);
    std::string base = "/mailboxes/bob@447.edu/messages/" + std::to_string(deliverRaw(h, kAttachmentMail));
    auto json = h.get(base);
    CHECK(json.body.find("more than 2 parts") != std::string::npos);
    CHECK(h.get(base + "/parts/2").status == 200);
    CHECK(h.get(base + "/parts/3").status == 404);
}
