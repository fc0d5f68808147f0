// SMTP syntax: commands, paths, mailboxes, dot-stuffing, headers, and the line reader.
#include "../../common/net/linereader.h"
#include "../../sender/smtp_client.h"
#include "../../sender/smtp_syntax.h"
#include "../../common/net/rfc5322.h"

#include "catch.hpp"

using namespace maillab;
using namespace maillab::smtp;

TEST_CASE("commands split into an upper-case verb and the rest", "[syntax]") {
    auto c = parseCommand("mail FROM:<a@b.c>");
    CHECK(c.verb == "MAIL");
    CHECK(c.argument == "FROM:<a@b.c>");
    CHECK(parseCommand("QUIT").verb == "QUIT");
    CHECK(parseCommand("QUIT").argument.empty());
}

TEST_CASE("MAIL and RCPT paths, strict and tolerant forms", "[syntax]") {
    auto p = parsePath("FROM:<ana@447.edu> SIZE=100 BODY=8BITMIME", "FROM");
    REQUIRE(p);
    CHECK(p->address == "ana@447.edu");
    CHECK(p->params.at("SIZE") == "100");
    CHECK(p->params.at("BODY") == "8BITMIME");

    auto tolerant = parsePath("from: ana@447.edu", "FROM");  // Postfix-style tolerance
    REQUIRE(tolerant);
    CHECK(tolerant->address == "ana@447.edu");

    auto spaced = parsePath("TO: <bob@447.edu>", "TO");
    REQUIRE(spaced);
    CHECK(spaced->address == "bob@447.edu");

    auto nullPath = parsePath("FROM:<>", "FROM");
    REQUIRE(nullPath);
    CHECK(nullPath->address.empty());

    auto route = parsePath("TO:<@relay.example:bob@447.edu>", "TO");
    REQUIRE(route);
    CHECK(route->address == "bob@447.edu");

    CHECK_FALSE(parsePath("FROM ana@447.edu", "FROM"));
    CHECK_FALSE(parsePath("TO:<bob@447.edu", "TO"));
    CHECK_FALSE(parsePath("FROM:", "FROM"));
    CHECK_FALSE(parsePath("TO:<bob@447.edu>", "FROM"));
    CHECK_FALSE(parsePath("FROM:<a@b>junk", "FROM"));
}

TEST_CASE("mailbox syntax", "[syntax]") {
    CHECK(isValidMailbox("ana@447.edu"));
    CHECK(isValidMailbox("first.last+tag@447.edu"));
    CHECK_FALSE(isValidMailbox("ana"));
    CHECK_FALSE(isValidMailbox("@447.edu"));
    CHECK_FALSE(isValidMailbox("ana@"));
    CHECK_FALSE(isValidMailbox("a..b@447.edu"));
    CHECK_FALSE(isValidMailbox(".a@447.edu"));
    CHECK_FALSE(isValidMailbox("a b@447.edu"));
    CHECK_FALSE(isValidMailbox("ana@[127.0.0.1]"));
    CHECK_FALSE(isValidMailbox(std::string(65, 'a') + "@447.edu"));
}

TEST_CASE("dot-stuffing both ways (RFC 5321 4.5.2)", "[syntax][data]") {
    CHECK(dotStuff("a\n.b\n..c\n") == "a\r\n..b\r\n...c\r\n");
    CHECK(dotStuff("no newline") == "no newline\r\n");
    CHECK(dotStuff(".") == "..\r\n");
    CHECK(dotStuff("") == "");
}

TEST_CASE("header summary unfolds and stops at the body", "[syntax][headers]") {
    std::string msg = "From: Ana <ana@447.edu>\r\nTo: bob@447.edu\r\nSubject: a long\r\n  folded subject\r\n"
                      "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nSubject: not a header\r\n";
    auto h = summarizeHeaders(msg);
    CHECK(h.from == "Ana <ana@447.edu>");
    CHECK(h.to == "bob@447.edu");
    CHECK(h.subject == "a long folded subject");
    CHECK(h.hasDate);
    CHECK_FALSE(h.hasMessageId);
    auto body = summarizeHeaders("just a body line\r\n");
    CHECK(body.subject.empty());
}

TEST_CASE("RFC 5322 dates", "[syntax]") {
    CHECK(rfc5322::dateTime(0) == "Thu, 01 Jan 1970 00:00:00 +0000");
    CHECK(rfc5322::dateTime(1795000000) == "Wed, 18 Nov 2026 11:06:40 +0000");  // python email.utils.formatdate
}

TEST_CASE("line reader: CRLF, bare LF, split input, and the length limit", "[linereader]") {
    LineReader reader(10);  // at most 8 characters plus CRLF
    LineReader::Event e;
    reader.feed("EHLO a\r\nNO", 10);
    REQUIRE(reader.next(e));
    CHECK(e.line == "EHLO a");
    CHECK_FALSE(reader.next(e));
    reader.feed("OP\n", 3);
    REQUIRE(reader.next(e));
    CHECK(e.line == "NOOP");

    reader.feed("12345678\r\n", 10);  // exactly the limit
    REQUIRE(reader.next(e));
    CHECK_FALSE(e.tooLong);
    reader.feed("123456789\r\nNEXT\r\n", 17);  // one over
    REQUIRE(reader.next(e));
    CHECK(e.tooLong);
    REQUIRE(reader.next(e));
    CHECK(e.line == "NEXT");

    // A long line arriving in pieces is reported once, and the reader recovers.
    reader.feed("aaaaaaaaaaaaaaa", 15);
    reader.feed("bbbbbbbbbbbbbbb", 15);
    CHECK_FALSE(reader.next(e));
    reader.feed("\r\nQUIT\r\n", 8);
    REQUIRE(reader.next(e));
    CHECK(e.tooLong);
    REQUIRE(reader.next(e));
    CHECK(e.line == "QUIT");
}

TEST_CASE("client parses multi-line replies", "[client]") {
    ServerReply r;
    CHECK_FALSE(addReplyLine(r, "250-localhost Hello"));
    CHECK_FALSE(addReplyLine(r, "250-SIZE 100"));
    CHECK(addReplyLine(r, "250 HELP"));
    CHECK(r.code == 250);
    CHECK(r.lines.size() == 3);
    ServerReply bad;
    CHECK_THROWS(addReplyLine(bad, "hello"));
    ServerReply reg;
    addReplyLine(reg, "235 2.7.0 Authentication successful; registered a@447.edu with password: 01234447 (shown once)");
    CHECK(registeredPassword(reg) == "01234447");
    CHECK(plainCredentials("u", "p") == "AHUAcA==");
}
