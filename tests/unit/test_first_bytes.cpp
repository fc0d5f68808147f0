// What a client's first bytes on a TLS port say (classifyFirstBytes, peekFirstBytes): a TLS record,
// an HTTP request line, other clear text, or nothing; and that peeking leaves the bytes for OpenSSL.
#include "catch.hpp"

#include "../../common/net/tls.h"

#include <sys/socket.h>
#include <unistd.h>

using maillab::FirstBytes;
using maillab::classifyFirstBytes;

TEST_CASE("first bytes: a handshake record is TLS, a request line is HTTP, anything else is clear text", "[tls]") {
    CHECK(classifyFirstBytes(std::string("\x16\x03\x01", 3)) == FirstBytes::Tls);
    CHECK(classifyFirstBytes(std::string("\x16", 1)) == FirstBytes::Tls);
    CHECK(classifyFirstBytes("GET / HTTP/1.1\r\n") == FirstBytes::HttpRequest);
    CHECK(classifyFirstBytes("OPTIONS * HTTP/1.1\r\n") == FirstBytes::HttpRequest);
    CHECK(classifyFirstBytes("EHLO student\r\n") == FirstBytes::Plaintext);
    CHECK(classifyFirstBytes("get / HTTP/1.1\r\n") == FirstBytes::Plaintext);  // methods are case-sensitive
    CHECK(classifyFirstBytes(std::string("\x15\x03\x03", 3)) == FirstBytes::Plaintext);
    CHECK(classifyFirstBytes("") == FirstBytes::Silence);
    CHECK(maillab::mayBecomeHttpRequest("GE"));
    CHECK_FALSE(maillab::mayBecomeHttpRequest("EHLO"));
    CHECK_FALSE(maillab::mayBecomeHttpRequest("GET "));
}

TEST_CASE("peeking the first bytes leaves them to be read; silence and a close are told apart", "[tls]") {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
    std::string seen;
    CHECK(maillab::peekFirstBytes(pair[0], 20, seen) == FirstBytes::Silence);
    REQUIRE(::write(pair[1], "\x16\x03\x01", 3) == 3);
    CHECK(maillab::peekFirstBytes(pair[0], 1000, seen) == FirstBytes::Tls);
    char buf[8];
    CHECK(::read(pair[0], buf, sizeof buf) == 3);  // still there for OpenSSL
    ::close(pair[1]);
    CHECK(maillab::peekFirstBytes(pair[0], 1000, seen) == FirstBytes::Closed);
    ::close(pair[0]);
}
