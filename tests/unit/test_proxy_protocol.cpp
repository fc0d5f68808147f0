// The PROXY protocol (common/net/proxy_protocol.h): the parser on version 2 (TCP4, TCP6, LOCAL, UNSPEC,
// TLVs, truncated, wrong signature, oversized) and version 1 headers; the trusted balancers'
// addresses and blocks; and the read from a socket, which takes exactly the header's bytes from a
// trusted peer and nothing from any other.
#include "catch.hpp"

#include "../../common/net/proxy_protocol.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>

using namespace maillab::proxy;

namespace {

const std::string kSignature("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

// A version 2 header: command byte (0x20 LOCAL, 0x21 PROXY), family byte, then the body.
std::string v2(unsigned char command, unsigned char family, const std::string& body) {
    std::string header = kSignature;
    header += static_cast<char>(command);
    header += static_cast<char>(family);
    header += static_cast<char>((body.size() >> 8) & 0xFF);
    header += static_cast<char>(body.size() & 0xFF);
    return header + body;
}

std::string tcp4Body() {
    // 198.18.0.11:40112 -> 198.18.0.3:465
    return std::string("\xC6\x12\x00\x0B" "\xC6\x12\x00\x03" "\x9C\xB0" "\x01\xD1", 12);
}

Result parseAll(const std::string& bytes, size_t maxBytes = 4096) { return parse(bytes.data(), bytes.size(), maxBytes); }

}  // namespace

TEST_CASE("PROXY v2 TCP4: the client's address and port, and the header's exact length", "[proxy]") {
    std::string header = v2(0x21, 0x11, tcp4Body());
    Result result = parseAll(header + "\x16\x03\x01 the ClientHello");
    REQUIRE(result.status == Status::Complete);
    CHECK(result.header.version == 2);
    CHECK(result.header.hasAddresses);
    CHECK_FALSE(result.header.local);
    CHECK(result.header.sourceAddress == "198.18.0.11");
    CHECK(result.header.sourcePort == 40112);
    CHECK(result.header.destinationAddress == "198.18.0.3");
    CHECK(result.header.destinationPort == 465);
    CHECK(result.header.length == 28);
}

TEST_CASE("PROXY v2 TCP6 and TLVs: the TLVs are skipped, the length covers them", "[proxy]") {
    std::string body(36, '\0');
    body[0] = '\x20', body[1] = '\x01', body[2] = '\x0d', body[3] = '\xb8', body[15] = '\x07';  // 2001:db8::7
    body[16] = '\x20', body[17] = '\x01', body[18] = '\x0d', body[19] = '\xb8', body[31] = '\x01';
    body[32] = '\x01', body[33] = '\x02', body[34] = '\x00', body[35] = '\x6e';  // 258 -> 110
    std::string tlvs("\x04\x00\x03" "abc" "\x05\x00\x02" "id", 11);  // a NOOP and a UNIQUE_ID
    Result result = parseAll(v2(0x21, 0x21, body + tlvs) + "after");
    REQUIRE(result.status == Status::Complete);
    CHECK(result.header.sourceAddress == "2001:db8::7");
    CHECK(result.header.sourcePort == 258);
    CHECK(result.header.destinationPort == 110);
    CHECK(result.header.length == 16 + 36 + 11);
}

TEST_CASE("PROXY v2 LOCAL (a health check) and UNSPEC: accepted, no address replaces the socket's", "[proxy]") {
    Result local = parseAll(v2(0x20, 0x00, ""));
    REQUIRE(local.status == Status::Complete);
    CHECK(local.header.local);
    CHECK_FALSE(local.header.hasAddresses);
    CHECK(local.header.length == 16);
    // LOCAL with an address block (some balancers send one): skipped all the same.
    Result localWithBlock = parseAll(v2(0x20, 0x11, tcp4Body()));
    REQUIRE(localWithBlock.status == Status::Complete);
    CHECK_FALSE(localWithBlock.header.hasAddresses);
    CHECK(localWithBlock.header.length == 28);
    Result unspec = parseAll(v2(0x21, 0x00, ""));
    REQUIRE(unspec.status == Status::Complete);
    CHECK_FALSE(unspec.header.hasAddresses);
}

TEST_CASE("PROXY v2 truncated: Incomplete, saying how many bytes are needed in all", "[proxy]") {
    std::string header = v2(0x21, 0x11, tcp4Body());
    CHECK(parseAll("").needed == 1);
    for (size_t size = 1; size < 16; ++size) {
        Result result = parseAll(header.substr(0, size));
        CHECK(result.status == Status::Incomplete);
        CHECK(result.needed == 16);
    }
    Result partial = parseAll(header.substr(0, 20));
    CHECK(partial.status == Status::Incomplete);
    CHECK(partial.needed == 28);
}

TEST_CASE("PROXY v2 refused: wrong signature, version, command, transport, short block, oversized", "[proxy]") {
    std::string wrong = v2(0x21, 0x11, tcp4Body());
    wrong[7] = 'X';
    CHECK(parseAll(wrong).status == Status::Invalid);
    CHECK(parseAll("\x16\x03\x01\x02\x00").status == Status::Invalid);  // a ClientHello where a header must be
    CHECK(parseAll("EHLO student\r\n").status == Status::Invalid);
    CHECK(parseAll(v2(0x11, 0x11, tcp4Body())).status == Status::Invalid);  // version 1 in a v2 header
    CHECK(parseAll(v2(0x22, 0x11, tcp4Body())).status == Status::Invalid);  // command 2
    CHECK(parseAll(v2(0x21, 0x12, tcp4Body())).status == Status::Invalid);  // UDP
    CHECK(parseAll(v2(0x21, 0x11, tcp4Body().substr(0, 8))).status == Status::Invalid);
    CHECK(parseAll(v2(0x21, 0x21, tcp4Body())).status == Status::Invalid);  // TCP6 with a TCP4 block
    // A length over the limit is refused from the fixed part alone, before waiting for the rest.
    std::string oversized = kSignature + std::string("\x21\x11\xFF\xFF", 4);
    Result result = parseAll(oversized, 4096);
    CHECK(result.status == Status::Invalid);
    CHECK(result.error.find("proxy.maxHeaderBytes") != std::string::npos);
    CHECK(parseAll(v2(0x21, 0x11, tcp4Body() + std::string(100, '\0')), 64).status == Status::Invalid);
}

TEST_CASE("PROXY v1: TCP4, TCP6, UNKNOWN; a line cut, too long or malformed", "[proxy]") {
    Result tcp4 = parseAll("PROXY TCP4 198.18.0.11 198.18.0.3 40112 465\r\n\x16\x03");
    REQUIRE(tcp4.status == Status::Complete);
    CHECK(tcp4.header.version == 1);
    CHECK(tcp4.header.sourceAddress == "198.18.0.11");
    CHECK(tcp4.header.sourcePort == 40112);
    CHECK(tcp4.header.length == 45);
    Result tcp6 = parseAll("PROXY TCP6 2001:db8::7 2001:db8::1 258 110\r\n");
    REQUIRE(tcp6.status == Status::Complete);
    CHECK(tcp6.header.sourceAddress == "2001:db8::7");
    Result unknown = parseAll("PROXY UNKNOWN\r\n");
    REQUIRE(unknown.status == Status::Complete);
    CHECK_FALSE(unknown.header.hasAddresses);
    CHECK(unknown.header.length == 15);
    CHECK(parseAll("PRO").status == Status::Incomplete);
    CHECK(parseAll("PROXY TCP4 198.18").status == Status::Incomplete);
    CHECK(parseAll("PROXY " + std::string(120, 'x')).status == Status::Invalid);
    CHECK(parseAll("PROXY TCP4 198.18.0.11 198.18.0.3 40112 465\n").status == Status::Invalid);  // no CR
    CHECK(parseAll("PROXY TCP4 2001:db8::7 198.18.0.3 1 2\r\n").status == Status::Invalid);
    CHECK(parseAll("PROXY TCP4 198.18.0.11 198.18.0.3 040112 465\r\n").status == Status::Invalid);
    CHECK(parseAll("PROXY TCP4 198.18.0.11 198.18.0.3 70000 465\r\n").status == Status::Invalid);
    CHECK(parseAll("PROXY UDP4 198.18.0.11 198.18.0.3 1 2\r\n").status == Status::Invalid);
}

TEST_CASE("trusted balancers: addresses and CIDR blocks, IPv4-mapped peers, bad entries named", "[proxy]") {
    TrustedPeers none = TrustedPeers::parse("");
    CHECK(none.empty());
    CHECK_FALSE(none.contains("198.18.0.2"));
    TrustedPeers peers = TrustedPeers::parse(" 198.18.0.2 , 10.1.0.0/16,2001:db8::/32, 192.0.2.128/25");
    CHECK(peers.contains("198.18.0.2"));
    CHECK_FALSE(peers.contains("198.18.0.3"));
    CHECK(peers.contains("10.1.255.1"));
    CHECK_FALSE(peers.contains("10.2.0.1"));
    CHECK(peers.contains("::ffff:198.18.0.2"));
    CHECK(peers.contains("2001:db8:1::5"));
    CHECK_FALSE(peers.contains("2001:db9::5"));
    CHECK(peers.contains("192.0.2.200"));
    CHECK_FALSE(peers.contains("192.0.2.100"));
    CHECK_FALSE(peers.contains("not an address"));
    CHECK(TrustedPeers::parse("0.0.0.0/0").contains("203.0.113.9"));
    CHECK_THROWS_AS(TrustedPeers::parse("198.18.0.2, balancer.example"), std::invalid_argument);
    CHECK_THROWS_AS(TrustedPeers::parse("10.0.0.0/33"), std::invalid_argument);
    CHECK_THROWS_AS(TrustedPeers::parse("10.0.0.0/"), std::invalid_argument);
}

namespace {

struct SocketPair {
    int fds[2] = {-1, -1};
    SocketPair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0); }
    ~SocketPair() {
        for (int fd : fds)
            if (fd >= 0) ::close(fd);
    }
    void send(const std::string& bytes) { REQUIRE(::write(fds[1], bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())); }
    std::string rest() {
        ::shutdown(fds[1], SHUT_WR);
        std::string all;
        char buffer[256];
        ssize_t n;
        while ((n = ::read(fds[0], buffer, sizeof buffer)) > 0) all.append(buffer, static_cast<size_t>(n));
        return all;
    }
};

