// libFuzzer target: bytes from a client drive a whole SMTP session (socket-free) through its one
// entry, onBytes (the session frames them: lines, DATA, BDAT chunks), over a real SQLite store. Finds crashes, sanitizer reports and broken
// invariants: every reply is a well-formed reply line, and no input ends in an abort.
#include "fuzz_world.h"

#include "../../sender/session.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

using namespace maillab;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static fuzzing::FuzzWorld world;
    smtp::SessionLimits limits;
    limits.maxMessageSize = 4096;
    smtp::SessionEnv env;
    env.hostname = "fuzz.447.edu";
    env.clock = [] { return int64_t{1795000000}; };
    env.newQueueId = [] { return std::string("FUZZ"); };
    env.log = [](const std::string&) {};
    // Some inputs run in STARTTLS mode, so the plaintext discard after STARTTLS is fuzzed too.
    if (size % 4 == 3) env.tlsMode = smtp::TlsMode::StartTls;
    smtp::Session session(*world.auth, *world.store, limits, env);
    session.start();
    // Split where the input says (its first byte), so framing across reads is fuzzed too.
    size_t split = size ? data[0] % (size + 1) : 0;
    const char* bytes = reinterpret_cast<const char*>(data);
    for (auto [from, count] : {std::pair<size_t, size_t>{0, split}, {split, size - split}}) {
        smtp::Output out = session.onBytes(bytes + from, count);
        for (const auto& reply : out.replies) {
            std::string wire = reply.wire();
            // Every reply: three digits, then ' ' or '-', and CRLF line ends (RFC 5321 4.2).
            if (wire.size() < 6 || wire.compare(wire.size() - 2, 2, "\r\n") != 0) std::abort();
            if (wire[0] < '2' || wire[0] > '5') std::abort();
        }
        if (out.close) break;
        if (out.startTls) session.onTlsStarted("TLSv1.3 fuzz");
    }
    return 0;
}
