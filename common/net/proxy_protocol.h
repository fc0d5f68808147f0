// The PROXY protocol (HAProxy's doc/proxy-protocol.txt, versions 1 and 2): what a TCP balancer in
// front of several server instances sends first on each connection it opens to one of them, naming
// the client it relays. Without it every connection would come from the balancer's address, and the
// per-address limits, the guess budget and provenance would see one "student" for the whole class.
//
// Two parts: a socket-free parser (parse(): bytes in, a verdict out; unit-tested) and the one
// function the servers call on an accepted socket before anything else (readProxyHeader()): from a
// trusted balancer it reads exactly the header's bytes under a deadline; from anyone else it reads
// nothing (a header from an untrusted peer is never believed: it is just bytes of a bad handshake).
#pragma once
#include <Poco/Net/SocketAddress.h>

#include <cstddef>
#include <string>
#include <vector>

namespace maillab::proxy {

constexpr size_t kV2FixedBytes = 16;  // 2.2: signature (12), version and command, family, length (2)
constexpr size_t kV1MaxBytes = 107;   // 2.1: the longest version 1 line, CRLF included

enum class Status { Incomplete, Complete, Invalid };

struct Header {
    int version = 0;              // 1 or 2
    bool local = false;           // v2 LOCAL: the balancer's own connection (a health check)
    bool hasAddresses = false;    // false: LOCAL, v2 UNSPEC/UNIX, v1 UNKNOWN: the socket's own endpoints stand
    std::string sourceAddress;    // the client the balancer relays ("198.18.0.11", "2001:db8::1")
    int sourcePort = 0;
    std::string destinationAddress;
    int destinationPort = 0;
    size_t length = 0;            // the header's bytes in all (TLVs included): exactly what to consume
};

struct Result {
    Status status = Status::Incomplete;
    size_t needed = 0;  // Incomplete: the bytes needed in all before a verdict can be given (a lower bound)
    Header header;
    std::string error;  // Invalid: what is wrong, for the log line
};

// Looks at the first `size` bytes a trusted peer sent. Incomplete says how many are needed in all;
// Complete gives the header and its length (the bytes after it are the client's own, e.g. its TLS
// ClientHello); Invalid says why (no signature, a bad field, a header over `maxBytes`).
Result parse(const char* data, size_t size, size_t maxBytes);

// The balancers whose PROXY headers are believed: "198.18.0.2, 10.1.0.0/16, ::1" (addresses and CIDR
// blocks, IPv4 or IPv6; an IPv4-mapped IPv6 peer matches its IPv4 form). Empty: the PROXY protocol is off.
class TrustedPeers {
public:
    TrustedPeers() = default;
    // Throws std::invalid_argument naming the entry that is not an address or a CIDR block.
    static TrustedPeers parse(const std::string& list);
    bool empty() const { return blocks_.empty(); }
    bool contains(const std::string& address) const;

private:
    struct Block {
        bool v6 = false;
        unsigned char bytes[16] = {};
        int prefix = 0;
    };
    static bool toBytes(const std::string& address, Block& block);  // false: not an address
    std::vector<Block> blocks_;
};

struct Settings {
    TrustedPeers trusted;
    int timeoutMs = 3000;       // the whole header must arrive within this
    size_t maxBytes = 4096;     // a longer header (TLVs and all) is refused
};

// Who a connection is for, once its PROXY header (when it owes one) has been read.
struct Peer {
    bool ok = true;            // false: a trusted peer sent no valid header in time; close (error says why)
    std::string host;          // the address to use everywhere: the client's from the header, else the socket's
    std::string address;       // host:port ("198.18.0.11:40112", "[::1]:40112"), for logs and provenance
    std::string via;           // the balancer's host:port when the header named a client, else empty
    std::string error;
    // "peer=198.18.0.11:40112 via=198.18.0.2:51000", or "peer=..." alone for a direct connection.
    std::string forLog() const { return "peer=" + address + (via.empty() ? "" : " via=" + via); }
};

// On an accepted socket, before the TLS handshake: a peer in settings.trusted must send a header
// within settings.timeoutMs, read here to its last byte and no further (what follows is the
// client's TLS, read by OpenSSL); any other peer is taken as it is and nothing is read.
Peer readProxyHeader(int fd, const Poco::Net::SocketAddress& socketPeer, const Settings& settings);

}  // namespace maillab::proxy
