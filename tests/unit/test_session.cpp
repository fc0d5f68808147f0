// The SMTP session state machine: every reply, checked directly and through golden transcripts.
#include "fixtures.h"
#include "golden.h"
#include "session_harness.h"

#include "../../sender/session.h"

#include "catch.hpp"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cctype>
#include <dirent.h>
#include <fstream>
#include <sstream>

using namespace maillab;
using namespace maillab::smtp;
using maillab::testing::LabFixture;

namespace maillab::testing {

std::vector<std::string> goldenFiles(const std::string& directory) {
    std::vector<std::string> files;
    if (DIR* dir = ::opendir(directory.c_str())) {
        while (dirent* entry = ::readdir(dir)) {
            std::string name = entry->d_name;
            if (name.size() > 4 && name.substr(name.size() - 4) == ".txt") files.push_back(directory + "/" + name);
        }
        ::closedir(dir);
    }
    std::sort(files.begin(), files.end());
    return files;
}

// "C~: " lines: the bytes as sent, nothing added; \r \n \t \\ and \xHH stand for themselves.
bool unescapeGolden(const std::string& text, std::string& bytes) {
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '\\') {
            bytes += text[i];
            continue;
        }
        if (++i == text.size()) return false;
        switch (text[i]) {
            case 'r': bytes += '\r'; break;
            case 'n': bytes += '\n'; break;
            case 't': bytes += '\t'; break;
            case '\\': bytes += '\\'; break;
            case 'x':
                if (i + 2 >= text.size()) return false;
                if (!std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
                    !std::isxdigit(static_cast<unsigned char>(text[i + 2])))
                    return false;
                bytes += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
                i += 2;
                break;
            default: return false;
        }
    }
    return true;
}

GoldenResult replayGolden(const std::string& path) {
    Harness h;
    std::ifstream in(path);
    if (!in) return {false, "cannot open " + path};
    std::vector<std::string> pending;  // server lines produced but not yet matched
    bool closed = false;
    std::string line;
    int number = 0;
    auto feed = [&](const Output& out) {
        for (auto& l : Harness::lines(out)) pending.push_back(l);
        if (out.close) closed = true;
    };
    feed(h.session->start());
    while (std::getline(in, line)) {
        ++number;
        std::string where = path + ":" + std::to_string(number) + ": ";
        if (line.empty() || line[0] == '#') continue;
        if (line.rfind("C: ", 0) == 0 || line == "C:") {
            if (!pending.empty()) return {false, where + "unexpected server line before input: " + pending.front()};
            feed(h.send(line.size() > 3 ? line.substr(3) : ""));
        } else if (line.rfind("C~: ", 0) == 0) {
            std::string bytes;
            if (!unescapeGolden(line.substr(4), bytes)) return {false, where + "bad escape in: " + line};
            feed(h.session->onBytes(bytes));
        } else if (line == "C!: toolong") {
            feed(h.tooLong());
        } else if (line == "C!: timeout") {
            feed(h.session->onTimeout());
        } else if (line.rfind("S: ", 0) == 0) {
            std::string expected = line.substr(3);
            if (pending.empty()) return {false, where + "expected \"" + expected + "\", server said nothing"};
            if (pending.front() != expected)
                return {false, where + "expected \"" + expected + "\", got \"" + pending.front() + "\""};
            pending.erase(pending.begin());
        } else if (line == "S!: close") {
            if (!closed) return {false, where + "expected the session to close"};
        } else {
            return {false, where + "unknown line kind: " + line};
        }
    }
    if (!pending.empty()) return {false, path + ": unmatched server line at end: " + pending.front()};
    return {};
}

}  // namespace maillab::testing

using maillab::testing::Harness;

TEST_CASE("golden transcripts replay exactly", "[session][golden]") {
    auto files = maillab::testing::goldenFiles(MAILLAB_GOLDEN_DIR);
    REQUIRE(files.size() >= 5);
    for (const auto& file : files) {
        INFO(file);
        auto result = maillab::testing::replayGolden(file);
        INFO(result.message);
        CHECK(result.ok);
    }
}

TEST_CASE("refusals name what is missing", "[session]") {
    Harness h;
    CHECK(h.say("MAIL FROM:<ana@447.edu>") == "503 5.5.1 Bad sequence of commands: need EHLO or HELO first");
    h.say("EHLO c");
    CHECK(h.say("MAIL FROM:<ana@447.edu>") == "530 5.7.0 Authentication required: need AUTH first");
    h.say("AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3");
    CHECK(h.say("RCPT TO:<bob@447.edu>") == "503 5.5.1 Bad sequence of commands: need MAIL first");
    CHECK(h.say("DATA") == "503 5.5.1 Bad sequence of commands: need MAIL first");
    h.say("MAIL FROM:<ana@447.edu>");
    CHECK(h.say("DATA") == "503 5.5.1 Bad sequence of commands: need RCPT first");
    CHECK(h.say("MAIL FROM:<ana@447.edu>").rfind("503 5.5.1 Bad sequence of commands: MAIL not allowed", 0) == 0);
}

