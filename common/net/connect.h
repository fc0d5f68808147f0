// How both lab clients reach a server and explain failing to: one connect routine that tries every
// address a host name resolves to, in the order the resolver gives (localhost may be ::1 first), and
// one translation of every network, TLS and protocol failure into a sentence that names the cause
// and the fix, with a documented exit code.
#pragma once
#include <Poco/Net/Context.h>
#include <Poco/Net/StreamSocket.h>
#include <Poco/Timespan.h>

#include <exception>
#include <memory>
#include <stdexcept>
#include <string>

namespace maillab {

// Exit codes shared by senderclient and retrieverclient (documented in README and --help).
enum ClientExit {
    kExitOk = 0,          // done
    kExitRefused = 1,     // the server answered and refused (a 4xx/5xx reply, an HTTP error)
    kExitUsage = 2,       // bad options or input
    kExitConnect = 3,     // no server reached: refused, unreachable, unknown host, timed out
    kExitTls = 4,         // TLS failed: certificate, host name, or a --tls mode the server does not speak
    kExitProtocol = 5,    // the server is not what was expected, or went away mid-session
};

// What a client was trying to reach, for messages that name the fix.
struct Target {
    std::string host;
    int port = 0;
    std::string serverName;  // the name the certificate must carry
    std::string service;     // "smtp" or "http"
    std::string tlsMode;     // "implicit", "starttls" or "off"
    std::string caFile;
};

// A failure already put into words: `what()` is one line naming the cause and the fix.
class ClientError : public std::runtime_error {
public:
    ClientError(ClientExit code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ClientExit code() const { return code_; }

private:
    ClientExit code_;
};

// Connects to the first address of `host` that accepts, trying each in turn; every attempt gets the
// whole `timeout`, the sum is bounded by the number of addresses. Throws ClientError (kExitConnect)
// naming every address tried.
Poco::Net::StreamSocket connectToServer(const Target& target, Poco::Timespan timeout);

// The client side of TLS on a connected socket: handshake, certificate chain and host name check
// (VERIFY_STRICT), ALPN `alpn` offered so that a server of the other lab protocol refuses at once.
// Throws ClientError (kExitTls or kExitProtocol) with the explanation.
Poco::Net::StreamSocket startClientTls(Poco::Net::StreamSocket& plain, const Target& target,
                                       Poco::Net::Context::Ptr context, Poco::Timespan within);

// Ends a blocking exchange at a deadline whatever the library does with socket timeouts (Poco's
// handshake waits once in the socket and once more in poll, so a receive timeout can count twice):
// past the deadline the socket is shut down, the exchange fails, and expired() says why.
class Deadline {
public:
    Deadline(const Poco::Net::StreamSocket& socket, Poco::Timespan within);
    ~Deadline();
    bool expired() const;

private:
    struct State;
    std::shared_ptr<State> state_;
};

// Any exception met while talking to `target`, as a ClientError with its explanation.
ClientError explainFailure(const std::exception& error, const Target& target);

// The make target that starts the server a Target names ("make senderserver PORT=9000").
std::string startCommand(const Target& target);

}  // namespace maillab
