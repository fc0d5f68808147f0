// The SMTP session's own framing of the bytes it is given: split anywhere, CHUNKING (RFC 3030 BDAT),
// what STARTTLS discards, and the event core's deferred slow inputs (resumed or refused by a worker).
// Split from tests/unit/test_session.cpp, whose Harness it shares (tests/unit/session_harness.h).
#include "racing_store.h"
#include "session_harness.h"

#include "../../sender/session.h"

#include "catch.hpp"

#include <algorithm>
#include <string>
#include <vector>

using namespace maillab;
using namespace maillab::smtp;
using maillab::testing::Harness;
using maillab::testing::RacingStore;

// ---- the session's own framing, and CHUNKING (RFC 3030) ----------------------------------------------

namespace {
std::string storedRaw(Harness& h, const std::string& mailbox) {
    auto listed = h.lab.store->listMessages(mailbox, 0, 10);
    if (listed.empty()) return "";
    auto stored = h.lab.store->getMessage(mailbox, listed.front().id);
    return stored ? stored->raw : "";
}
std::vector<std::string> answer(Harness& h, const std::string& bytes) { return Harness::lines(h.session->onBytes(bytes)); }
}  // namespace

TEST_CASE("bytes split anywhere give the same replies: the session frames them", "[session][framing]") {
    const std::string wire = "EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\nMAIL FROM:<ana@447.edu>\r\n"
                             "RCPT TO:<bob@447.edu>\r\nBDAT 7\r\nab\r\n.\r\nBDAT 3 LAST\r\nxyzDATA\r\n";
    Harness whole;
    std::vector<std::string> expected = answer(whole, wire);
    REQUIRE(expected.size() >= 5);
    CHECK(expected.back() == "503 5.5.1 Bad sequence of commands: need MAIL first");  // "DATA" after the chunk "xyz"
    Harness single;
    std::vector<std::string> got;
    size_t inputs = 0;
    for (char c : wire) {
        Output out = single.session->onBytes(std::string(1, c));
        inputs += out.inputs;
        for (auto& l : Harness::lines(out)) got.push_back(l);
    }
    CHECK(got == expected);
    CHECK(inputs == 9);  // seven lines and two chunks: each restarts the server's command clock
    CHECK(storedRaw(single, "bob@447.edu") == storedRaw(whole, "bob@447.edu"));
}

TEST_CASE("BDAT stores the octets as sent: no dot-stuffing; line ends made CRLF", "[session][bdat]") {
    Harness h;
    h.login();
    h.envelope();
    const std::string first = "Subject: raw\r\n\r\n.\r\n..two dots\r\nbare\rcr";
    CHECK(answer(h, "BDAT " + std::to_string(first.size()) + "\r\n" + first) ==
          std::vector<std::string>{"250 2.0.0 Ok: " + std::to_string(first.size()) + " octets received, " +
                                   std::to_string(first.size()) + " in all"});
    // The CR ending one chunk and the LF starting the next are one line end.
    CHECK(answer(h, "BDAT 15 LAST\r\n\nbare\nlf\r\n\xc3\xa9t\xc3\xa9") == std::vector<std::string>{"250 2.0.0 Ok: queued as QID1"});
    std::string raw = storedRaw(h, "bob@447.edu");
    CHECK(raw.find("\r\nSubject: raw\r\n\r\n.\r\n..two dots\r\nbare\r\ncr\r\nbare\r\nlf\r\n\xc3\xa9t\xc3\xa9\r\n") !=
          std::string::npos);
    CHECK(h.session->state() == Session::State::Ready);
}

