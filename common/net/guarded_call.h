// The event core's exception barrier, shared by the servers on it (the sender's SMTP, the retriever's
// POP3): a call the loop makes into a connection, or a worker's job for one, that throws (bad_alloc,
// or a failure its session did not foresee) ends only that connection in the protocol's own words,
// never the loop thread, the worker or the process, and never leaves the connection paused for good.
#pragma once
#include <exception>
#include <string>

namespace maillab::net {

// Runs `call`; on an exception runs `failed(what)`. `failed` answers the client and closes; a throw out
// of it is the caller's to contain (the loop's own barrier closes the connection).
template <typename Call, typename Failed>
void guardedCall(Call&& call, Failed&& failed) {
    try {
        call();
    } catch (const std::exception& e) {
        failed(std::string(e.what()));
    } catch (...) {
        failed(std::string("unknown exception"));
    }
}

}  // namespace maillab::net
