// The POP3 session (retriever/pop3_session.h) without sockets: every command, the states, the
// limits, byte-stuffing, UIDLs across sessions, DELE/RSET/QUIT and the store, IN-USE, AUTH PLAIN,
// and the golden transcripts in tests/golden/pop3/ (the SMTP ones' format: golden.h).
#include "fixtures.h"
#include "golden.h"

#include "../../retriever/autoconfig.h"
#include "../../retriever/pop3_session.h"

#include "catch.hpp"

#include <fstream>

using namespace maillab;
using namespace maillab::pop3;
using maillab::testing::LabFixture;

namespace {

NewMessage mail(const std::string& to, const std::string& subject, const std::string& body) {
    NewMessage m;
    m.queueId = "Q" + subject;
    m.envelopeFrom = "ana@447.edu";
    m.recipients = {to};
    m.from = "ana@447.edu";
    m.to = to;
    m.subject = subject;
    m.date = "Mon, 23 Nov 2026 10:00:00 +0000";
    m.receivedAt = 1000;
    m.raw = "From: ana@447.edu\r\nSubject: " + subject + "\r\n\r\n" + body;
    return m;
}

// A lab with ana (11111447) and bob (22222447), bob's maildrop holding three messages (ids in
// `ids`, oldest first), and sessions made on demand sharing one lock registry.
struct Pop3Lab {
    LabFixture lab;
    MaildropLocks locks;
    std::vector<int64_t> ids;
    std::vector<std::string> log;
    std::vector<std::string> traced;  // the C: lines a --verbose log shows
    Limits limits;

    Pop3Lab() {
        lab.addUser("ana@447.edu", "11111447");
        lab.addUser("bob@447.edu", "22222447");
        ids.push_back(lab.store->deliver(mail("bob@447.edu", "one", "first body\r\n"))[0]);
        ids.push_back(lab.store->deliver(mail("bob@447.edu", "two", ".hidden dot\r\n..two dots\r\n.\r\nend\r\n"))[0]);
        ids.push_back(lab.store->deliver(mail("bob@447.edu", "three", "a\r\nb\r\nc\r\nd\r\n"))[0]);
    }

