// The socket-free parts of the connection gate (common/net/guarded_connection.h): each connection's
// log emitter, the settings read from a server's configuration, and each protocol's words (the
// refusal past the limits, the answer to clear text on an implicit-TLS port).
#include "../../common/net/guarded_connection.h"
#include "../../retriever/http_guard.h"
#include "../../retriever/pop3_server.h"
#include "../../sender/smtp_guard.h"

#include "catch.hpp"

#include <Poco/AutoPtr.h>
#include <Poco/Util/MapConfiguration.h>

using maillab::ClearTextReply;
using maillab::ConnectionLimiter;
using maillab::ConnectionLog;
using maillab::FirstBytes;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

maillab::proxy::Peer peer(const std::string& address, const std::string& via = "") {
    maillab::proxy::Peer p;
    p.host = address.substr(0, address.rfind(':'));
    p.address = address;
    p.via = via;
    return p;
}
}  // namespace

TEST_CASE("a connection's log lines all start with its id; guard lines name the peer and the balancer", "[guard]") {
    ConnectionLog smtp(nullptr, 7, "");
    smtp.setPeer(peer("127.0.0.1:40112"));
    CHECK(smtp.lineText("C: EHLO x") == "id=7 C: EHLO x");
    CHECK(smtp.eventText("close", "") == "id=7 event=close");
    CHECK(smtp.eventText("tls", "starttls=yes TLSv1.3") == "id=7 event=tls starttls=yes TLSv1.3");
    CHECK(smtp.peerEventText("refused", "reason=max-connections answered=421") ==
          "id=7 event=refused peer=127.0.0.1:40112 reason=max-connections answered=421");

    ConnectionLog pop3(nullptr, 8, "pop3");
    pop3.setPeer(peer("198.18.0.11:5000", "198.18.0.2:51000"));
    CHECK(pop3.eventText("close", "") == "id=8 event=close service=pop3");
    CHECK(pop3.peerEventText("connect", "tls=implicit active=1") ==
          "id=8 event=connect service=pop3 peer=198.18.0.11:5000 via=198.18.0.2:51000 tls=implicit active=1");
    CHECK(pop3.peerEventText("evicted", "") == "id=8 event=evicted service=pop3 peer=198.18.0.11:5000 via=198.18.0.2:51000");
    pop3.line("nothing is written without a logger");  // no crash
}

TEST_CASE("the gate's settings and limits are read under the server's prefix", "[guard]") {
    Poco::AutoPtr<Poco::Util::MapConfiguration> cfg(new Poco::Util::MapConfiguration);
    cfg->setInt("lab.maxConnections", 2);
    cfg->setInt("lab.maxConnectionsPerAddress", 1);
    cfg->setInt("lab.minWaitToEvictMs", 2000);
    cfg->setInt("lab.maxRefusalHandshakes", 3);
    cfg->setInt("lab.timeout.handshake", 30);
    cfg->setInt("lab.timeout.refusalMs", 250);
    maillab::GateSettings settings = maillab::gateSettingsFrom(*cfg, "lab");
    CHECK(settings.maxRefusalHandshakes == 3);
    CHECK(settings.handshakeTimeout.totalSeconds() == 30);
    CHECK(settings.refusalTimeout.totalMilliseconds() == 250);
    auto limiter = maillab::connectionLimiterFrom(*cfg, "lab");
    auto first = limiter->admit("10.0.0.1");
    CHECK(first.admitted());
    CHECK(limiter->admit("10.0.0.1").verdict() == ConnectionLimiter::Verdict::TooManyFromAddress);
    auto second = limiter->admit("10.0.0.2");
    CHECK(limiter->admit("10.0.0.3").verdict() == ConnectionLimiter::Verdict::TooManyTotal);
    CHECK_THROWS(maillab::gateSettingsFrom(*cfg, "missing"));
}

