// The client side of the lab's SMTP: connects over TLS 1.3 with certificate and hostname checks,
// sends commands, reads (multi-line) replies, and mirrors the server's session state so that the
// interactive client can say what comes next.
#pragma once
#include "../common/linereader.h"
#include "smtp_syntax.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/SecureStreamSocket.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace maillab::smtp {

struct ServerReply {
    int code = 0;
    std::vector<std::string> lines;  // texts after "ddd-" / "ddd "
    bool positive() const { return code >= 200 && code < 400; }
    std::string text() const;        // all lines joined by " / "
    std::string firstLineWire() const;
};

// Parses one reply from lines such as "250-a", "250 b"; false until the last line is seen.
// Throws std::runtime_error on a line that is not a reply line.
bool addReplyLine(ServerReply& reply, const std::string& line);

class SmtpClient {
public:
    // The same states as the server's session (session.h), as seen from the client.
    enum class State { Disconnected, Fresh, Ready, Mail, Rcpt, Closed };

    using Trace = std::function<void(const std::string& direction, const std::string& text)>;
    explicit SmtpClient(Trace trace = nullptr) : trace_(std::move(trace)) {}

    // Connects, completes the TLS handshake (verifying `serverName`), and reads the banner. With
    // StartTls it reads the banner in clear, says EHLO, STARTTLS, and returns once TLS is up (the
    // caller then says EHLO again, RFC 3207 4.2); with Off there is no TLS at all.
    ServerReply connect(const std::string& host, int port, const std::string& serverName,
                        Poco::Net::Context::Ptr context, int timeoutSeconds, TlsMode mode = TlsMode::Implicit);
    // Sends one command line; `logAs` replaces it in the trace (AUTH secrets).
    ServerReply command(const std::string& line, const std::string& logAs = "");
    // Sends a message (any line endings), dot-stuffed, and the terminating ".".
    ServerReply sendMessage(const std::string& message);
    // QUIT if still connected, then TLS close_notify.
    void close();

    State state() const { return state_; }
    bool authenticated() const { return authenticated_; }
    const std::string& tlsDescription() const { return tls_; }

private:
    ServerReply readReply();
    void sendRaw(const std::string& bytes);
    void track(const std::string& verb, const ServerReply& reply);

    Trace trace_;
    void handshake(const std::string& serverName, Poco::Net::Context::Ptr context);

    std::unique_ptr<Poco::Net::StreamSocket> socket_;
    bool secure_ = false;
    LineReader reader_{65536};
    State state_ = State::Disconnected;
    bool authenticated_ = false;
    std::string tls_;
};

// Base64 of "\0user\0password" for AUTH PLAIN (RFC 4616).
std::string plainCredentials(const std::string& user, const std::string& password);
// The password from a registration reply ("... password: 12345447 ..."), or "".
std::string registeredPassword(const ServerReply& reply);

}  // namespace maillab::smtp
