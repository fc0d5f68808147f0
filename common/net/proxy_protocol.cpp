// The PROXY protocol header (proxy_protocol.h): the parser, the trusted balancers' addresses, and
// the one read from an accepted socket. Section numbers are those of HAProxy's doc/proxy-protocol.txt.
#include "proxy_protocol.h"

#include <Poco/Net/IPAddress.h>

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace maillab::proxy {
namespace {

// 2.2: the version 2 signature, chosen so that it cannot start any text protocol.
constexpr unsigned char kV2Signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr char kV1Prefix[] = "PROXY ";
constexpr size_t kV1PrefixBytes = sizeof kV1Prefix - 1;
constexpr size_t kV1MinBytes = 15;  // "PROXY UNKNOWN\r\n": no shorter line is a header

// 2.2: the 13th byte, version (high nibble, 2) and command (low nibble).
constexpr unsigned kCommandLocal = 0x0, kCommandProxy = 0x1;
// 2.2: the 14th byte, address family (high nibble) and transport (low nibble).
constexpr unsigned kFamilyUnspec = 0x0, kFamilyInet = 0x1, kFamilyInet6 = 0x2, kFamilyUnix = 0x3;
constexpr unsigned kTransportUnspec = 0x0, kTransportStream = 0x1;
constexpr size_t kInetBlockBytes = 12, kInet6BlockBytes = 36, kUnixBlockBytes = 216;

Result invalid(const std::string& why) {
    Result result;
    result.status = Status::Invalid;
    result.error = why;
    return result;
}

Result incomplete(size_t needed) {
    Result result;
    result.needed = needed;
    return result;
}

std::string addressText(int family, const unsigned char* bytes) {
    char text[INET6_ADDRSTRLEN] = {};
    inet_ntop(family, bytes, text, sizeof text);
    return text;
}

int portAt(const unsigned char* bytes) { return (bytes[0] << 8) | bytes[1]; }

Result parseV2(const unsigned char* bytes, size_t size, size_t maxBytes) {
    if (size < kV2FixedBytes) return incomplete(kV2FixedBytes);
    unsigned version = bytes[12] >> 4, command = bytes[12] & 0x0F;
    // 2.2: "the receiver must only accept this value" (2) and drop the connection on any other.
    if (version != 2) return invalid("PROXY v2 header with version " + std::to_string(version));
    if (command != kCommandLocal && command != kCommandProxy)
        return invalid("PROXY v2 header with unknown command " + std::to_string(command));
    size_t length = kV2FixedBytes + ((static_cast<size_t>(bytes[14]) << 8) | bytes[15]);
    if (length > maxBytes)
        return invalid("PROXY v2 header of " + std::to_string(length) + " bytes, over proxy.maxHeaderBytes (" +
                       std::to_string(maxBytes) + ")");
    if (size < length) return incomplete(length);

    Result result;
    result.status = Status::Complete;
    Header& header = result.header;
    header.version = 2;
    header.length = length;
    // 2.2: LOCAL: the balancer speaks for itself (health checks); the address block, whatever it
    // holds, is skipped and the connection's own endpoints are used.
    if (command == kCommandLocal) {
        header.local = true;
        return result;
    }
    unsigned family = bytes[13] >> 4, transport = bytes[13] & 0x0F;
    const unsigned char* block = bytes + kV2FixedBytes;
    size_t blockBytes = length - kV2FixedBytes;
    // 2.2: UNSPEC (unknown protocol): accepted, with the real connection endpoints.
    if (family == kFamilyUnspec) return result;
    if (transport != kTransportStream && !(family == kFamilyUnix && transport == kTransportUnspec))
        return invalid("PROXY v2 header for a transport other than TCP (" + std::to_string(transport) + ")");
    // Whatever follows the address block is TLVs (2.2.x): skipped, all of them (the length covers them).
    if (family == kFamilyInet || family == kFamilyInet6) {
        // 2.2: source address, destination address, source port, destination port (network order).
        bool v6 = family == kFamilyInet6;
        size_t addressBytes = v6 ? 16 : 4;
        if (blockBytes < (v6 ? kInet6BlockBytes : kInetBlockBytes))
            return invalid(std::string("PROXY v2 ") + (v6 ? "TCP6" : "TCP4") + " header shorter than its addresses");
        int af = v6 ? AF_INET6 : AF_INET;
        header.sourceAddress = addressText(af, block);
        header.destinationAddress = addressText(af, block + addressBytes);
        header.sourcePort = portAt(block + 2 * addressBytes);
        header.destinationPort = portAt(block + 2 * addressBytes + 2);
        header.hasAddresses = true;
        return result;
    }
    if (family == kFamilyUnix) {
        // A client on a unix socket has no address to limit or record: the connection's own stands.
        if (blockBytes < kUnixBlockBytes) return invalid("PROXY v2 UNIX header shorter than its addresses");
        return result;
    }
    return invalid("PROXY v2 header with unknown address family " + std::to_string(family));
}

bool parsePort(const std::string& text, int& port) {
    // 2.1: a port is 1 to 5 digits, no leading zero, at most 65535.
    if (text.empty() || text.size() > 5 || text.find_first_not_of("0123456789") != std::string::npos ||
        (text.size() > 1 && text[0] == '0'))
        return false;
    port = std::stoi(text);
    return port <= 65535;
}

Result parseV1(const char* data, size_t size) {
    const char* end = static_cast<const char*>(std::memchr(data, '\n', std::min(size, kV1MaxBytes)));
    if (!end) {
        // 2.1: the line, CRLF included, is at most 107 bytes.
        if (size >= kV1MaxBytes) return invalid("PROXY v1 line longer than 107 bytes");
        return incomplete(std::max(size + 1, kV1MinBytes));
    }
    size_t length = static_cast<size_t>(end - data) + 1;
    if (length < 2 || data[length - 2] != '\r') return invalid("PROXY v1 line not ended by CRLF");
    std::string line(data + kV1PrefixBytes, length - 2 - kV1PrefixBytes);
    std::vector<std::string> fields;
    size_t start = 0;
    while (start <= line.size()) {
        size_t space = line.find(' ', start);
        if (space == std::string::npos) space = line.size();
        fields.push_back(line.substr(start, space - start));
        start = space + 1;
    }
    Result result;
    result.status = Status::Complete;
    result.header.version = 1;
    result.header.length = length;
    // 2.1: UNKNOWN: the rest of the line is ignored and the connection's own endpoints are used.
    if (!fields.empty() && fields[0] == "UNKNOWN") return result;
    if (fields.size() != 5 || (fields[0] != "TCP4" && fields[0] != "TCP6"))
        return invalid("PROXY v1 line is not \"PROXY TCP4|TCP6 SRC DST SPORT DPORT\"");
    int family = fields[0] == "TCP4" ? AF_INET : AF_INET6;
    unsigned char bytes[16];
    Header& header = result.header;
    if (inet_pton(family, fields[1].c_str(), bytes) != 1 || inet_pton(family, fields[2].c_str(), bytes) != 1 ||
        !parsePort(fields[3], header.sourcePort) || !parsePort(fields[4], header.destinationPort))
        return invalid("PROXY v1 line with a bad address or port");
    inet_pton(family, fields[1].c_str(), bytes);
    header.sourceAddress = addressText(family, bytes);
    header.destinationAddress = fields[2];
    header.hasAddresses = true;
    return result;
}

}  // namespace

Result parse(const char* data, size_t size, size_t maxBytes) {
    if (size == 0) return incomplete(1);  // the first byte tells the versions apart ('\r' or 'P')
    const auto* bytes = reinterpret_cast<const unsigned char*>(data);
    size_t seen = std::min(size, sizeof kV2Signature);
    if (std::memcmp(bytes, kV2Signature, seen) == 0) {
        if (size < sizeof kV2Signature) return incomplete(kV2FixedBytes);
        return parseV2(bytes, size, maxBytes);
    }
    seen = std::min(size, kV1PrefixBytes);
    if (std::memcmp(data, kV1Prefix, seen) == 0) {
        if (size < kV1PrefixBytes) return incomplete(kV1MinBytes);
        return parseV1(data, size);
    }
    return invalid("no PROXY protocol header (the balancer must send one: send-proxy-v2)");
}

bool TrustedPeers::toBytes(const std::string& address, Block& block) {
    if (inet_pton(AF_INET, address.c_str(), block.bytes) == 1) {
        block.v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, address.c_str(), block.bytes) != 1) return false;
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (std::memcmp(block.bytes, mapped, sizeof mapped) == 0) {  // ::ffff:a.b.c.d is a.b.c.d
        std::memmove(block.bytes, block.bytes + 12, 4);
        block.v6 = false;
        return true;
    }
    block.v6 = true;
    return true;
}

