// How the SMTP submission server words what the connection gate (common/net/guarded_connection.h)
// says for it: the 421 refusal past the connection limits and the clear-text 421 on the
// implicit-TLS port. Socket-free, so the words are unit-tested.
#pragma once
#include "../common/net/guarded_connection.h"

#include <string>

namespace maillab::smtp {

// RFC 5321 3.8: 421 when the service cannot take the connection; `plaintextHintMs` of silence on
// the implicit-TLS port before the clear-text hint (sender.timeout.plaintextHintMs).
GuardedProtocol guardedProtocol(const std::string& hostname, int plaintextHintMs);

}  // namespace maillab::smtp