TEST_CASE("a 250 after DATA means the message is in the store", "[session][data]") {
    Harness h;
    h.login();
    h.say("MAIL FROM:<ana@447.edu>");
    h.say("RCPT TO:<bob@447.edu>");
    h.say("RCPT TO:<ana@447.edu>");
    CHECK(h.say("DATA").rfind("354 ", 0) == 0);
    CHECK(h.say("Subject: hi").empty());
    CHECK(h.say("").empty());
    CHECK(h.say("..leading dot").empty());
    CHECK(h.say(".") == "250 2.0.0 Ok: queued as QID1");
    auto bob = h.lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(bob.size() == 1);
    CHECK(bob[0].subject == "hi");
    auto stored = h.lab.store->getMessage("bob@447.edu", bob[0].id);
    REQUIRE(stored);
    const std::string& raw = stored->raw;
    CHECK(raw.rfind("Received: from client (127.0.0.1)\r\n\t(Authenticated sender: ana@447.edu)\r\n\tby mail.447.edu (maillab) with ESMTPSA id QID1", 0) == 0);
    CHECK(raw.find("\r\nDate: ") != std::string::npos);
    CHECK(raw.find("\r\nMessage-ID: <QID1.") != std::string::npos);
    CHECK(raw.find("\r\n.leading dot\r\n") != std::string::npos);  // unstuffed
    CHECK(h.lab.store->listMessages("ana@447.edu", 0, 10).size() == 1);
}

TEST_CASE("a store failure is a 451, never a 250", "[session][data]") {
    Harness h;
    h.login();
    h.startMessage();
    h.say("hello");
    // Break the store under the session: the messages table disappears.
    REQUIRE(h.lab.dropMessagesTable());
    CHECK(h.say(".").rfind("451 4.3.0 ", 0) == 0);
}