TrustedPeers TrustedPeers::parse(const std::string& list) {
    TrustedPeers peers;
    size_t start = 0;
    while (start < list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        std::string entry = list.substr(start, comma - start);
        start = comma + 1;
        size_t first = entry.find_first_not_of(" \t"), last = entry.find_last_not_of(" \t");
        if (first == std::string::npos) continue;
        entry = entry.substr(first, last - first + 1);
        Block block;
        std::string address = entry.substr(0, entry.find('/'));
        bool good = toBytes(address, block);
        int bits = block.v6 ? 128 : 32;
        block.prefix = bits;
        if (good && entry.find('/') != std::string::npos) {
            std::string prefix = entry.substr(entry.find('/') + 1);
            good = !prefix.empty() && prefix.size() <= 3 && prefix.find_first_not_of("0123456789") == std::string::npos &&
                   std::stoi(prefix) <= bits;
            if (good) block.prefix = std::stoi(prefix);
        }
        if (!good)
            throw std::invalid_argument("proxy.trustedAddresses: \"" + entry +
                                        "\" is not an address or a CIDR block (e.g. 198.18.0.2 or 10.1.0.0/16)");
        peers.blocks_.push_back(block);
    }
    return peers;
}

bool TrustedPeers::contains(const std::string& address) const {
    Block peer;
    if (!toBytes(address, peer)) return false;
    for (const Block& block : blocks_) {
        if (block.v6 != peer.v6) continue;
        int whole = block.prefix / 8, rest = block.prefix % 8;
        if (std::memcmp(block.bytes, peer.bytes, static_cast<size_t>(whole)) != 0) continue;
        unsigned char mask = static_cast<unsigned char>(0xFF << (8 - rest));
        if (rest && ((block.bytes[whole] ^ peer.bytes[whole]) & mask)) continue;
        return true;
    }
    return false;
}