TEST_CASE("BDAT over the size limit: read, refused 552, and the stream stays in step", "[session][bdat][limits]") {
    SessionLimits limits;
    limits.maxMessageSize = 100;
    Harness h(limits);
    h.login();
    h.envelope();
    std::string big = "QUIT\r\n" + std::string(194, 'q');
    auto got = answer(h, "BDAT 200 LAST\r\n" + big + "NOOP\r\n");
    REQUIRE(got.size() == 2);
    CHECK(got[0] == "552 5.3.4 Message size exceeds fixed maximum message size (100 octets); not stored");
    CHECK(got[1] == "250 2.0.0 Ok");
    CHECK(h.session->state() == Session::State::Ready);
    // The limit counts the chunks together; after the refusal, chunks already pipelined are read
    // and refused (RFC 3030 2) until the client starts a new transaction.
    h.envelope();
    got = answer(h, "BDAT 60\r\n" + std::string(60, 'a') + "BDAT 60\r\n" + std::string(60, 'b') + "BDAT 6 LAST\r\nRSET\r\nNOOP\r\n");
    REQUIRE(got.size() == 4);
    CHECK(got[0].rfind("250 2.0.0 Ok: 60 octets received", 0) == 0);
    CHECK(got[1].rfind("552 5.3.4 ", 0) == 0);
    CHECK(got[2] == "503 5.5.1 Bad sequence of commands: need MAIL first");
    CHECK(got[3] == "250 2.0.0 Ok");
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
    // Too many digits to count: refused at once.
    CHECK(h.say("BDAT 1234567890123456789").rfind("501 5.5.4 Syntax: BDAT", 0) == 0);
}

TEST_CASE("BDAT chunks count against the server's DataBudget", "[session][bdat][limits]") {
    DataBudget budget(64);
    Harness h({}, &budget);
    h.login();
    h.envelope();
    auto got = answer(h, "BDAT 100\r\n" + std::string(100, 'z'));
    REQUIRE(got.size() == 1);
    CHECK(got[0].rfind("452 4.3.1 Insufficient system storage", 0) == 0);
    CHECK(budget.inUse() == 0);
    CHECK(h.lab.store->mailboxStats("bob@447.edu").count == 0);
}

TEST_CASE("a BDAT message's story notes each chunk by its size", "[session][bdat][story]") {
    Harness h;
    h.login();
    h.envelope();
    answer(h, "BDAT 12\r\nSubject: s\r\n");
    answer(h, "BDAT 8 LAST\r\n\r\nsecret");
    auto listed = h.lab.store->listMessages("bob@447.edu", 0, 1);
    REQUIRE(listed.size() == 1);
    std::string story = *h.lab.store->messageStory("bob@447.edu", listed[0].id);
    for (const char* expected : {"\"C: BDAT 12\"", "\"C: <12 octets>\"", "\"S: 250 2.0.0 Ok: 12 octets received, 12 in all\"",
                                 "\"C: BDAT 8 LAST\"", "\"C: <8 octets>\""})
        CHECK(story.find(expected) != std::string::npos);
    CHECK(story.find("secret") == std::string::npos);
}

TEST_CASE("after STARTTLS the session discards what was pipelined in clear (RFC 3207 5)", "[session][starttls]") {
    Harness h({}, nullptr, nullptr, TlsMode::StartTls);
    Output out = h.session->onBytes(std::string("EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\nEHL"));
    CHECK(out.startTls);
    auto got = Harness::lines(out);
    REQUIRE(!got.empty());
    CHECK(got.back() == "220 2.0.0 Ready to start TLS");
    CHECK(out.discardedOctets == 44);  // the server logs them, once per STARTTLS
    // Before the handshake completes nothing is read; after it the client starts afresh.
    Output later = h.session->onBytes(std::string("NOOP\r\n"));
    CHECK(Harness::lines(later).empty());
    CHECK(later.discardedOctets == 6);
    h.session->onTlsStarted("TLSv1.3 TLS_AES_256_GCM_SHA384");
    CHECK(h.say("NOOP") == "250 2.0.0 Ok");
    CHECK(h.say("MAIL FROM:<ana@447.edu>") == "503 5.5.1 Bad sequence of commands: need EHLO or HELO first");
    CHECK_FALSE(h.session->authenticated());
}