TEST_CASE("SMTP refuses with 421 (RFC 5321 3.8) and answers clear text on the implicit-TLS port", "[guard]") {
    maillab::GuardedProtocol smtp = maillab::smtp::guardedProtocol("mail.lab", 1500);
    CHECK(smtp.service.empty());
    CHECK(smtp.logsEveryConnection);
    CHECK(smtp.closesGracefully);
    CHECK(smtp.refusedAs == "421");
    CHECK(smtp.refusal(ConnectionLimiter::Verdict::TooManyTotal) ==
          "421 4.3.2 mail.lab Too many connections; try again later\r\n");
    CHECK(smtp.refusal(ConnectionLimiter::Verdict::TooManyFromAddress) ==
          "421 4.7.0 mail.lab Too many connections from your address; try again later\r\n");
    CHECK(smtp.silenceHintMs == 1500);
    for (FirstBytes kind : {FirstBytes::Silence, FirstBytes::Plaintext, FirstBytes::HttpRequest}) {
        std::optional<ClearTextReply> reply = smtp.clearText(kind, "EHLO x", 465);
        REQUIRE(reply);
        CHECK(reply->answered == "421");
        CHECK(reply->wire.rfind("421 4.7.0 mail.lab This port expects TLS first", 0) == 0);
        CHECK(contains(reply->wire, "smtplib.SMTP_SSL"));
        CHECK(contains(reply->wire, "smtps://mail.lab:465"));
        CHECK(contains(reply->wire, "openssl s_client -connect mail.lab:465\r\n"));
    }
}

TEST_CASE("HTTPS refuses with 503 and Retry-After (RFC 9110 15.6.4); plain HTTP gets a clear 400", "[guard]") {
    maillab::GuardedProtocol http = maillab::http::guardedProtocol();
    CHECK(http.service.empty());
    CHECK_FALSE(http.logsEveryConnection);  // issue 22: no line per successful connection
    CHECK_FALSE(http.closesGracefully);
    CHECK(http.refusedAs == "503");
    std::string busy = http.refusal(ConnectionLimiter::Verdict::TooManyFromAddress);
    CHECK(busy.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0) == 0);
    CHECK(contains(busy, "Retry-After: 5\r\n"));
    CHECK(contains(busy, "Connection: close\r\n"));
    CHECK(contains(busy, "from your address"));
    size_t bodyAt = busy.find("\r\n\r\n") + 4;
    CHECK(contains(busy, "Content-Length: " + std::to_string(busy.size() - bodyAt) + "\r\n"));
    CHECK_FALSE(contains(http.refusal(ConnectionLimiter::Verdict::TooManyTotal), "from your address"));

    auto plain = http.clearText(FirstBytes::HttpRequest, "GET / HTTP/1.1\r\nHost: mail.lab:8443\r\n", 8443);
    REQUIRE(plain);
    CHECK(plain->answered == "400");
    CHECK(plain->wire.rfind("HTTP/1.1 400 Bad Request\r\n", 0) == 0);
    CHECK(contains(plain->wire, "https://mail.lab:8443/"));
    auto other = http.clearText(FirstBytes::Plaintext, "EHLO x\r\n", 8443);
    REQUIRE(other);
    CHECK(other->wire.empty());
    CHECK(other->answered == "closed");
    CHECK_FALSE(http.clearText(FirstBytes::Silence, "", 8443));  // the handshake's deadline's
}

TEST_CASE("the clear-text 400 names the request's host only when it is a plain host name", "[guard]") {
    using maillab::http::plainHttpAnswer;
    CHECK(contains(plainHttpAnswer("GET / HTTP/1.1\r\nhost: [::1]:9443\r\n", 9443), "https://[::1]:9443/"));
    CHECK(contains(plainHttpAnswer("GET / HTTP/1.1\r\nHost: evil\"<script>\r\n", 9443), "https://localhost:9443/"));
    CHECK(contains(plainHttpAnswer("GET / HTTP/1.1\r\n", 9443), "https://localhost:9443/"));
    std::string answer = plainHttpAnswer("GET / HTTP/1.1\r\nHost: a.lab\r\n", 1);
    size_t bodyAt = answer.find("\r\n\r\n") + 4;
    CHECK(contains(answer, "Content-Length: " + std::to_string(answer.size() - bodyAt) + "\r\n"));
}

TEST_CASE("POP3 refuses with -ERR [SYS/TEMP] (RFC 3206) and logs as service=pop3", "[guard]") {
    maillab::GuardedProtocol pops = maillab::pop3::guardedProtocol(true);
    maillab::GuardedProtocol stls = maillab::pop3::guardedProtocol(false);
    CHECK(pops.service == "pop3");
    CHECK(pops.connectNote == "tls=implicit");
    CHECK(stls.connectNote == "tls=stls-port");
    CHECK(pops.refusedAs == "-ERR");
    CHECK(pops.refusal(ConnectionLimiter::Verdict::TooManyTotal) == "-ERR [SYS/TEMP] Too many connections; try again later\r\n");
    CHECK(pops.refusal(ConnectionLimiter::Verdict::TooManyFromAddress) ==
          "-ERR [SYS/TEMP] Too many connections from your address; try again later\r\n");
    CHECK_FALSE(pops.clearText);  // clear text on POP3S gets OpenSSL's alert
}
