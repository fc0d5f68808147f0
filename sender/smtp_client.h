// The client side of the lab's SMTP: connects over TLS 1.3 with certificate and hostname checks,
// sends commands, reads (multi-line) replies, and mirrors the server's session state so that the
// interactive client can say what comes next.
#pragma once
#include "../common/net/connect.h"
#include "../common/net/linereader.h"
#include "smtp_replies.h"
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
    // The server session's states (session.h) that the client needs to say what comes next: before
    // a connection, banner read (Fresh), greeted (Ready), MAIL and RCPT accepted, and closed. The
    // server's AUTH and DATA states last one exchange each here (the client sends the whole
    // response or message in one go), so they have no state of their own.
    enum class State { Disconnected, Fresh, Ready, Mail, Rcpt, Closed };

    using Trace = std::function<void(const std::string& direction, const std::string& text)>;
    explicit SmtpClient(Trace trace = nullptr) : trace_(std::move(trace)) {}

    // Connects (every address of the host in turn), completes the TLS handshake in Implicit mode
    // (verifying target.serverName), and reads the banner, all within `timeoutSeconds` in total; the
    // banner must come within `greetingSeconds` of the connection. In StartTls and Off modes the
    // banner arrives in clear. Failures are ClientErrors that say what to do.
    ServerReply connect(const Target& target, Poco::Net::Context::Ptr context, int timeoutSeconds,
                        int greetingSeconds, TlsMode mode = TlsMode::Implicit);
    // RFC 3207: EHLO, STARTTLS, then the handshake; returns the replies in order (the caller shows
    // them). The server forgets the session: EHLO again next (RFC 3207 4.2).
    std::vector<ServerReply> startTls(const std::string& ehloName);
    // Sends one command line; `logAs` replaces it in the trace (AUTH secrets).
    ServerReply command(const std::string& line, const std::string& logAs = "");
    // Sends a message (any line endings), dot-stuffed, and the terminating ".".
    ServerReply sendMessage(const std::string& message);
    // A reply the server sent unasked (421 as it shuts down), read within `waitMs`; code 0 if none.
    ServerReply unsolicited(int waitMs);
    // The socket's descriptor, for a terminal that watches it while waiting for input; -1 if none.
    int descriptor() const { return socket_ ? static_cast<int>(socket_->impl()->sockfd()) : -1; }
    // QUIT if still connected, then TLS close_notify.
    void close();

    State state() const { return state_; }
    bool authenticated() const { return authenticated_; }
    // The name the session logged in with (as sent: maybe bare), once authenticated; else "".
    const std::string& user() const { return user_; }
    // The transaction's envelope as the server accepted it, however it was typed (the menu or a raw
    // "MAIL FROM:<...>" line): the message's From: and To: headers are written from these.
    const std::string& envelopeFrom() const { return mailFrom_; }
    const std::vector<std::string>& envelopeRecipients() const { return recipients_; }
    const std::string& tlsDescription() const { return tls_; }

private:
    ServerReply readReply();
    void sendRaw(const std::string& bytes);
    void track(const std::string& line, const ServerReply& reply);
    void noteAuthResponse(const std::string& base64Response);

    Trace trace_;
    void handshake(Poco::Timespan within);
    ClientError explain(const std::exception& e) const { return explainFailure(e, target_); }
    Target target_;
    Poco::Net::Context::Ptr context_;
    int timeoutSeconds_ = 30;

    std::unique_ptr<Poco::Net::StreamSocket> socket_;
    bool secure_ = false;
    LineReader reader_{65536};
    State state_ = State::Disconnected;
    bool authenticated_ = false;
    std::string authMechanism_, authUser_, user_;
    bool awaitingAuthResponse_ = false;
    std::string mailFrom_;
    std::vector<std::string> recipients_;
    std::string tls_;
};

// Base64 of "\0user\0password" for AUTH PLAIN (RFC 4616).
std::string plainCredentials(const std::string& user, const std::string& password);
// The password from a registration reply ("... password: 12345447 ..."), or "".
std::string registeredPassword(const ServerReply& reply);

}  // namespace maillab::smtp