// The event core's split (sender/event_server.cpp): with setDeferSlowWork the loop's onBytes stops
// before each input that blocks, and resumeDeferred (a worker's) runs it alone; what followed is framed
// again by the caller (deferral on: the next slow input is deferred in turn). The replies
// must be the very bytes of one uninterrupted onBytes per read, and nothing slow may run before the resume.
TEST_CASE("deferred slow inputs give the same replies, and run only when resumed", "[session][events]") {
    const std::vector<std::string> reads = {
        "EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\nMAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\n",
        "Subject: one\r\n\r\nbody\r\n.",
        "\r\nMAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nBDAT 22\r\nSubject: two\r\n\r\nbody\r\nBDAT 0 LAST\r\n",
        "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nBDAT 24 LAST\r\nSubject: three\r\n\r\nbo",
        "dy\r\nNOOP\r\nQUIT\r\n",
    };
    Harness plain, split;
    split.session->setDeferSlowWork(true);
    std::string plainWire, splitWire;
    auto wire = [](const maillab::smtp::Output& out) {
        std::string bytes;
        for (const auto& reply : out.replies) bytes += reply.wire();
        return bytes;
    };
    int deferrals = 0;
    for (const std::string& bytes : reads) {
        plainWire += wire(plain.session->onBytes(bytes));
        size_t storedBefore = split.lab.store->listMessages("bob@447.edu", 0, 10).size();
        bool loggedInBefore = split.session->authenticated();
        maillab::smtp::Output out = split.session->onBytes(bytes);
        splitWire += wire(out);
        while (out.deferred) {
            ++deferrals;
            // Nothing slow has run on the "loop": no login, no message stored.
            CHECK(split.session->authenticated() == loggedInBefore);
            CHECK(split.lab.store->listMessages("bob@447.edu", 0, 10).size() == storedBefore);
            CHECK(split.session->hasDeferred());
            std::string after;
            out = split.session->resumeDeferred(after);
            splitWire += wire(out);
            CHECK_FALSE(out.deferred);
            CHECK_FALSE(split.session->hasDeferred());
            out = split.session->onBytes(after);
            splitWire += wire(out);
            storedBefore = split.lab.store->listMessages("bob@447.edu", 0, 10).size();
            loggedInBefore = split.session->authenticated();
        }
        CHECK_FALSE(split.session->hasDeferred());
    }
    // AUTH; the "." of DATA, its CRLF in the next read; the BDAT 0 LAST behind it (an input of its
    // own); the read that completes BDAT 24 LAST's chunk (its line is no slow input: its octets are).
    CHECK(deferrals == 4);
    CHECK(splitWire == plainWire);
    CHECK(split.lab.store->listMessages("bob@447.edu", 0, 10).size() == 3);
    CHECK(plainWire.find("221 ") != std::string::npos);
}

// The event core with no worker free in time (sender.events.maxQueuedJobs, auth.hashWaitMilliseconds):
// refuseDeferred answers the deferred input busy, in the thread core's words, and runs nothing slow;
// the session stays in step and the bytes after it are framed (a later slow input is deferred again).
TEST_CASE("a deferred input refused for want of a worker: 454 or 451, nothing checked or stored", "[session][events]") {
    Harness h;
    h.session->setDeferSlowWork(true);
    auto codes = [](const maillab::smtp::Output& out) {
        std::string all;
        for (const auto& reply : out.replies) all += reply.wire();
        return all;
    };
    maillab::smtp::Output out = h.session->onBytes("EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\nNOOP\r\n");
    REQUIRE(out.deferred);
    CHECK(h.session->deferredIsAuth());
    std::string after;
    out = h.session->refuseDeferred(after);
    std::string wire = codes(out);
    CHECK(wire == "454 4.7.0 Temporary authentication failure; try again later\r\n");
    CHECK(after == "NOOP\r\n");  // not run: the caller frames it again
    CHECK(codes(h.session->onBytes(after)).rfind("250 2.0.0", 0) == 0);
    CHECK_FALSE(h.session->authenticated());
    CHECK_FALSE(h.session->hasDeferred());

    // Authenticated (a worker ran it), then a message whose end finds no worker: 451, not stored.
    out = h.session->onBytes("AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\n");
    REQUIRE(out.deferred);
    out = h.session->resumeDeferred(after);
    REQUIRE(h.session->authenticated());
    out = h.session->onBytes("MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
                             "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nBDAT 9 LAST\r\n");
    REQUIRE(out.deferred);
    CHECK_FALSE(h.session->deferredIsAuth());
    out = h.session->refuseDeferred(after);
    wire = codes(out);
    CHECK(wire.find("451 4.3.0 Local error in processing: message not stored; try again later") != std::string::npos);
    out = h.session->onBytes(after);
    CHECK_FALSE(out.deferred);  // MAIL, RCPT, BDAT 9 LAST: nothing slow until its octets end
    out = h.session->onBytes("Subject:y");
    CHECK(out.deferred);  // the BDAT LAST's end waits for a worker of its own
    out = h.session->refuseDeferred(after);  // a BDAT chunk's end refused as its octets end
    CHECK(codes(out).find("451 4.3.0") != std::string::npos);
    CHECK(h.lab.store->listMessages("bob@447.edu", 0, 10).empty());
    out = h.session->onBytes("NOOP\r\n");
    CHECK(codes(out).rfind("250 ", 0) == 0);
}

