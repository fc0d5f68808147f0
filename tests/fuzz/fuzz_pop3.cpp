// libFuzzer target: bytes from a client, in pieces the input chooses, given to the session's one entry,
// onBytes (the session frames them, as for the server), drive a whole POP3 session (socket-free,
// retriever/pop3_session.h) over a real SQLite store holding a few messages, half the runs on the
// plaintext port with STLS. Finds crashes, sanitizer reports and broken invariants: every reply
// starts "+OK", "-ERR" or "+ ", ends in CRLF, and a multi-line block ends with ".\r\n"; nothing
// follows a close; after STLS the rest of those bytes is discarded, not answered.
#include "fuzz_world.h"

#include "../../retriever/pop3_session.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

using namespace maillab;

namespace {
struct World : fuzzing::FuzzWorld {
    // Bob's maildrop back to three messages (a run's DELE and QUIT may have removed some).
    void refill() {
        while (store->mailboxStats("bob@447.edu").count < 3)
            store->deliver(toBob("FUZZ", "fuzz", "Subject: fuzz\r\n\r\n.line with a dot\r\n..\r\nlast line without an end"));
    }
};

bool wellFormed(const pop3::Reply& reply) {
    const std::string& s = reply.status;
    if (s.rfind("+OK", 0) != 0 && s.rfind("-ERR", 0) != 0 && s != "+ ") return false;
    if (s.find('\r') != std::string::npos || s.find('\n') != std::string::npos) return false;
    const std::string& b = reply.block;
    return b.empty() || (b.size() >= 3 && b.compare(b.size() - 3, 3, ".\r\n") == 0 &&
                         (b.size() == 3 || (b.size() >= 5 && b.compare(b.size() - 5, 2, "\r\n") == 0)));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static World world;
    static pop3::MaildropLocks locks;
    world.refill();
    pop3::Limits limits;
    limits.maxLineLength = 256;
    pop3::Env env;
    env.hostname = "fuzz.447.edu";
    bool plaintextPort = size > 0 && (data[0] & 1);
    env.tlsActive = !plaintextPort;
    env.stlsOffered = plaintextPort;
    env.locks = &locks;
    pop3::Session session(*world.auth, *world.store, limits, env);
    session.start();
    // The first byte (still part of the input) also says how it arrives: in reads of 1 to 16
    // octets, or all at once, so framing across reads is fuzzed too.
    size_t piece = size > 0 ? (data[0] >> 1) % 17 : 0;
    const char* bytes = reinterpret_cast<const char*>(data);
    for (size_t from = 0; from < size;) {
        size_t count = piece == 0 ? size - from : std::min(piece, size - from);
        pop3::Output out = session.onBytes(bytes + from, count);
        from += count;
        for (;;) {
            for (const auto& reply : out.replies)
                if (!wellFormed(reply)) std::abort();
            if (out.discardedOctets && !out.startTls) std::abort();  // only STLS drops what follows it
            if (!out.more) break;
            out = session.onBytes(nullptr, 0);
        }
        if (out.startTls) session.onTlsStarted();
        if (out.close) {
            if (!session.onBytes("NOOP\r\n").replies.empty()) std::abort();  // nothing is read after a close
            break;
        }
    }
    return 0;
}