Settings trusting(const std::string& list, int timeoutMs = 2000) {
    Settings settings;
    settings.trusted = TrustedPeers::parse(list);
    settings.timeoutMs = timeoutMs;
    return settings;
}

const Poco::Net::SocketAddress kBalancer("198.18.0.2", 51000);

}  // namespace

TEST_CASE("reading a header from a trusted balancer takes exactly its bytes and names the client", "[proxy]") {
    for (const std::string& header :
         {v2(0x21, 0x11, tcp4Body()), std::string("PROXY TCP4 198.18.0.11 198.18.0.3 40112 465\r\n")}) {
        SocketPair pair;
        pair.send(header + "\x16\x03\x01 hello");
        Peer peer = readProxyHeader(pair.fds[0], kBalancer, trusting("198.18.0.0/24"));
        REQUIRE(peer.ok);
        CHECK(peer.host == "198.18.0.11");
        CHECK(peer.address == "198.18.0.11:40112");
        CHECK(peer.via == "198.18.0.2:51000");
        CHECK(peer.forLog() == "peer=198.18.0.11:40112 via=198.18.0.2:51000");
        CHECK(pair.rest() == "\x16\x03\x01 hello");  // the client's TLS is left for OpenSSL
    }
    SocketPair pair;  // LOCAL: the balancer's own connection, taken as it is
    pair.send(v2(0x20, 0x00, "") + "x");
    Peer local = readProxyHeader(pair.fds[0], kBalancer, trusting("198.18.0.2"));
    REQUIRE(local.ok);
    CHECK(local.host == "198.18.0.2");
    CHECK(local.via.empty());
    CHECK(pair.rest() == "x");
}