Peer readProxyHeader(int fd, const Poco::Net::SocketAddress& socketPeer, const Settings& settings) {
    Peer peer;
    peer.host = socketPeer.host().toString();
    peer.address = socketPeer.toString();
    if (settings.trusted.empty() || !settings.trusted.contains(peer.host)) return peer;  // direct: nothing read

    std::string bytes;
    using Clock = std::chrono::steady_clock;
    Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(settings.timeoutMs);
    for (;;) {
        Result result = parse(bytes.data(), bytes.size(), settings.maxBytes);
        if (result.status == Status::Invalid) {
            peer.ok = false;
            peer.error = result.error;
            return peer;
        }
        if (result.status == Status::Complete) {
            const Header& header = result.header;
            if (header.hasAddresses) {
                peer.via = peer.address;
                peer.host = header.sourceAddress;
                peer.address = Poco::Net::SocketAddress(Poco::Net::IPAddress(header.sourceAddress),
                                                        static_cast<Poco::UInt16>(header.sourcePort))
                                   .toString();
            }
            return peer;
        }
        size_t needed = std::max(result.needed, bytes.size() + 1);
        // Exactly what the header still needs, never more: the bytes after it are the client's TLS.
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        pollfd poller{fd, POLLIN, 0};
        int ready = left > 0 ? ::poll(&poller, 1, static_cast<int>(left)) : 0;
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            peer.ok = false;
            peer.error = "no whole PROXY header within proxy.headerTimeoutMs (" + std::to_string(settings.timeoutMs) +
                         " ms; " + std::to_string(bytes.size()) + " bytes came)";
            return peer;
        }
        char buffer[512];
        size_t want = std::min(needed - bytes.size(), sizeof buffer);
        ssize_t got = ::recv(fd, buffer, want, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (got <= 0) {
            peer.ok = false;
            peer.error = got == 0 ? "closed before a whole PROXY header (" + std::to_string(bytes.size()) + " bytes)"
                                  : std::string("reading the PROXY header: ") + std::strerror(errno);
            return peer;
        }
        bytes.append(buffer, static_cast<size_t>(got));
    }
}

}  // namespace maillab::proxy