// Issue 22 (kept-open delivery): on SQLite the event core runs a message's end on its loop up to the
// commit and hands the message to the store's group commit (no worker waits for fsync). The session
// stops there, answers nothing until messageStored, and answers then as a delivery would.
TEST_CASE("resumeDeferredUntilStored stops at the commit; messageStored answers 250 or 451", "[session][events]") {
    Harness h;
    h.session->setDeferSlowWork(true);
    std::string after;
    Output out = h.session->onBytes("EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\n");
    if (out.deferred) h.session->resumeDeferred(after);
    REQUIRE(h.session->authenticated());
    const std::string message = "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n";
    out = h.session->onBytes(message);
    REQUIRE(out.deferred);
    out = h.session->resumeDeferredUntilStored(after);
    CHECK(out.storing);
    CHECK(out.replies.empty());  // no 250 before the commit
    CHECK(after == "NOOP\r\n");
    std::shared_ptr<const NewMessage> pending = h.session->pendingMessage();
    REQUIRE(pending);
    CHECK(pending->recipients == std::vector<std::string>{"bob@447.edu"});
    CHECK(pending->raw.find("Subject: x") != std::string::npos);
    CHECK(h.lab.store->listMessages("bob@447.edu", 0, 10).empty());  // the caller commits it
    h.lab.store->deliver(*pending);
    out = h.session->messageStored("");
    REQUIRE(Harness::lines(out).size() == 1);
    CHECK(Harness::lines(out)[0].rfind("250 2.0.0 Ok: queued as " + pending->queueId, 0) == 0);
    CHECK_FALSE(h.session->pendingMessage());
    CHECK(Harness::lines(h.session->onBytes(after)) == std::vector<std::string>{"250 2.0.0 Ok"});

    // A failed commit: 451 4.3.0, and the session goes on with a fresh transaction.
    out = h.session->onBytes(message);
    REQUIRE(out.deferred);
    out = h.session->resumeDeferredUntilStored(after);
    REQUIRE(out.storing);
    out = h.session->messageStored("disk I/O error");
    CHECK(Harness::lines(out) == std::vector<std::string>{"451 4.3.0 Local error in processing: message not stored; try again later"});
    CHECK(Harness::lines(h.session->onBytes("RCPT TO:<bob@447.edu>\r\n"))[0].rfind("503 ", 0) == 0);  // no MAIL now
    CHECK(h.lab.store->listMessages("bob@447.edu", 0, 10).size() == 1);
    CHECK_THROWS_AS(h.session->messageStored(""), std::logic_error);  // nothing on its way

    // A refusal on the way (over the recipient's quota) is answered at once: nothing to commit.
    maillab::smtp::SessionLimits tiny;
    tiny.mailboxQuotaBytes = 10;
    Harness small(tiny);
    small.session->setDeferSlowWork(true);
    out = small.session->onBytes("EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\n");
    if (out.deferred) small.session->resumeDeferred(after);
    out = small.session->onBytes("MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\n" + std::string(40, 'x') + "\r\n.\r\n");
    REQUIRE(out.deferred);
    out = small.session->resumeDeferredUntilStored(after);
    CHECK_FALSE(out.storing);
    CHECK_FALSE(small.session->pendingMessage());
    REQUIRE(Harness::lines(out).size() == 1);
    CHECK(Harness::lines(out)[0].rfind("452 4.2.2 Mailbox full", 0) == 0);
}