    std::unique_ptr<Session> session(bool tls = true) {
        Env env;
        env.hostname = "mail.447.edu";
        env.tlsActive = tls;
        env.stlsOffered = !tls;
        env.implicitTlsPort = "9995";
        env.locks = &locks;
        env.log = [this](const std::string& line) { log.push_back(line); };
        env.trace = [this](const std::string& line) { traced.push_back(line); };
        return std::make_unique<Session>(*lab.auth, *lab.store, limits, env);
    }
};

// Every line the replies put on the wire, without CRLF.
std::vector<std::string> lines(const Output& out) {
    std::vector<std::string> result;
    for (const auto& r : out.replies) {
        std::string wire = r.wire();
        for (size_t start = 0; start < wire.size();) {
            size_t end = wire.find("\r\n", start);
            result.push_back(wire.substr(start, end - start));
            start = end + 2;
        }
    }
    return result;
}

std::string first(const Output& out) {
    auto l = lines(out);
    return l.empty() ? "" : l.front();
}

// One line as a client sends it, and every reply to it (a batch at a time, as the server sends them).
Output send(Session& s, const std::string& line) {
    Output all = s.onBytes(line + "\r\n");
    while (all.more) {
        Output rest = s.onBytes(nullptr, 0);
        for (Reply& r : rest.replies) all.replies.push_back(std::move(r));
        for (auto& hold : rest.holds) all.holds.push_back(std::move(hold));
        all.close = rest.close;
        all.more = rest.more;
    }
    return all;
}

// A line one octet over the limit (maxLineLength counts the CRLF).
Output tooLong(Session& s, size_t maxLineLength = Limits().maxLineLength) {
    return s.onBytes(std::string(maxLineLength - 1, 'x') + "\r\n");
}

std::string say(Session& s, const std::string& line) { return first(send(s, line)); }

// Each line in turn, and the first line of its reply checked against the one given (the failure
// names the line).
void checkReplies(Session& s, const std::vector<std::pair<std::string, std::string>>& linesAndReplies) {
    for (const auto& [line, reply] : linesAndReplies) {
        INFO("C: " << line);
        CHECK(say(s, line) == reply);
    }
}

void login(Session& s, const std::string& user = "bob@447.edu", const std::string& password = "22222447") {
    REQUIRE(say(s, "USER " + user) == "+OK Send PASS for " + user);
    REQUIRE(say(s, "PASS " + password).rfind("+OK ", 0) == 0);
}

bool startsWith(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("POP3: greeting, CAPA, USER/PASS, STAT, LIST, NOOP, QUIT", "[pop3]") {
    Pop3Lab p;
    auto s = p.session();
    CHECK(first(s->start()) == "+OK mail.447.edu maillab POP3 server ready");
    auto capa = lines(send(*s, "CAPA"));
    CHECK(capa.front() == "+OK Capability list follows");
    for (const char* want : {"USER", "SASL PLAIN", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING",
                             "IMPLEMENTATION maillab"})
        CHECK(std::find(capa.begin(), capa.end(), want) != capa.end());
    CHECK(std::find(capa.begin(), capa.end(), "STLS") == capa.end());  // implicit TLS: nothing to start
    CHECK(capa.back() == ".");
    CHECK(say(*s, "user bob@447.edu") == "+OK Send PASS for bob@447.edu");  // keywords in any case
    CHECK(say(*s, "PASS 22222447") == "+OK bob@447.edu has 3 messages (" +
                                           std::to_string(p.lab.store->mailboxStats("bob@447.edu").bytes) + " octets)");
    CHECK(s->state() == Session::State::Transaction);
    CHECK(say(*s, "STAT") == "+OK 3 " + std::to_string(p.lab.store->mailboxStats("bob@447.edu").bytes));
    auto list = lines(send(*s, "LIST"));
    REQUIRE(list.size() == 5);
    CHECK(startsWith(list[0], "+OK 3 messages ("));
    auto size1 = p.lab.store->findMessage("bob@447.edu", p.ids[0])->size;
    CHECK(list[1] == "1 " + std::to_string(size1));  // numbered oldest first
    CHECK(list[4] == ".");
    CHECK(say(*s, "LIST 1") == "+OK 1 " + std::to_string(size1));
    CHECK(say(*s, "NOOP") == "+OK Still here");
    Output quit = send(*s, "QUIT");
    CHECK(first(quit) == "+OK mail.447.edu maillab POP3 server signing off (3 messages left)");
    CHECK(quit.close);
    CHECK(s->state() == Session::State::Closed);
    CHECK(send(*s, "STAT").replies.empty());  // nothing is read after QUIT
}

TEST_CASE("POP3: commands in the wrong state, bad arguments and unknown commands are refused", "[pop3]") {
    Pop3Lab p;
    p.limits.maxBadCommands = 100;
    auto s = p.session();
    // Each line and the first line of its reply: before login, then after.
    checkReplies(*s, {
        {"STAT", "-ERR STAT needs a login first: USER and PASS, or AUTH PLAIN"},
        {"RETR 1", "-ERR RETR needs a login first: USER and PASS, or AUTH PLAIN"},
        {"PASS 22222447", "-ERR Send USER <address> first (RFC 1939 7)"},
        {"USER", "-ERR Syntax: USER <you@447.edu>"},
        {"FOO bar", "-ERR Unknown command FOO; CAPA lists what this server does"},
        {"", "-ERR Empty command; try CAPA"},
        {"APOP bob@447.edu c4c9334bac560ecc979e58001b3e22fb",
         "-ERR APOP is not offered: use USER and PASS, or AUTH PLAIN, over TLS"},
        {std::string("RE\0TR 1", 7), "-ERR Unknown command RE?TR; CAPA lists what this server does"},
    });
    login(*s);
    checkReplies(*s, {
        {"USER ana@447.edu", "-ERR USER is not allowed after login (RFC 1939 4)"},
        {"AUTH PLAIN", "-ERR AUTH is not allowed after login (RFC 1939 4)"},
        {"STLS", "-ERR STLS is not allowed after login (RFC 1939 4)"},
        {"RETR", "-ERR Syntax: RETR <msg>"},
        {"RETR 1 2", "-ERR Syntax: RETR <msg>"},
        {"RETR 0", "-ERR No such message 0; this maildrop has messages 1 to 3"},
        {"RETR 4", "-ERR No such message 4; this maildrop has messages 1 to 3"},
        {"RETR -1", "-ERR No such message -1; this maildrop has messages 1 to 3"},
        {"RETR +1", "-ERR No such message +1; this maildrop has messages 1 to 3"},
        {"LIST 99999999999999999999", "-ERR No such message 99999999999999999999; this maildrop has messages 1 to 3"},
        {"TOP 1", "-ERR Syntax: TOP <msg> <lines>"},
        {"TOP 1 x", "-ERR Syntax: TOP <msg> <lines>, lines a number 0 or more"},
        {"NOOP now", "-ERR Syntax: NOOP"},
    });
    CHECK(s->state() == Session::State::Transaction);  // none of it ended the session
    // ana's maildrop is empty: no "messages 1 to 0".
    auto empty = p.session();
    login(*empty, "ana@447.edu", "11111447");
    checkReplies(*empty, {{"RETR 1", "-ERR No such message 1; this maildrop is empty"}});
}

TEST_CASE("POP3: RETR sends the stored text byte-stuffed with CRLF endings; TOP the header and n lines",
          "[pop3]") {
    Pop3Lab p;
    auto s = p.session();
    login(*s);
    Output retr = send(*s, "RETR 2");
    REQUIRE(retr.replies.size() == 1);
    auto stored = p.lab.store->getMessage("bob@447.edu", p.ids[1]);
    CHECK(retr.replies[0].status == "+OK " + std::to_string(stored->raw.size()) + " octets");
    CHECK(retr.replies[0].block ==
          "From: ana@447.edu\r\nSubject: two\r\n\r\n..hidden dot\r\n...two dots\r\n..\r\nend\r\n.\r\n");
    CHECK(retr.replies[0].forLog() == retr.replies[0].status + " <" +
                                          std::to_string(retr.replies[0].block.size()) +
                                          " octets of multi-line response>");
    CHECK(send(*s, "TOP 3 0").replies[0].block == "From: ana@447.edu\r\nSubject: three\r\n\r\n.\r\n");
    CHECK(send(*s, "TOP 3 2").replies[0].block == "From: ana@447.edu\r\nSubject: three\r\n\r\na\r\nb\r\n.\r\n");
    CHECK(send(*s, "TOP 3 99").replies[0].block ==
          "From: ana@447.edu\r\nSubject: three\r\n\r\na\r\nb\r\nc\r\nd\r\n.\r\n");
    CHECK(first(send(*s, "TOP 3 1")) == "+OK Top of message follows");
    // More lines than there are, however many digits: the whole body (RFC 1939 7).
    CHECK(send(*s, "TOP 3 99999999999999999999").replies[0].block ==
          "From: ana@447.edu\r\nSubject: three\r\n\r\na\r\nb\r\nc\r\nd\r\n.\r\n");
    CHECK(send(*s, "TOP 3 0000000000002").replies[0].block == "From: ana@447.edu\r\nSubject: three\r\n\r\na\r\nb\r\n.\r\n");
}

TEST_CASE("POP3: stuffedBlock handles bare LF, a missing last newline, dots and an empty text", "[pop3]") {
    CHECK(stuffedBlock("") == ".\r\n");
    CHECK(stuffedBlock("a\nb") == "a\r\nb\r\n.\r\n");
    CHECK(stuffedBlock(".\r\n.x\n") == "..\r\n..x\r\n.\r\n");
    CHECK(stuffedBlock("H: v\r\n\r\n1\r\n2\r\n", 1) == "H: v\r\n\r\n1\r\n.\r\n");
    CHECK(stuffedBlock("H: v\r\nno body", 0) == "H: v\r\nno body\r\n.\r\n");
}

TEST_CASE("POP3: UIDLs are the store's ids, the same in every session", "[pop3]") {
    Pop3Lab p;
    std::vector<std::string> first;
    {
        auto s = p.session();
        login(*s);
        first = lines(send(*s, "UIDL"));
        CHECK(say(*s, "UIDL 2") == "+OK 2 " + std::to_string(p.ids[1]));
        send(*s, "QUIT");
    }
    REQUIRE(first.size() == 5);
    CHECK(first[0] == "+OK Unique-id listing follows");
    CHECK(first[1] == "1 " + std::to_string(p.ids[0]));
    p.lab.store->deliver(mail("bob@447.edu", "four", "x\r\n"));
    auto s = p.session();
    login(*s);
    auto second = lines(send(*s, "UIDL"));
    REQUIRE(second.size() == 6);
    for (size_t i = 1; i < 4; ++i) CHECK(second[i] == first[i]);  // old messages keep number and UIDL
}

TEST_CASE("POP3: DELE marks, RSET unmarks, QUIT removes from the store (UPDATE); a dropped session removes nothing",
          "[pop3]") {
    Pop3Lab p;
    {
        auto s = p.session();
        login(*s);
        CHECK(say(*s, "DELE 1") == "+OK Message 1 deleted (removed at QUIT; RSET undoes it)");
        CHECK(say(*s, "DELE 1") == "-ERR Message 1 already deleted");
        CHECK(say(*s, "RETR 1") == "-ERR Message 1 already deleted");
        CHECK(say(*s, "LIST 1") == "-ERR Message 1 already deleted");
        CHECK(startsWith(say(*s, "STAT"), "+OK 2 "));
        CHECK(lines(send(*s, "LIST")).size() == 4);
        CHECK(say(*s, "RSET").rfind("+OK Maildrop has 3 messages", 0) == 0);
        CHECK(say(*s, "DELE 1").rfind("+OK", 0) == 0);
        CHECK(say(*s, "DELE 3").rfind("+OK", 0) == 0);
        CHECK(p.lab.store->mailboxStats("bob@447.edu").count == 3);  // nothing removed before QUIT
        // The connection drops (or the autologout fires): no UPDATE state, nothing removed.
        Output timeout = s->onTimeout();
        CHECK(first(timeout) == "-ERR Autologout: idle too long; closing connection, no messages deleted");
        CHECK(timeout.close);
    }
    CHECK(p.lab.store->mailboxStats("bob@447.edu").count == 3);
    auto s = p.session();
    login(*s);
    say(*s, "DELE 1");
    say(*s, "DELE 3");
    CHECK(first(send(*s, "QUIT")) == "+OK mail.447.edu maillab POP3 server signing off (1 message left)");
    auto left = p.lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(left.size() == 1);
    CHECK(left[0].id == p.ids[1]);
    CHECK(p.lab.store->mailboxStats("bob@447.edu").count == 1);
    CHECK(std::find(p.log.begin(), p.log.end(), "event=update user=bob@447.edu deleted=2") != p.log.end());
}

TEST_CASE("POP3: one session per maildrop; the second gets [IN-USE] until the first ends", "[pop3]") {
    Pop3Lab p;
    auto one = p.session();
    login(*one);
    auto two = p.session();
    say(*two, "USER bob@447.edu");
    CHECK(say(*two, "PASS 22222447") ==
          "-ERR [IN-USE] The maildrop of bob@447.edu is in use by another POP3 session; close it (QUIT) and try again");
    CHECK(two->state() == Session::State::Authorization);
    auto ana = p.session();  // another maildrop is not affected
    login(*ana, "ana@447.edu", "11111447");
    send(*one, "QUIT");
    login(*two);
    CHECK(two->state() == Session::State::Transaction);
    two.reset();  // a session that goes without QUIT gives its lock back too
    CHECK_FALSE(p.locks.held("bob@447.edu"));
}

TEST_CASE("POP3: AUTH PLAIN with an initial response, with the + continuation, cancelled and malformed", "[pop3]") {
    Pop3Lab p;
    auto s = p.session();
    CHECK(lines(send(*s, "AUTH")) == std::vector<std::string>{"+OK Mechanisms follow", "PLAIN", "."});
    CHECK(say(*s, "AUTH CRAM-MD5") == "-ERR Unrecognized authentication type CRAM-MD5; use PLAIN");
    CHECK(say(*s, "AUTH PLAIN") == "+ ");
    CHECK(s->state() == Session::State::AuthPlain);
    CHECK(s->redactForLog("AGJvYkA0NDcuZWR1ADIyMjIyNDQ3") == "<redacted: AUTH response>");
    CHECK(say(*s, "*") == "-ERR AUTH cancelled");
    CHECK(say(*s, "AUTH PLAIN") == "+ ");
    CHECK(say(*s, "not base64!") == "-ERR Cannot decode the AUTH response: not base64");
    CHECK(say(*s, "AUTH PLAIN Ym9iQDQ0Ny5lZHU=") == "-ERR The AUTH PLAIN response must be authzid NUL user NUL password");
    // authzid ana, authcid bob: acting as another user is refused.
    CHECK(say(*s, "AUTH PLAIN YW5hQDQ0Ny5lZHUAYm9iQDQ0Ny5lZHUAMjIyMjI0NDc=") == "-ERR [AUTH] Cannot act as another user");
    CHECK(s->redactForLog("AUTH PLAIN AGJvYkA0NDcuZWR1ADIyMjIyNDQ3") == "AUTH PLAIN <redacted>");
    CHECK(s->redactForLog("PASS secret") == "PASS <redacted>");
    CHECK(say(*s, "AUTH PLAIN") == "+ ");
    CHECK(startsWith(say(*s, "AGJvYkA0NDcuZWR1ADIyMjIyNDQ3"), "+OK bob@447.edu has 3 messages"));
    auto t = p.session();
    send(*t, "QUIT");
    send(*s, "QUIT");
    auto u = p.session();
    CHECK(startsWith(say(*u, "AUTH PLAIN AGJvYkA0NDcuZWR1ADIyMjIyNDQ3"), "+OK bob@447.edu has 3 messages"));
}

TEST_CASE("POP3: failed logins say [AUTH] and how to register; three close the connection; no registration",
          "[pop3]") {
    Pop3Lab p;
    auto s = p.session();
    say(*s, "USER bob@447.edu");
    CHECK(say(*s, "PASS 00000447") ==
          "-ERR [AUTH] Wrong address or password. No account yet? Register by logging in to the sender once with an "
          "empty password; it gives you the password to use here");
    say(*s, "USER carol@447.edu");  // no such account: the very same answer
    CHECK(startsWith(say(*s, "PASS 12345447"), "-ERR [AUTH] Wrong address or password."));
    CHECK_FALSE(p.lab.store->findAccount("carol@447.edu"));
    say(*s, "USER carol@447.edu");
    Output third = send(*s, "PASS");
    auto l = lines(third);
    REQUIRE(l.size() == 2);
    CHECK(l[0] == "-ERR [AUTH] An empty password registers an account only at the sender (SMTP AUTH); POP3 needs "
                  "the password the sender gave you");
    CHECK(l[1] == "-ERR [AUTH] Too many failed logins on this connection; closing");
    CHECK(third.close);
    CHECK_FALSE(p.lab.store->findAccount("carol@447.edu"));  // POP3 never registers
}

TEST_CASE("POP3: the guess budget is the one SMTP and HTTPS spend: throttled logins say [SYS/TEMP]", "[pop3]") {
    Pop3Lab p;
    p.limits.maxAuthFailures = 100;
    auto s = p.session();
    for (int i = 0; i < 5; ++i) {
        say(*s, "USER bob@447.edu");
        CHECK(startsWith(say(*s, "PASS 0000044" + std::to_string(i)), "-ERR [AUTH] "));
    }
    say(*s, "USER bob@447.edu");
    CHECK(startsWith(say(*s, "PASS 22222447"),
                     "-ERR [SYS/TEMP] Too many failed logins for this account; no password checked. Try again in "));
}

TEST_CASE("POP3: the plaintext port offers STLS and takes no credentials before it", "[pop3]") {
    Pop3Lab p;
    auto s = p.session(false);
    CHECK(first(s->start()) ==
          "+OK mail.447.edu maillab POP3 server ready (plaintext port: send STLS before logging in)");
    auto capa = lines(send(*s, "CAPA"));
    CHECK(std::find(capa.begin(), capa.end(), "STLS") != capa.end());
    CHECK(std::find(capa.begin(), capa.end(), "USER") == capa.end());
    CHECK(std::find(capa.begin(), capa.end(), "SASL PLAIN") == capa.end());
    const std::string refusal =
        "-ERR No credentials before TLS on this port: send STLS first (RFC 2595), or use POP3 over TLS on port 9995";
    CHECK(say(*s, "USER bob@447.edu") == refusal);
    CHECK(say(*s, "PASS 22222447") == refusal);
    CHECK(say(*s, "AUTH PLAIN AGJvYkA0NDcuZWR1ADIyMjIyNDQ3") == refusal);
    CHECK(s->state() == Session::State::Authorization);
    Output stls = send(*s, "STLS");
    CHECK(first(stls) == "+OK Begin TLS negotiation");
    CHECK(stls.startTls);
    s->onTlsStarted();
    CHECK(say(*s, "STLS") == "-ERR Command not permitted when TLS active");
    capa = lines(send(*s, "CAPA"));
    CHECK(std::find(capa.begin(), capa.end(), "STLS") == capa.end());
    CHECK(std::find(capa.begin(), capa.end(), "USER") != capa.end());
    login(*s);
    auto implicit = p.session();
    CHECK(say(*implicit, "STLS") == "-ERR Command not permitted when TLS active");
}

TEST_CASE("POP3: a USER sent before STLS does not carry over into TLS", "[pop3]") {
    Pop3Lab p;
    auto s = p.session(false);
    send(*s, "STLS");
    s->onTlsStarted();
    CHECK(say(*s, "PASS 22222447") == "-ERR Send USER <address> first (RFC 1939 7)");
}

TEST_CASE("POP3: too long lines and too many bad commands close the session; shutdown says SYS/TEMP", "[pop3]") {
    Pop3Lab p;
    p.limits.maxBadCommands = 3;
    auto s = p.session();
    CHECK(first(tooLong(*s)) == "-ERR Line too long (the limit is 1000 octets including CRLF, RFC 2449 4)");
    send(*s, "XYZZY");
    Output third = send(*s, "PLUGH");
    CHECK(lines(third).back() == "-ERR Too many bad commands (3); closing connection, no messages deleted");
    CHECK(third.close);
    auto t = p.session();
    send(*t, "AUTH PLAIN");
    tooLong(*t);  // abandons the AUTH exchange
    CHECK(t->state() == Session::State::Authorization);
    login(*t);
    say(*t, "DELE 1");
    Output stop = t->onShutdown();
    CHECK(first(stop) == "-ERR [SYS/TEMP] The server is shutting down; no messages deleted, try again later");
    CHECK(stop.close);
    CHECK(p.lab.store->mailboxStats("bob@447.edu").count == 3);
}

TEST_CASE("POP3: the maildrop holds the newest maxMessages, numbered oldest first", "[pop3]") {
    Pop3Lab p;
    p.limits.maxMessages = 2;
    auto s = p.session();
    login(*s);
    CHECK(say(*s, "UIDL 1") == "+OK 1 " + std::to_string(p.ids[1]));
    CHECK(say(*s, "UIDL 2") == "+OK 2 " + std::to_string(p.ids[2]));
    CHECK(startsWith(say(*s, "UIDL 3"), "-ERR No such message 3"));
}

TEST_CASE("POP3: RETR takes a place in the response budget, or says SYS/TEMP", "[pop3]") {
    Pop3Lab p;
    Env env;
    int reserved = 0;
    bool full = false;
    env.reserve = [&](size_t) -> std::shared_ptr<void> {
        if (full) return nullptr;
        ++reserved;
        return std::shared_ptr<void>(static_cast<void*>(&reserved), [&](void*) { --reserved; });
    };
    Session s(*p.lab.auth, *p.lab.store, p.limits, env);
    login(s);
    {
        Output retr = send(s, "RETR 1");
        CHECK(reserved == 1);
        CHECK(retr.holds.size() == 1);
    }
    CHECK(reserved == 0);  // given back once the reply is gone
    full = true;
    CHECK(say(s, "RETR 1") == "-ERR [SYS/TEMP] Too much mail is being sent at once; try again shortly");
}

TEST_CASE("POP3: a message removed behind the session's back is refused, not a crash", "[pop3]") {
    Pop3Lab p;
    auto s = p.session();
    login(*s);
    p.lab.store->deleteMessages("bob@447.edu", {p.ids[0]});
    CHECK(say(*s, "RETR 1") == "-ERR That message was removed from the server during this session");
    say(*s, "DELE 1");
    CHECK(startsWith(say(*s, "QUIT"), "+OK"));  // already gone: nothing more to remove
}

TEST_CASE("POP3 framing: a command split across reads is answered once its line ends", "[pop3][framing]") {
    Pop3Lab p;
    auto s = p.session();
    Output part = s->onBytes("US");
    CHECK(part.replies.empty());
    CHECK(part.inputs == 0);  // no complete line: the autologout timer is not restarted
    CHECK(s->onBytes("ER bob@44").replies.empty());
    Output user = s->onBytes("7.edu\r");
    CHECK(user.replies.empty());  // the CR alone ends nothing
    user = s->onBytes("\n");
    CHECK(lines(user) == std::vector<std::string>{"+OK Send PASS for bob@447.edu"});
    CHECK(user.inputs == 1);
    CHECK(startsWith(first(s->onBytes("PASS 22222447\n")), "+OK bob@447.edu has 3 messages"));  // bare LF
    CHECK(p.traced == std::vector<std::string>{"C: USER bob@447.edu", "C: PASS <redacted>"});
}

TEST_CASE("POP3 framing: pipelined commands in one read are answered in order (RFC 2449 6.6)", "[pop3][framing]") {
    Pop3Lab p;
    auto s = p.session();
    auto capa = lines(send(*s, "CAPA"));
    REQUIRE(std::find(capa.begin(), capa.end(), "PIPELINING") != capa.end());
    Output out = s->onBytes("USER bob@447.edu\r\nPASS 22222447\r\nSTAT\r\nLIST 1\r\nNOOP\r\n");
    // The login ends a batch (the event core runs the maildrop's commands on their own lane).
    CHECK(out.inputs == 2);
    REQUIRE(out.more);
    Output rest = s->onBytes(nullptr, 0);
    CHECK(rest.inputs == 3);
    CHECK_FALSE(rest.more);
    for (Reply& r : rest.replies) out.replies.push_back(std::move(r));
    auto got = lines(out);
    REQUIRE(got.size() == 5);
    CHECK(got[0] == "+OK Send PASS for bob@447.edu");
    CHECK(startsWith(got[1], "+OK bob@447.edu has 3 messages"));
    CHECK(got[2] == "+OK 3 " + std::to_string(p.lab.store->mailboxStats("bob@447.edu").bytes));
    CHECK(startsWith(got[3], "+OK 1 "));
    CHECK(got[4] == "+OK Still here");
}

TEST_CASE("POP3 framing: a line over the limit is refused unread, the next line is read", "[pop3][framing]") {
    Pop3Lab p;
    p.limits.maxLineLength = 20;  // 18 octets and CRLF
    auto s = p.session();
    const std::string refusal = "-ERR Line too long (the limit is 20 octets including CRLF, RFC 2449 4)";
    CHECK(first(s->onBytes(std::string(18, 'X') + "\r\n")) == "-ERR Unknown command XXXXXXXXXXXXXXXXXX; CAPA lists what this server does");
    CHECK(first(tooLong(*s, p.limits.maxLineLength)) == refusal);
    // Over the limit before its end arrives, then the rest and a good line in the next read.
    CHECK(s->onBytes(std::string(30, 'A')).replies.empty());
    Output out = s->onBytes("USER bob@447.edu\r\nCAPA\r\n");
    auto got = lines(out);
    REQUIRE(got.size() >= 2);
    CHECK(got[0] == refusal);  // the USER was part of the long line: not run
    CHECK(got[1] == "+OK Capability list follows");
    CHECK(p.traced.back() == "C: CAPA");
    CHECK(p.traced[p.traced.size() - 2] == "C: <line over the length limit, discarded>");
}

TEST_CASE("POP3 framing: what is pipelined after STLS is discarded, never run inside TLS", "[pop3][framing]") {
    // RFC 2595 / CVE-2011-0411: those bytes came in clear; an attacker in the middle could have added them.
    Pop3Lab p;
    auto s = p.session(false);
    const std::string after = "USER bob@447.edu\r\nCAPA\r\nNOO";
    Output stls = s->onBytes("STLS\r\n" + after);
    CHECK(lines(stls) == std::vector<std::string>{"+OK Begin TLS negotiation"});
    CHECK(stls.startTls);
    CHECK(stls.inputs == 1);
    CHECK(stls.discardedOctets == after.size());
    CHECK(s->onBytes("P\r\n").discardedOctets == 3);  // still before the handshake: dropped too
    s->onTlsStarted();
    // The USER was not run, and the reader starts fresh: no half line from before TLS joins this one.
    CHECK(say(*s, "PASS 22222447") == "-ERR Send USER <address> first (RFC 1939 7)");
    CHECK(say(*s, "NOOP") == "-ERR NOOP needs a login first: USER and PASS, or AUTH PLAIN");
    CHECK(p.traced == std::vector<std::string>{"C: STLS", "C: PASS <redacted>", "C: NOOP"});
}

TEST_CASE("POP3 framing: bytes after QUIT are not read", "[pop3][framing]") {
    Pop3Lab p;
    auto s = p.session();
    login(*s);
    Output out = s->onBytes("DELE 1\r\nQUIT\r\nDELE 2\r\nRETR 3\r\n");
    auto got = lines(out);
    REQUIRE(got.size() == 2);
    CHECK(got[1] == "+OK mail.447.edu maillab POP3 server signing off (2 messages left)");
    CHECK(out.close);
    CHECK(out.inputs == 2);
    CHECK(p.lab.store->mailboxStats("bob@447.edu").count == 2);  // DELE 2 came after QUIT: not run
    CHECK(s->onBytes("NOOP\r\n").replies.empty());
}

TEST_CASE("POP3 framing: pipelined RETRs are answered a batch of replies at a time", "[pop3][framing]") {
    // The server sends each batch before the next is made: a burst of RETRs does not hold every
    // message in memory at once.
    Pop3Lab p;
    p.lab.store->deliver(mail("bob@447.edu", "big", std::string(Session::kBatchBytes, 'b') + "\r\n"));
    auto s = p.session();
    login(*s);
    Output batch = s->onBytes("RETR 4\r\nRETR 4\r\nNOOP\r\n");
    REQUIRE(batch.replies.size() == 1);
    CHECK(batch.more);
    CHECK(batch.inputs == 1);
    Output rest = s->onBytes(nullptr, 0);
    REQUIRE(rest.replies.size() == 1);
    CHECK(rest.more);
    rest = s->onBytes("NOOP\r\n");  // new bytes come after the ones held
    CHECK(lines(rest) == std::vector<std::string>{"+OK Still here", "+OK Still here"});
    CHECK_FALSE(rest.more);
}

TEST_CASE("POP3 golden transcripts replay exactly", "[pop3][golden]") {
    auto files = maillab::testing::goldenFiles(std::string(MAILLAB_GOLDEN_DIR) + "/pop3");
    REQUIRE(files.size() >= 2);
    for (const auto& file : files) {
        INFO(file);
        Pop3Lab p;
        auto s = p.session(file.find("stls") == std::string::npos);
        std::ifstream in(file);
        REQUIRE(in);
        std::vector<std::string> pending;
        bool closed = false;
        auto feed = [&](const Output& out) {
            for (auto& l : lines(out)) pending.push_back(l);
            if (out.close) closed = true;
            if (out.startTls) s->onTlsStarted();
        };
        feed(s->start());
        std::string line;
        int number = 0;
        while (std::getline(in, line)) {
            ++number;
            INFO(file + ":" + std::to_string(number) + ": " + line);
            if (line.empty() || line[0] == '#') continue;
            if (line.rfind("C: ", 0) == 0 || line == "C:") {
                REQUIRE(pending.empty());
                feed(send(*s, line.size() > 3 ? line.substr(3) : ""));
            } else if (line == "C!: toolong") {
                feed(tooLong(*s));
            } else if (line == "C!: timeout") {
                feed(s->onTimeout());
            } else if (line.rfind("S: ", 0) == 0 || line == "S:") {
                REQUIRE_FALSE(pending.empty());
                CHECK(pending.front() == (line.size() > 3 ? line.substr(3) : ""));
                pending.erase(pending.begin());
            } else if (line == "S!: close") {
                CHECK(closed);
            } else {
                FAIL("unknown line kind");
            }
        }
        CHECK(pending.empty());
    }
}

TEST_CASE("autoconfig: the document names the POP3 and SMTP ports, SSL and the whole address", "[pop3][autoconfig]") {
    autoconfig::Settings settings;
    settings.smtpPort = 465;
    settings.pop3Port = 995;
    std::string xml = autoconfig::configXml(settings, autoconfig::hostFor(settings, "Lab.Example.edu:443"));
    CHECK(contains(xml, "<emailProvider id=\"447.edu\">"));
    CHECK(contains(xml, "<incomingServer type=\"pop3\">\n      <hostname>lab.example.edu</hostname>\n      "
                        "<port>995</port>\n      <socketType>SSL</socketType>\n      "
                        "<username>%EMAILADDRESS%</username>\n      "
                        "<authentication>password-cleartext</authentication>"));
    CHECK(contains(xml, "<outgoingServer type=\"smtp\">\n      <hostname>lab.example.edu</hostname>\n      "
                        "<port>465</port>\n      <socketType>SSL</socketType>"));
    CHECK_FALSE(contains(xml, "STARTTLS"));
    settings.pop3PlainPort = 110;
    CHECK(contains(autoconfig::configXml(settings, "localhost"), "<port>110</port>\n      <socketType>STARTTLS</socketType>"));
    CHECK(autoconfig::hostFor(settings, "localhost:9100") == "localhost");
    CHECK(autoconfig::hostFor(settings, "[::1]:9100") == "[::1]");
    CHECK(autoconfig::hostFor(settings, "127.0.0.1") == "127.0.0.1");
    CHECK(autoconfig::hostFor(settings, "<script>") == "localhost");  // never echoed into the XML
    CHECK(autoconfig::hostFor(settings, "") == "localhost");
    settings.hostname = "mail.class.example";
    CHECK(autoconfig::hostFor(settings, "evil.example") == "mail.class.example");
}