TEST_CASE("message size limit: declared and actual", "[session][limits]") {
    SessionLimits limits;
    limits.maxMessageSize = 100;
    Harness h(limits);
    h.login();
    CHECK(h.say("MAIL FROM:<ana@447.edu> SIZE=101").rfind("552 5.3.4 ", 0) == 0);
    // A parameter twice has no one meaning (the second SIZE would have hidden the first).
    CHECK(h.say("MAIL FROM:<ana@447.edu> SIZE=1 size=101") == "501 5.5.4 MAIL FROM parameter SIZE given twice");
    CHECK(h.say("MAIL FROM:<ana@447.edu> SIZE=100").rfind("250 2.1.0", 0) == 0);
    h.say("RCPT TO:<bob@447.edu>");
    h.say("DATA");
    for (int i = 0; i < 5; ++i) CHECK(h.say(std::string(40, 'x')).empty());
    CHECK(h.say(".").rfind("552 5.3.4 ", 0) == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
    CHECK(h.session->state() == Session::State::Ready);
}

TEST_CASE("message data past the servers' in-flight budget is read to its end and refused with 452", "[session][limits]") {
    DataBudget budget(64 * 1024);
    Harness h({}, &budget);
    h.login();
    h.startMessage();
    for (int i = 0; i < 200; ++i) CHECK(h.say(std::string(900, 'x')).empty());  // 180 KB: over the budget
    CHECK(budget.inUse() == 0);  // given back as soon as it was over, not held to the end
    CHECK(h.say(".").rfind("452 4.3.1 Insufficient system storage", 0) == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
    // A message that fits goes through, and its bytes come back after it is stored.
    h.startMessage();
    h.say("Subject: small");
    h.say("");
    h.say("fits");
    CHECK(budget.inUse() > 0);
    CHECK(h.say(".").rfind("250 2.0.0", 0) == 0);
    CHECK(budget.inUse() == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 1);
}

TEST_CASE("a session that ends in DATA gives its bytes back", "[session][limits]") {
    DataBudget budget(1024 * 1024);
    {
        Harness h({}, &budget);
        h.login();
        h.startMessage();
        h.say(std::string(500, 'y'));
        CHECK(budget.inUse() > 0);
    }
    CHECK(budget.inUse() == 0);
}

TEST_CASE("recipient limit", "[session][limits]") {
    SessionLimits limits;
    limits.maxRecipients = 1;
    Harness h(limits);
    h.login();
    h.say("MAIL FROM:<ana@447.edu>");
    CHECK(h.say("RCPT TO:<bob@447.edu>").rfind("250 2.1.5", 0) == 0);
    CHECK(h.say("RCPT TO:<bob@447.edu>").rfind("250 2.1.5", 0) == 0);  // a duplicate is not a second one
    CHECK(h.say("RCPT TO:<ana@447.edu>").rfind("452 4.5.3 Too many recipients", 0) == 0);
}

TEST_CASE("line length limit, in commands and in data", "[session][limits]") {
    Harness h;
    h.login();
    auto out = Harness::lines(h.tooLong());
    CHECK(out.front().rfind("500 5.5.6 Line too long", 0) == 0);
    h.startMessage();
    CHECK(Harness::lines(h.tooLong()).empty());
    CHECK(h.say(".").rfind("550 5.6.0 Message has a line over 1000 octets", 0) == 0);  // RFC 5321 4.3.2: no 500 after "."
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
}

TEST_CASE("AUTH failures close the session at the limit", "[session][auth]") {
    SessionLimits limits;
    limits.maxAuthFailures = 3;
    Harness h(limits);
    h.say("EHLO c");
    std::string bad = "AUTH PLAIN AGFuYUA0NDcuZWR1AHdyb25n";  // ana@447.edu / wrong
    CHECK(h.say(bad).rfind("535 5.7.8 Authentication credentials invalid; forgotten password?", 0) == 0);
    CHECK(h.say(bad).rfind("535 5.7.8 Authentication credentials invalid; forgotten password?", 0) == 0);
    Output last = h.send(bad);
    CHECK(Harness::lines(last).front().rfind("421 4.7.0 ", 0) == 0);
    CHECK(last.close);
    CHECK(h.session->state() == Session::State::Closed);
    CHECK(Harness::lines(h.send("NOOP")).empty());
}

TEST_CASE("a HELO name is at most 255 octets, and one that is no host name cannot forge the Received field", "[session]") {
    Harness h;
    CHECK(h.say("EHLO " + std::string(256, 'a')).rfind("501 5.5.4 Syntax: EHLO <your-name>, a name of at most 255 octets", 0) == 0);
    CHECK(h.say("HELO " + std::string(256, 'a')).rfind("501 5.5.4 ", 0) == 0);
    CHECK(h.say("EHLO " + std::string(255, 'a')).rfind("250-", 0) == 0);
    h.login();
    CHECK(h.say("EHLO evil)by(x").rfind("250-", 0) == 0);
    h.envelope();
    h.say("DATA");
    h.say("Subject: s");
    h.say("");
    CHECK(h.say(".").rfind("250 ", 0) == 0);
    auto bob = h.lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(bob.size() == 1);
    CHECK(h.lab.store->getMessage("bob@447.edu", bob[0].id)->raw.rfind(
              "Received: from unknown (HELO evil\\)by\\(x; 127.0.0.1)\r\n", 0) == 0);
    // No From: header: none is stored for it (the envelope sender is kept apart).
    CHECK(bob[0].from.empty());
    CHECK(bob[0].envelopeFrom == "ana@447.edu");
}

TEST_CASE("a registration no one can make says why, the same whether or not the account exists", "[session][auth]") {
    Harness h;
    h.say("EHLO c");
    // admin@447.edu and postmaster@447.edu (which exists), empty passwords: role addresses (RFC 2142).
    CHECK(h.say("AUTH PLAIN AGFkbWluQDQ0Ny5lZHUA").rfind("535 5.7.8 admin is a role address (RFC 2142): it cannot be registered.", 0) == 0);
    CHECK(h.say("AUTH PLAIN AHBvc3RtYXN0ZXJANDQ3LmVkdQA=").rfind("535 5.7.8 postmaster is a role address (RFC 2142)", 0) == 0);
    // eve@gmail.com, empty password: another domain; the reply does not echo it.
    std::string other = h.say("AUTH PLAIN AGV2ZUBnbWFpbC5jb20A");
    CHECK(other.rfind("535 5.7.8 Only @447.edu addresses can be registered here", 0) == 0);
    CHECK(other.find("gmail") == std::string::npos);
    // With a password: the usual refusal (a wrong password of an account, or no such account).
    CHECK(h.say("AUTH PLAIN AGV2ZUBnbWFpbC5jb20AMTIzNDU0NDc=").rfind("535 5.7.8 Authentication credentials invalid", 0) == 0);
}

TEST_CASE("with registration off, an empty password gets the plain refusal: no registration is offered", "[session][auth]") {
    AuthPolicy closed = maillab::testing::fastPolicy();
    closed.registrationEnabled = false;  // a class server whose accounts the instructor made
    Harness h({}, nullptr, nullptr, smtp::TlsMode::Implicit, closed);
    h.say("EHLO c");
    for (const char* credentials : {"AGFkbWluQDQ0Ny5lZHUA", "AGV2ZUBnbWFpbC5jb20A", "AGNhcm9sQDQ0Ny5lZHUA"}) {  // admin, eve@gmail.com, carol
        std::string refused = h.say(std::string("AUTH PLAIN ") + credentials);
        CHECK(refused.rfind("535 5.7.8 Authentication credentials invalid", 0) == 0);
        CHECK(refused.find("register") == std::string::npos);
    }
    CHECK_FALSE(h.lab.store->findAccount("carol@447.edu"));
}

TEST_CASE("registration over AUTH carries on authenticated, and the password never reaches the log", "[session][auth]") {
    Harness h;
    h.say("EHLO c");
    // AUTH PLAIN \0carol@447.edu\0 (empty password)
    Output out = h.send("AUTH PLAIN AGNhcm9sQDQ0Ny5lZHUA");
    REQUIRE(out.replies.size() == 1);
    CHECK(out.replies[0].secret);
    std::string wire = out.replies[0].wire();
    CHECK(wire.rfind("235 2.7.0 Authentication successful; registered carol@447.edu with password: ", 0) == 0);
    std::string password = wire.substr(wire.find("password: ") + 10, 8);
    CHECK(password.substr(5) == "447");
    CHECK(out.replies[0].forLog().find(password) == std::string::npos);
    for (const auto& entry : h.log) CHECK(entry.find(password) == std::string::npos);
    CHECK(h.session->authenticated());
    CHECK(h.say("MAIL FROM:<carol@447.edu>").rfind("250 ", 0) == 0);
    CHECK(h.lab.auth->authenticate("carol@447.edu", password).outcome == AuthOutcome::Ok);
}

TEST_CASE("AUTH payloads are redacted for logs", "[session][auth]") {
    Harness h;
    h.say("EHLO c");
    CHECK(h.session->redactForLog("AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3") == "AUTH PLAIN <redacted>");
    h.say("AUTH LOGIN");
    CHECK(h.session->redactForLog("YW5hQDQ0Ny5lZHU=") == "<redacted: AUTH response>");
}

TEST_CASE("every transition is logged", "[session]") {
    Harness h;
    h.login();
    CHECK(std::find(h.log.begin(), h.log.end(), "event=state from=fresh to=ready") != h.log.end());
    CHECK(std::find(h.log.begin(), h.log.end(), "event=auth user=ana@447.edu result=ok") != h.log.end());
}

TEST_CASE("too many errors close the session", "[session][limits]") {
    SessionLimits limits;
    limits.maxErrors = 3;
    Harness h(limits);
    h.say("BOGUS");
    h.say("BOGUS");
    h.say("BOGUS");
    Output out = h.send("BOGUS");
    CHECK(out.close);
    CHECK(Harness::lines(out).back().rfind("421 4.7.0 Too many errors", 0) == 0);
}

TEST_CASE("what a client sends cannot forge log lines", "[session]") {
    Harness h;
    h.say("EHLO c");
    // AUTH PLAIN \0ana@447.edu\nid=9 event=auth user=bob result=ok\0x
    std::string forged = std::string("\0ana@447.edu\nid=9 event=auth user=bob result=ok\0x", 49);
    h.say("AUTH PLAIN " + maillab::base64Encode(forged));
    for (const auto& entry : h.log) CHECK(entry.find('\n') == std::string::npos);
}

namespace {
std::string escaped(const std::string& bytes) {
    std::string out;
    for (char c : bytes) out += c == '\r' ? std::string("\\r") : c == '\n' ? std::string("\\n") : std::string(1, c);
    return out;
}

// Feeds raw bytes to the session's one entry, as the server does, and returns every reply line
// plus whether the session closed.
struct Wire {
    std::vector<std::string> replies;
    bool closed = false;
};
Wire feedBytes(Harness& h, const std::string& bytes) {
    Wire wire;
    Output out = h.session->onBytes(bytes);
    for (auto& l : Harness::lines(out)) wire.replies.push_back(l);
    wire.closed = out.close;
    return wire;
}
}  // namespace

TEST_CASE("only <CRLF>.<CRLF> ends DATA: no SMTP smuggling", "[session][smuggling]") {
    // The variants behind CVE-2023-51764/51765, and bare CR ones. After each, the smuggled
    // transaction must not run and nothing at all may be stored.
    const std::string smuggled = "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n";
    const std::vector<std::string> endings = {"\n.\n", "\n.\r\n", "\r\n.\n", "\n\n.\n\n", "\r.\r", "\r.\r\n",
                                              "\r\n.\r", "\r\n.\r\r\n"};
    for (const auto& ending : endings) {
        INFO("ending: " << escaped(ending));
        Harness h;
        h.login();
        REQUIRE(h.say("MAIL FROM:<ana@447.edu>").rfind("250", 0) == 0);
        REQUIRE(h.say("RCPT TO:<bob@447.edu>").rfind("250", 0) == 0);
        REQUIRE(h.say("DATA").rfind("354", 0) == 0);
        Wire wire = feedBytes(h, "Subject: first\r\n\r\nx" + ending + smuggled);
        CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
        for (const auto& r : wire.replies) CHECK(r.rfind("250 2.0.0 Ok: queued", 0) != 0);
        if (wire.closed) {
            REQUIRE(!wire.replies.empty());
            CHECK(wire.replies.back().rfind("421 4.5.0", 0) == 0);
            CHECK(wire.replies.back().find("-crlf") != std::string::npos);
        } else {
            // A bare CR variant: the smuggled part was read as content, up to the real <CRLF>.<CRLF>
            // (the smuggled message's own), and the one message it all made is refused.
            REQUIRE(wire.replies.size() == 1);
            CHECK(wire.replies[0].rfind("550 5.6.0", 0) == 0);
        }
    }
}

TEST_CASE("bare LF inside the content is read as CRLF; commands accept it", "[session][smuggling]") {
    Harness h;
    Wire wire = feedBytes(h, "EHLO c\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\nMAIL FROM:<ana@447.edu>\n"
                             "RCPT TO:<bob@447.edu>\nDATA\r\nSubject: lf\nline one\nline two\r\n.\r\n");
    REQUIRE(!wire.closed);
    REQUIRE(!wire.replies.empty());
    CHECK(wire.replies.back().rfind("250 2.0.0 Ok: queued", 0) == 0);
    auto stored = h.lab.store->getMessage("bob@447.edu", h.lab.store->listMessages("bob@447.edu", 0, 1).at(0).id);
    REQUIRE(stored);
    CHECK(stored->raw.find("Subject: lf\r\nline one\r\nline two\r\n") != std::string::npos);
}

namespace maillab::testing {
namespace {
std::string sendOne(Harness& h, const std::vector<std::string>& rcpts, const std::string& body = "hello") {
    std::string reply = h.say("MAIL FROM:<ana@447.edu>");
    if (reply.rfind("250", 0) != 0) return reply;
    for (const auto& r : rcpts) {
        reply = h.say("RCPT TO:<" + r + ">");
        if (reply.rfind("250", 0) != 0) {
            h.say("RSET");
            return reply;
        }
    }
    h.say("DATA");
    h.say("Subject: s");
    h.say("");
    h.say(body);
    return h.say(".");
}
}  // namespace

TEST_CASE("a mailbox past its quota gets 452 4.2.2 at RCPT, and a message that would pass it at the end", "[session][quota]") {
    SessionLimits limits;
    limits.mailboxQuotaBytes = 2000;
    Harness h(limits);
    h.login();
    CHECK(sendOne(h, {"bob@447.edu"}, std::string(900, 'a')).rfind("250 ", 0) == 0);
    std::string over = sendOne(h, {"bob@447.edu"}, std::string(990, 'b'));
    CHECK(over.rfind("452 4.2.2 Mailbox full: <bob@447.edu>", 0) == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 1);
    CHECK(sendOne(h, {"bob@447.edu"}, "small").rfind("250 ", 0) == 0);
    CHECK(sendOne(h, {"bob@447.edu"}, std::string(900, 'c')).rfind("452 4.2.2", 0) == 0);
    CHECK(sendOne(h, {"ana@447.edu"}, "to another mailbox").rfind("250 ", 0) == 0);
    // A mailbox already at its quota (the instructor lowered it) is refused at RCPT, before any data.
    h.limits.mailboxQuotaBytes = 100;
    Harness lowered(h.limits);
    lowered.lab.store->deliver(NewMessage{"Q", "ana@447.edu", {"bob@447.edu"}, "", "", "s", "", 1, std::string(200, 'z'), ""});
    lowered.login();
    lowered.say("MAIL FROM:<ana@447.edu>");
    CHECK(lowered.say("RCPT TO:<bob@447.edu>") == "452 4.2.2 Mailbox full: <bob@447.edu> holds 200 bytes of its 100 bytes; try again later");
}

TEST_CASE("with a declared SIZE, a mailbox it would not fit in is refused at its RCPT, and the others get the message", "[session][quota]") {
    SessionLimits limits;
    limits.mailboxQuotaBytes = 3000;
    Harness h(limits);
    h.lab.store->deliver(NewMessage{"Q", "ana@447.edu", {"bob@447.edu"}, "", "", "s", "", 1, std::string(2600, 'z'), ""});
    h.login();
    CHECK(h.say("MAIL FROM:<ana@447.edu> SIZE=1000").rfind("250 ", 0) == 0);
    CHECK(h.say("RCPT TO:<ana@447.edu>").rfind("250 ", 0) == 0);
    // RFC 1870 6.2: 2600 held + 1000 declared > 3000.
    CHECK(h.say("RCPT TO:<bob@447.edu>") ==
          "452 4.2.2 Mailbox full: <bob@447.edu> holds 2600 bytes of its 3000 bytes and this message does not fit; try again later");
    CHECK(h.say("DATA").rfind("354 ", 0) == 0);
    h.say("Subject: s");
    h.say("");
    h.say(std::string(500, 'a'));
    CHECK(h.say(".").rfind("250 ", 0) == 0);
    CHECK(h.lab.store->mailboxStats("ana@447.edu").count == 1);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 1);
    // A declared SIZE larger than the whole quota: no emptying makes room, so permanent (552 5.2.2).
    h.say("RSET");
    h.say("MAIL FROM:<ana@447.edu> SIZE=3001");
    CHECK(h.say("RCPT TO:<ana@447.edu>").rfind("552 5.2.2 Message of SIZE=3001 octets is larger than <ana@447.edu>'s whole quota", 0) == 0);
    h.say("RSET");
    // Without SIZE the same mailbox is refused after DATA, for every recipient, and told so.
    h.say("MAIL FROM:<ana@447.edu>");
    h.say("RCPT TO:<ana@447.edu>");
    CHECK(h.say("RCPT TO:<bob@447.edu>").rfind("250 ", 0) == 0);
    h.say("DATA");
    h.say("Subject: s");
    h.say("");
    h.say(std::string(500, 'a'));
    CHECK(h.say(".").find("(stored for no recipient: send it again without <bob@447.edu>)") != std::string::npos);
    CHECK(h.lab.store->mailboxStats("ana@447.edu").count == 1);
}

TEST_CASE("submission rates per account and address: 451 4.7.1 and 452 4.5.3, refilled with time", "[session][rate]") {
    SubmissionRates rates({3, 5, 1 << 20});
    Harness h({}, nullptr, &rates);
    h.login();
    CHECK(sendOne(h, {"bob@447.edu", "ana@447.edu"}).rfind("250 ", 0) == 0);
    CHECK(sendOne(h, {"bob@447.edu", "ana@447.edu"}).rfind("250 ", 0) == 0);
    // Four recipients taken of five: a message to two more is refused at its second RCPT.
    CHECK(sendOne(h, {"bob@447.edu", "ana@447.edu"}).rfind("452 4.5.3 Too many recipients this hour", 0) == 0);
    CHECK(sendOne(h, {"bob@447.edu"}).rfind("250 ", 0) == 0);
    CHECK(sendOne(h, {"bob@447.edu"}).rfind("451 4.7.1 Submission rate limit: 3 messages an hour", 0) == 0);
    h.lab.now += 3600;
    CHECK(sendOne(h, {"bob@447.edu"}).rfind("250 ", 0) == 0);
    // Bytes: each recipient's copy counts.
    SubmissionRates bytes({0, 0, 3000});
    Harness b({}, nullptr, &bytes);
    b.login();
    CHECK(sendOne(b, {"bob@447.edu", "ana@447.edu"}, std::string(990, 'x')).rfind("250 ", 0) == 0);
    CHECK(sendOne(b, {"bob@447.edu"}, std::string(990, 'x')).rfind("451 4.7.1", 0) == 0);
}

TEST_CASE("below the free-disk floor new mail gets 452 4.3.1; logins go on", "[session][disk]") {
    SessionLimits limits;
    limits.minFreeDiskBytes = 1 << 20;
    Harness h(limits);
    h.login();
    h.freeDisk = 1000;
    CHECK(h.say("MAIL FROM:<ana@447.edu>").rfind("452 4.3.1 Insufficient system storage", 0) == 0);
    h.freeDisk = INT64_MAX;
    CHECK(h.say("MAIL FROM:<ana@447.edu>").rfind("250 ", 0) == 0);
    h.say("RCPT TO:<bob@447.edu>");
    h.say("DATA");
    h.say("x");
    h.freeDisk = 1000;  // the disk filled while the message arrived
    CHECK(h.say(".").rfind("452 4.3.1", 0) == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
    Harness other(limits);
    other.freeDisk = 1000;
    other.login();  // logging in needs no room for mail
}

}  // namespace maillab::testing

TEST_CASE("each message keeps its session's story: the wire, AUTH redacted, bounded", "[session][story]") {
    Harness h;
    h.session->start();
    h.say("EHLO client");
    CHECK(h.say("AUTH PLAIN") == "334 ");
    CHECK(h.say("AGFuYUA0NDcuZWR1ADExMTExNDQ3") == "235 2.7.0 Authentication successful");
    h.say("MAIL FROM:<ana>");
    h.say("RCPT TO:<bob@447.edu>");
    h.say("RCPT TO:<ana@447.edu>");
    h.say("DATA");
    h.say("Subject: story");
    h.say("");
    h.say("secret body text");
    CHECK(h.say(".") == "250 2.0.0 Ok: queued as QID1");
    auto bob = h.lab.store->listMessages("bob@447.edu", 0, 10);
    auto ana = h.lab.store->listMessages("ana@447.edu", 0, 10);
    REQUIRE(bob.size() == 1);
    REQUIRE(ana.size() == 1);
    auto story = h.lab.store->messageStory("bob@447.edu", bob[0].id);
    REQUIRE(story);
    CHECK(*story == *h.lab.store->messageStory("ana@447.edu", ana[0].id));  // one story per delivery
    CHECK_FALSE(h.lab.store->messageStory("ana@447.edu", bob[0].id + 1000));
    for (const char* expected :
         {"\"S: 220 mail.447.edu ESMTP maillab ready\"", "\"C: EHLO client\"", "\"C: <redacted: AUTH response>\"",
          "\"C: MAIL FROM:<ana>\"", "\"S: 250 2.1.0 Sender <ana@447.edu> ok\"", "\"S: 354 End data with",
          "\"C: <the message: ", "\"C: .\"", "\"account\":\"ana@447.edu\"", "\"peer\":\"127.0.0.1\"",
          "\"tls\":\"TLSv1.3 TLS_AES_256_GCM_SHA384\"", "\"queue_id\":\"QID1\""})
        CHECK(story->find(expected) != std::string::npos);
    CHECK(story->find("AGFuYUA0NDcuZWR1ADExMTExNDQ3") == std::string::npos);
    CHECK(story->find("secret body text") == std::string::npos);

    // Bounded: the session's start and its latest lines, the middle counted.
    SessionLimits small;
    small.maxStoryBytes = 600;
    Harness g(small);
    g.login();
    for (int i = 0; i < 200; ++i) g.say("NOOP " + std::to_string(i));
    g.say("MAIL FROM:<ana@447.edu>");
    g.say("RCPT TO:<bob@447.edu>");
    g.say("DATA");
    g.say("x");
    g.say(".");
    auto listed = g.lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(listed.size() == 1);
    std::string kept = *g.lab.store->messageStory("bob@447.edu", listed[0].id);
    CHECK(kept.find("\"C: EHLO client\"") != std::string::npos);
    CHECK(kept.find("lines left out: smtp.maxStoryBytes") != std::string::npos);
    CHECK(kept.find("\"C: RCPT TO:<bob@447.edu>\"") != std::string::npos);
    CHECK(kept.find("NOOP 100") == std::string::npos);
    CHECK(kept.size() < 1400);

    // A connection kept open for many messages: each story is the session's start and its own
    // transaction, the earlier ones counted (not the full smtp.maxStoryBytes of them each time).
    Harness k;
    k.login();
    for (int i = 0; i < 30; ++i) {
        k.say("MAIL FROM:<ana@447.edu>");
        k.say("RCPT TO:<bob@447.edu>");
        k.say("DATA");
        k.say("Subject: number " + std::to_string(i));
        k.say("");
        k.say("x");
        REQUIRE(k.say(".").rfind("250 ", 0) == 0);
    }
    auto many = k.lab.store->listMessages("bob@447.edu", 0, 50);
    REQUIRE(many.size() == 30);
    std::string first = *k.lab.store->messageStory("bob@447.edu", many.back().id);
    std::string last = *k.lab.store->messageStory("bob@447.edu", many.front().id);
    CHECK(first.find("earlier messages") == std::string::npos);
    for (const std::string* story : {&first, &last}) {
        CHECK(story->find("\"C: EHLO client\"") != std::string::npos);
        CHECK(story->find("\"C: AUTH PLAIN ") != std::string::npos);
        CHECK(story->find("\"C: RCPT TO:<bob@447.edu>\"") != std::string::npos);
        CHECK(story->find("\"C: .\"") != std::string::npos);
    }
    // 29 earlier messages, 9 lines each: MAIL, 250, RCPT, 250, DATA, 354, the message, ".", 250.
    CHECK(last.find("... (261 lines of earlier messages on this connection left out) ...") != std::string::npos);
    CHECK(last.size() < first.size() + 200);
}

TEST_CASE("a story is JSON that Poco's parser reads back exactly, whatever the client sent", "[session][story]") {
    // storyJson writes the JSON itself (Poco::toJSON escapes each string): quotes, slashes,
    // backslashes, control characters, UTF-8 and invalid UTF-8 in the transcript all come back, in
    // the session's head (kept as JSON across a kept-open connection's messages) and in a transaction.
    Harness h;
    h.session->start();
    h.login();
    // Printable ASCII that JSON must still escape (the fast path's case), and everything else.
    const std::string quoted = "\"quoted\" a/b";
    const std::string odd = "\"quoted\" \\ back\tslash a/b \xe2\x82\xac \x01\x7f \xff";
    h.say("NOOP head " + odd);
    h.say("NOOP plain head " + quoted);
    for (int message = 0; message < 2; ++message) {
        h.say("MAIL FROM:<ana@447.edu>");
        h.say("RCPT TO:<bob@447.edu>");
        h.say("NOOP tail " + odd);
        h.say("NOOP plain tail " + quoted);
        h.say("DATA");
        h.say("Subject: json");
        h.say("");
        h.say("x");
        REQUIRE(h.say(".").rfind("250 ", 0) == 0);
    }
    auto listed = h.lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(listed.size() == 2);
    for (const auto& message : listed) {
        std::string story = *h.lab.store->messageStory("bob@447.edu", message.id);
        Poco::JSON::Object::Ptr parsed = Poco::JSON::Parser().parse(story).extract<Poco::JSON::Object::Ptr>();
        CHECK(parsed->getValue<std::string>("account") == "ana@447.edu");
        CHECK(parsed->getValue<std::string>("peer") == "127.0.0.1");
        CHECK(parsed->getValue<std::string>("queue_id").rfind("QID", 0) == 0);
        CHECK(parsed->getValue<bool>("starttls") == false);
        CHECK(parsed->getValue<std::string>("tls") == "TLSv1.3 TLS_AES_256_GCM_SHA384");
        CHECK(parsed->getValue<std::string>("helo") == "client");
        std::vector<std::string> lines;
        Poco::JSON::Array::Ptr transcript = parsed->getArray("transcript");
        for (size_t i = 0; i < transcript->size(); ++i) lines.push_back(transcript->getElement<std::string>(i));
        for (const char* part : {"C: NOOP head", "C: NOOP tail"}) {
            auto noop = std::find_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(part, 0) == 0; });
            REQUIRE(noop != lines.end());
            INFO(*noop);
            CHECK(noop->find("\"quoted\" \\\\ back") != std::string::npos);  // escapeControl doubles a backslash
            CHECK(noop->find(" a/b ") != std::string::npos);
            CHECK(noop->find("\xe2\x82\xac") != std::string::npos);
        }
        CHECK(std::find(lines.begin(), lines.end(), "C: RCPT TO:<bob@447.edu>") != lines.end());
        CHECK(std::find(lines.begin(), lines.end(), "C: NOOP plain head " + quoted) != lines.end());
        CHECK(std::find(lines.begin(), lines.end(), "C: NOOP plain tail " + quoted) != lines.end());
        // The same text Poco::JSON::Object writes for these fields (what stories were before).
        Poco::JSON::Object same;
        same.set("account", parsed->getValue<std::string>("account"));
        same.set("helo", parsed->getValue<std::string>("helo"));
        same.set("peer", parsed->getValue<std::string>("peer"));
        same.set("queue_id", parsed->getValue<std::string>("queue_id"));
        same.set("started_at", parsed->getValue<int64_t>("started_at"));
        same.set("starttls", false);
        same.set("tls", parsed->getValue<std::string>("tls"));
        same.set("tls_group", parsed->getValue<std::string>("tls_group"));
        Poco::JSON::Array again;
        for (const auto& l : lines) again.add(l);
        same.set("transcript", again);
        std::ostringstream out;
        same.stringify(out);
        CHECK(out.str() == story);
    }
}