// Review of the event core (issue 22, finding 2): the worker that resumes a deferred input runs that
// input alone. Five AUTHs pipelined are five deferrals, each resumed alone (was: the first resume ran
// all five hashes in one AUTH job), and a message's end pipelined behind an AUTH is deferred again,
// for the delivery lane (was: stored by the AUTH job).
TEST_CASE("resumeDeferred runs the deferred input alone; the next slow input is deferred again", "[session][events]") {
    Harness h;
    h.session->setDeferSlowWork(true);
    const std::string wrong = "AUTH PLAIN AGFuYUA0NDcuZWR1AHdyb25n\r\n";  // ana@447.edu, "wrong"
    Output out = h.session->onBytes("EHLO c\r\n" + wrong + wrong + wrong + "NOOP\r\n");
    int resumes = 0;
    std::string after;
    while (out.deferred) {
        CHECK(h.session->deferredIsAuth());
        Output ran = h.session->resumeDeferred(after);
        ++resumes;
        CHECK(Harness::lines(ran).size() == 1);  // one AUTH's answer, nothing behind it
        out = h.session->onBytes(after);
    }
    CHECK(resumes == 3);
    CHECK(Harness::lines(out) == std::vector<std::string>{"250 2.0.0 Ok"});

    out = h.session->onBytes("AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\nMAIL FROM:<ana@447.edu>\r\n"
                             "RCPT TO:<bob@447.edu>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\n");
    REQUIRE(out.deferred);
    REQUIRE(h.session->deferredIsAuth());
    h.session->resumeDeferred(after);
    REQUIRE(h.session->authenticated());
    CHECK(h.lab.store->listMessages("bob@447.edu", 0, 10).empty());  // not stored by the AUTH's resume
    out = h.session->onBytes(after);
    REQUIRE(out.deferred);
    CHECK_FALSE(h.session->deferredIsAuth());  // the message's end: the delivery lane's
    Output stored = h.session->resumeDeferred(after);
    CHECK(Harness::lines(stored).size() == 1);
    CHECK(h.lab.store->listMessages("bob@447.edu", 0, 10).size() == 1);
    CHECK(after == "NOOP\r\n");
}

