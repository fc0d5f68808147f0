// libFuzzer target: the PROXY protocol parser (common/net/proxy_protocol.h) on arbitrary bytes, as a
// balancer (or anyone who can reach a server from a trusted address) might send them, and the
// trusted-balancer list on arbitrary text. Checks the parser's promises: a complete header is never
// longer than the bytes given nor than the limit; an incomplete one asks for more than it was given;
// and a complete header's every shorter prefix is not complete (the server reads to the header's last
// byte and no further, so the verdict must not change as bytes arrive).
#include "../../common/net/proxy_protocol.h"

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

using namespace maillab::proxy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const char* bytes = reinterpret_cast<const char*>(data);
    const size_t maxBytes = 256 + (size > 0 ? data[0] : 0);  // vary the limit with the input
    Result r = parse(bytes, size, maxBytes);
    if (r.status == Status::Complete) {
        if (r.header.length == 0 || r.header.length > size || r.header.length > maxBytes) std::abort();
        if (r.header.version != 1 && r.header.version != 2) std::abort();
        for (size_t k = 0; k < r.header.length; ++k) {
            if (parse(bytes, k, maxBytes).status == Status::Complete) std::abort();
        }
    } else if (r.status == Status::Incomplete) {
        if (r.needed <= size) std::abort();
    } else if (r.error.empty()) {
        std::abort();  // an Invalid verdict always says why (it goes into the log line)
    }
    try {
        std::string text(bytes, size);
        TrustedPeers peers = TrustedPeers::parse(text);
        (void)peers.contains("198.18.0.2");
        (void)peers.contains("::ffff:198.18.0.2");
        (void)peers.contains(text);
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