TEST_CASE("an untrusted peer's PROXY header is never read nor believed", "[proxy]") {
    SocketPair pair;
    std::string forged = v2(0x21, 0x11, tcp4Body());
    pair.send(forged);
    Peer peer = readProxyHeader(pair.fds[0], Poco::Net::SocketAddress("198.18.0.66", 40000), trusting("198.18.0.2"));
    REQUIRE(peer.ok);
    CHECK(peer.host == "198.18.0.66");
    CHECK(peer.via.empty());
    CHECK(pair.rest() == forged);
    SocketPair off;  // no trusted address at all: the PROXY protocol is off
    off.send(forged);
    CHECK(readProxyHeader(off.fds[0], kBalancer, Settings()).host == "198.18.0.2");
    CHECK(off.rest() == forged);
}

TEST_CASE("a trusted peer without a valid header in time is refused with the reason", "[proxy]") {
    SocketPair garbage;
    garbage.send("\x16\x03\x01\x02\x00 a ClientHello");
    Peer refused = readProxyHeader(garbage.fds[0], kBalancer, trusting("198.18.0.2"));
    CHECK_FALSE(refused.ok);
    CHECK(refused.error.find("no PROXY protocol header") != std::string::npos);

    SocketPair silent;
    silent.send(kSignature.substr(0, 5));  // the start of a header, then nothing
    auto start = std::chrono::steady_clock::now();
    Peer late = readProxyHeader(silent.fds[0], kBalancer, trusting("198.18.0.2", 200));
    auto waited = std::chrono::steady_clock::now() - start;
    CHECK_FALSE(late.ok);
    CHECK(late.error.find("proxy.headerTimeoutMs") != std::string::npos);
    CHECK(waited < std::chrono::seconds(2));

    SocketPair closed;
    closed.send(kSignature);
    ::shutdown(closed.fds[1], SHUT_WR);
    Peer cut = readProxyHeader(closed.fds[0], kBalancer, trusting("198.18.0.2"));
    CHECK_FALSE(cut.ok);
    CHECK(cut.error.find("closed") != std::string::npos);
}