// Issue 22 (sessions): an AUTH whose password the Authenticator's cache holds needs no slow hash and no
// store write, so the event core answers it on the loop (as the retriever's does) instead of a trip
// to an auth worker; a password not in the cache, a wrong one, a spent budget, or a login whose record
// would write (a class server's provenance) still waits for a worker.
TEST_CASE("an AUTH the credential cache can answer runs on the loop; one it cannot is deferred", "[session][events]") {
    Harness h;
    RacingStore counting(*h.lab.store);
    Authenticator auth(counting, h.lab.auth->policy(), [&h] { return h.lab.now; });
    // The owner logged in before from here (on a worker): her password is in the cache, her source trusted.
    REQUIRE(auth.authenticate("ana@447.edu", "11111447", false, "127.0.0.1").outcome == AuthOutcome::Ok);
    smtp::SessionEnv env;
    env.peerAddress = "127.0.0.1";
    env.clock = [&h] { return h.lab.now; };
    std::vector<std::string> asked;
    bool provenanceWrites = false;
    env.loginWouldWait = [&](const std::string& account) {
        asked.push_back(account);
        return provenanceWrites;
    };
    auto session = [&] {
        auto s = std::make_unique<Session>(auth, counting, h.limits, env);
        s->setDeferSlowWork(true);
        s->start();
        return s;
    };
    const std::string right = "AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\n";
    const std::string wrong = "AUTH PLAIN AGFuYUA0NDcuZWR1AHdyb25n\r\n";  // ana@447.edu, "wrong"
    auto plain = session();
    int generationReads = counting.generationReads;
    Output out = plain->onBytes("EHLO c\r\n" + right + "NOOP\r\n");
    CHECK_FALSE(out.deferred);
    CHECK(plain->authenticated());
    std::vector<std::string> lines = Harness::lines(out);
    REQUIRE(lines.size() >= 2);
    CHECK(lines[lines.size() - 2] == "235 2.7.0 Authentication successful");
    CHECK(lines.back() == "250 2.0.0 Ok");
    CHECK(asked == std::vector<std::string>{"ana@447.edu"});
    // Checked once, on the loop; finishAuth used that answer (a second check would read again).
    CHECK(counting.generationReads == generationReads + 1);

    // AUTH LOGIN: the name is no check; the password line is answered at once too.
    auto login = session();
    out = login->onBytes("EHLO c\r\nAUTH LOGIN\r\nYW5hQDQ0Ny5lZHU=\r\nMTExMTE0NDc=\r\n");
    CHECK_FALSE(out.deferred);
    CHECK(login->authenticated());

    // What is refused before any check runs on the loop too, checking nothing: a cancel, not base64,
    // another user's authzid, AUTH before EHLO.
    int reads = counting.generationReads + counting.loginStateReads;
    for (const std::string& bytes : {std::string("EHLO c\r\nAUTH PLAIN\r\n*\r\n"), std::string("EHLO c\r\nAUTH PLAIN !!!\r\n"),
                                     std::string("EHLO c\r\nAUTH PLAIN Ym9iQDQ0Ny5lZHUAYW5hQDQ0Ny5lZHUAMTExMTE0NDc=\r\n"),
                                     right}) {
        auto refused = session();
        out = refused->onBytes(bytes);
        CHECK_FALSE(out.deferred);
        CHECK_FALSE(refused->authenticated());
    }
    CHECK(counting.generationReads + counting.loginStateReads == reads);

    // A wrong password: a guess to pay for and a slow hash, on a worker.
    auto wrongOne = session();
    out = wrongOne->onBytes("EHLO c\r\n" + wrong + "NOOP\r\n");
    CHECK(out.deferred);
    CHECK_FALSE(wrongOne->authenticated());

    // A login whose provenance record would write to the store: on a worker, which runs it all.
    provenanceWrites = true;
    auto recorded = session();
    out = recorded->onBytes("EHLO c\r\n" + right);
    CHECK(out.deferred);
    CHECK_FALSE(recorded->authenticated());
    std::string after;
    out = recorded->resumeDeferred(after);
    CHECK(recorded->authenticated());
    provenanceWrites = false;

    // A name never cached (bob's first login) is deferred: the account's read and hash run there.
    auto first = session();
    out = first->onBytes("EHLO c\r\nAUTH PLAIN AGJvYkA0NDcuZWR1ADIyMjIyNDQ3\r\n");
    CHECK(out.deferred);

    // Her budget from here spent: the right password is refused as the wrong one is, both by a
    // worker, in the same words (a right one answered sooner would tell a guesser it was right).
    for (int i = 0; i < auth.policy().guessBurst; ++i)
        REQUIRE(auth.authenticate("ana@447.edu", "00000447", false, "127.0.0.1").outcome == AuthOutcome::BadCredentials);
    std::vector<std::string> refusals;
    for (const std::string& line : {right, wrong}) {
        auto spent = session();
        out = spent->onBytes("EHLO c\r\n" + line);
        CHECK(out.deferred);
        out = spent->resumeDeferred(after);
        refusals.push_back(Harness::lines(out).back());
    }
    CHECK(refusals[0].rfind("454 4.7.0 Too many failed logins", 0) == 0);
    CHECK(refusals[0] == refusals[1]);
    // The same words as a stranger's (an unknown name's) refusal: none tells which names exist.
    for (int i = 0; i < auth.policy().guessBurst; ++i)
        REQUIRE(auth.authenticate("nobody@447.edu", "00000447", false, "127.0.0.1").outcome == AuthOutcome::BadCredentials);
    auto stranger = session();
    out = stranger->onBytes("EHLO c\r\nAUTH PLAIN AG5vYm9keUA0NDcuZWR1ADAwMDAwNDQ3\r\n");  // nobody@447.edu
    if (out.deferred) out = stranger->resumeDeferred(after);
    std::string strangers = Harness::lines(out).back();
    CHECK(strangers.rfind("454 4.7.0 Too many failed logins", 0) == 0);
    CHECK(strangers.substr(0, strangers.find(" Try again in")) == refusals[0].substr(0, refusals[0].find(" Try again in")));
    CHECK(strangers.substr(strangers.find(" seconds")) == refusals[0].substr(refusals[0].find(" seconds")));
}

