// How the retriever's HTTPS side words what the connection gate (common/net/guarded_connection.h)
// says for it: 503 past the connection limits, a clear-text 400 naming the https:// URL to plain
// HTTP on the HTTPS port. Socket-free, so the words are unit-tested.
#pragma once
#include "../common/net/guarded_connection.h"

#include <string>

namespace maillab::http {

GuardedProtocol guardedProtocol();

// The clear-text 400 for `request` (the first bytes of a plain HTTP request): its Host (when that is a
// plain host[:port]) or localhost, with `port`, in the https:// URL to use instead.
std::string plainHttpAnswer(const std::string& request, int port);

}  // namespace maillab::http
