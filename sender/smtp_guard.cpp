// The SMTP words of the connection gate (smtp_guard.h).
#include "smtp_guard.h"

#include "smtp_replies.h"

namespace maillab::smtp {

namespace {
std::string replyLine(const ReplyCode& code, const std::string& hostname, const std::string& text) {
    return std::to_string(code.code) + " " + code.status + " " + hostname + " " + text + "\r\n";
}
}  // namespace

GuardedProtocol guardedProtocol(const std::string& hostname, int plaintextHintMs) {
    GuardedProtocol protocol;
    protocol.refusedAs = std::to_string(TooManyConnections.code);
    protocol.refusal = [hostname](ConnectionLimiter::Verdict verdict) {
        return verdict == ConnectionLimiter::Verdict::TooManyFromAddress
                   ? replyLine(TooManyFromAddress, hostname, "Too many connections from your address; try again later")
                   : replyLine(TooManyConnections, hostname, "Too many connections; try again later");
    };
    // RFC 8314 3.3: a plain SMTP client (smtplib.SMTP, telnet) says nothing and waits for a banner,
    // one that speaks ("EHLO", an HTTP request) would get a TLS alert it cannot read: both get one
    // line in clear naming what to use instead.
    protocol.silenceHintMs = plaintextHintMs;
    protocol.clearText = [hostname](FirstBytes, const std::string&, int port) {
        std::string at = hostname + ":" + std::to_string(port);
        return ClearTextReply{replyLine(TlsExpectedFirst, hostname,
                                        std::string(kTlsExpectedFirstText) +
                                            " (implicit TLS, RFC 8314), not plain SMTP: use smtplib.SMTP_SSL, "
                                            "curl smtps://" + at + " or openssl s_client -connect " + at),
                              std::to_string(TlsExpectedFirst.code)};
    };
    return protocol;
}

}  // namespace maillab::smtp