TEST_CASE("DATA's content lines are taken alike however the reads split them", "[session][framing][data]") {
    // frame() takes whole content lines straight from a read; a line split over reads, the ending
    // ".", a line over the limit go through the line reader. Both must store the same octets and
    // refuse the same messages.
    const std::string wire =
        "EHLO c\r\nAUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3\r\n"
        "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\n"
        "Subject: split\r\n\r\n..leading dot\r\nplain\r\nbare lf\n...two\r\n.\r\n"
        "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\n"
        "Subject: long\r\n\r\n" + std::string(3000, 'x') + "\r\n.\r\n"
        "MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\n"
        "Subject: cr\r\n\r\nbare\rcr\r\n.\r\nNOOP\r\n";
    Harness whole;
    std::vector<std::string> expected = answer(whole, wire);
    size_t wholeInputs = 0;
    {
        Harness count;
        wholeInputs = count.session->onBytes(wire).inputs;
    }
    REQUIRE(expected.size() == 22);  // EHLO's 8 lines, AUTH, then MAIL, RCPT, DATA, the end three times, NOOP
    CHECK(expected[12].rfind("250 2.0.0 Ok: queued", 0) == 0);
    CHECK(expected[16].rfind("550 5.6.0 ", 0) == 0);  // the line over the limit
    CHECK(expected[20].rfind("550 5.6.0 ", 0) == 0);  // the bare CR
    CHECK(expected[21].rfind("250 ", 0) == 0);        // NOOP: still in step
    const std::string stored = storedRaw(whole, "bob@447.edu");
    CHECK(stored.size() > 0);
    CHECK(stored.find("\r\n\r\n.leading dot\r\nplain\r\nbare lf\r\n..two\r\n") != std::string::npos);
    for (size_t step : {size_t(1), size_t(2), size_t(7), size_t(64)}) {
        Harness split;
        std::vector<std::string> got;
        size_t inputs = 0;
        for (size_t at = 0; at < wire.size(); at += step) {
            Output out = split.session->onBytes(wire.substr(at, step));
            inputs += out.inputs;
            for (auto& l : Harness::lines(out)) got.push_back(l);
        }
        INFO("reads of " << step << " octets");
        CHECK(got == expected);
        CHECK(inputs == wholeInputs);
        CHECK(storedRaw(split, "bob@447.edu") == stored);
    }
}

TEST_CASE("HELP lists STARTTLS only where EHLO offers it", "[session][starttls][help]") {
    auto help = [](Harness& h, const std::string& line) {
        return Harness::lines(h.session->onBytes(line + "\r\n"));
    };
    auto has = [](const std::vector<std::string>& lines, const std::string& text) {
        return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != std::string::npos; });
    };
    Harness implicit;  // implicit TLS: the connection is in TLS from its first byte
    CHECK_FALSE(has(help(implicit, "HELP"), "STARTTLS"));
    CHECK(has(help(implicit, "HELP STARTTLS"), "not offered: this connection is already in TLS"));
    Harness starttls({}, nullptr, nullptr, TlsMode::StartTls);
    CHECK(has(help(starttls, "HELP"), "STARTTLS: start TLS"));
    Harness clear({}, nullptr, nullptr, TlsMode::Off);
    CHECK(has(help(clear, "HELP STARTTLS"), "not offered by this server (it runs with --tls off)"));
}
