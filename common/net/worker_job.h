// A worker's job for one connection on the event core, shared by the servers on it (the sender's
// SMTP, the retriever's POP3): its result goes back to the connection's loop; an exception out of the
// work becomes the protocol's own error answer (421 4.3.0, -ERR [SYS/TEMP]); and when even that cannot
// be posted (out of memory) a bare close is tried, so that a connection paused for the job is never
// left waiting for an answer that never comes.
#pragma once
#include "event_loop.h"
#include "guarded_call.h"

#include <cstdint>
#include <memory>
#include <string>

namespace maillab::net {

// On a worker thread: `work()` (an Output), or on its exception `onError(what)`; then `deliver` posts
// the shared Output to the connection's loop.
template <typename Output, typename Work, typename OnError, typename Deliver>
void answerFromWorker(EventLoop& loop, uint64_t connectionId, Work&& work, OnError&& onError, Deliver&& deliver) {
    try {
        auto output = std::make_shared<Output>();
        guardedCall([&] { *output = work(); }, [&](const std::string& what) { *output = onError(what); });
        deliver(std::move(output));
    } catch (...) {
        try {
            loop.post(connectionId, [](Connection& connection) { connection.close("local error"); });
        } catch (...) {
            // Nothing more can be done from here; the client's own close still ends it (EPOLLHUP).
        }
    }
}

}  // namespace maillab::net
