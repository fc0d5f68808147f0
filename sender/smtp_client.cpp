// SmtpClient: TLS connection, command/reply exchange and state tracking for the sender client.
#include "smtp_client.h"

#include "smtp_syntax.h"
#include "../common/lab/password.h"
#include "../common/net/tls.h"
#include "../common/net/text.h"

#include <Poco/Net/DNS.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SocketAddress.h>

#include <Poco/Timestamp.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace maillab::smtp {

std::string ServerReply::text() const {
    std::string out;
    for (const auto& line : lines) out += (out.empty() ? "" : " / ") + line;
    return out;
}

std::string ServerReply::firstLineWire() const {
    return std::to_string(code) + " " + (lines.empty() ? "" : lines.front());
}

bool addReplyLine(ServerReply& reply, const std::string& line) {
    // RFC 5321 4.2: three digits, then '-' (more lines follow) or ' ' / end (last line).
    if (line.size() < 3 || !std::isdigit(static_cast<unsigned char>(line[0])) ||
        !std::isdigit(static_cast<unsigned char>(line[1])) || !std::isdigit(static_cast<unsigned char>(line[2])))
        throw std::runtime_error("not an SMTP reply line: " + line.substr(0, 80));
    int code = std::stoi(line.substr(0, 3));
    if (reply.code != 0 && reply.code != code) throw std::runtime_error("reply code changed within a reply");
    reply.code = code;
    bool more = line.size() > 3 && line[3] == '-';
    reply.lines.push_back(line.size() > 4 ? line.substr(4) : "");
    return !more;
}

std::string plainCredentials(const std::string& user, const std::string& password) {
    return maillab::base64Encode(std::string("\0", 1) + user + std::string("\0", 1) + password);
}

std::string registeredPassword(const ServerReply& reply) {
    if (reply.code != AuthSucceeded.code) return "";
    std::string text = reply.text();
    size_t at = text.find("password: ");
    if (at == std::string::npos) return "";
    std::string digits = text.substr(at + 10, 8);
    if (digits.size() != 8 || digits.find_first_not_of("0123456789") != std::string::npos) return "";
    return digits;
}

void SmtpClient::handshake(Poco::Timespan within) {
    socket_ = std::make_unique<Poco::Net::StreamSocket>(startClientTls(*socket_, target_, context_, within));
    secure_ = true;
    tls_ = describeTls(*socket_);
    if (trace_) trace_("*", "TLS " + tls_);
}

ServerReply SmtpClient::connect(const Target& target, Poco::Net::Context::Ptr context, int timeoutSeconds,
                                int greetingSeconds, TlsMode mode) {
    target_ = target;
    context_ = context;
    timeoutSeconds_ = timeoutSeconds;
    auto start = Poco::Timestamp();
    Poco::Timespan total(timeoutSeconds, 0);
    socket_ = std::make_unique<Poco::Net::StreamSocket>(connectToServer(target_, total));
    socket_->setSendTimeout(total);
    // One deadline for the handshake and the banner: the --timeout is never spent twice.
    Poco::Timespan left = total - Poco::Timespan(start.elapsed());
    if (left < Poco::Timespan(0, 100000)) left = Poco::Timespan(0, 100000);
    socket_->setReceiveTimeout(left);
    if (mode == TlsMode::Implicit) handshake(left);  // what is left of the connect deadline
    else if (trace_) trace_("*", "plaintext connection (no TLS yet)");
    state_ = State::Fresh;
    left = total - Poco::Timespan(start.elapsed());
    Poco::Timespan greeting = std::max(Poco::Timespan(0, 100000), std::min(left, Poco::Timespan(greetingSeconds, 0)));
    socket_->setReceiveTimeout(greeting);
    ServerReply banner;
    try {
        Deadline deadline(*socket_, greeting);
        try {
            banner = readReply();
        } catch (const std::exception&) {
            if (deadline.expired()) throw Poco::TimeoutException("no greeting");
            throw;
        }
    } catch (const Poco::TimeoutException&) {
        state_ = State::Closed;
        std::string at = target_.host + ":" + std::to_string(target_.port);
        if (mode == TlsMode::Implicit)
            throw ClientError(kExitProtocol, "TLS is up but " + at + " sent no SMTP greeting (220) within " +
                                                 std::to_string(greetingSeconds) +
                                                 " s: it is not an SMTP server. Is this the retriever's (HTTPS) "
                                                 "port? The sender listens on 9000 by default");
        throw ClientError(kExitTls, at + " sent no greeting in clear within " + std::to_string(greetingSeconds) +
                                        " s: it probably expects TLS from the first byte (the server's default, "
                                        "--tls implicit). Run this client with --tls implicit");
    } catch (const std::runtime_error& e) {
        if (dynamic_cast<const ClientError*>(&e)) throw;
        state_ = State::Closed;
        throw ClientError(kExitProtocol, target_.host + ":" + std::to_string(target_.port) +
                                             " is not an SMTP server: its first words were not a reply (" + e.what() +
                                             "). Is this the retriever's port?");
    }
    socket_->setReceiveTimeout(Poco::Timespan(timeoutSeconds_, 0));
    if (banner.code != ServiceReady.code) state_ = State::Closed;
    // Our server's clear-text hint on its implicit-TLS port: this client spoke (or waited) in clear.
    if (mode != TlsMode::Implicit && banner.code == TlsExpectedFirst.code && !banner.lines.empty() &&
        banner.lines.front().find(kTlsExpectedFirstText) != std::string::npos)
        throw ClientError(kExitTls, target_.host + ":" + std::to_string(target_.port) +
                                        " expects TLS from the first byte (the server's default, --tls implicit). "
                                        "Run this client with --tls implicit");
    return banner;
}

std::vector<ServerReply> SmtpClient::startTls(const std::string& ehloName) {
    std::vector<ServerReply> replies;
    replies.push_back(command("EHLO " + ehloName));
    bool offered = false;
    for (const auto& line : replies.back().lines) offered = offered || text::lowerCase(line) == "starttls";
    if (replies.back().code != Ok.code || !offered)
        throw ClientError(kExitTls, "the server does not offer STARTTLS: it runs with --tls off (or implicit); run "
                                    "this client with the same --tls");
    replies.push_back(command("STARTTLS"));
    if (replies.back().code != ReadyToStartTls.code) return replies;
    reader_ = LineReader(65536);  // nothing read in clear may be used after the handshake
    handshake(Poco::Timespan(timeoutSeconds_, 0));
    state_ = State::Fresh;
    authenticated_ = false;
    user_.clear();
    return replies;
}

void SmtpClient::sendRaw(const std::string& bytes) {
    if (!socket_) throw std::runtime_error("not connected");
    sendAll(*socket_, bytes);
}

ServerReply SmtpClient::readReply() {
    ServerReply reply;
    LineReader::Event event;
    for (;;) {
        while (reader_.next(event)) {
            if (trace_) trace_("S", event.line);
            if (addReplyLine(reply, event.line)) {
                if (reply.code == kServiceNotAvailable) state_ = State::Closed;
                return reply;
            }
        }
        char buffer[8192];
        int n = socket_->receiveBytes(buffer, sizeof buffer);
        if (n <= 0) {
            state_ = State::Closed;
            throw Poco::Net::ConnectionResetException("connection closed by server");
        }
        reader_.feed(buffer, static_cast<size_t>(n));
    }
}

void SmtpClient::track(const std::string& line, const ServerReply& reply) {
    const std::string verb = parseCommand(line).verb;
    if (reply.code == kServiceNotAvailable || (verb == "QUIT" && reply.code == Closing.code)) {
        state_ = State::Closed;
        return;
    }
    // Who is logging in, read from the exchange however it was typed (a raw "AUTH PLAIN <base64>",
    // PLAIN's response after "334 ", LOGIN's user name after its first challenge).
    if (verb == "AUTH" && !authenticated_) {
        Command mechanism = parseCommand(parseCommand(line).argument);
        authMechanism_ = mechanism.verb;
        authUser_.clear();
        if (!mechanism.argument.empty()) noteAuthResponse(mechanism.argument);
    } else if (awaitingAuthResponse_) {
        noteAuthResponse(line);
    }
    awaitingAuthResponse_ = reply.code == AuthChallenge.code;
    // 235 ends every AUTH exchange, whatever line it answers (AUTH LOGIN's last is the password).
    if (reply.code == AuthSucceeded.code) {
        authenticated_ = true;
        user_ = authUser_;
    }
    if (!reply.positive()) return;
    if (verb == "HELO" || verb == "EHLO" || (verb == "RSET" && state_ != State::Fresh)) {
        state_ = State::Ready;
        mailFrom_.clear();
        recipients_.clear();
    } else if (verb == "MAIL") {
        state_ = State::Mail;
        auto path = parsePath(parseCommand(line).argument, "FROM");
        mailFrom_ = path ? path->address : "";
        recipients_.clear();
    } else if (verb == "RCPT") {
        state_ = State::Rcpt;
        auto path = parsePath(parseCommand(line).argument, "TO");
        if (path && std::find(recipients_.begin(), recipients_.end(), path->address) == recipients_.end())
            recipients_.push_back(path->address);
    }
}

void SmtpClient::noteAuthResponse(const std::string& response) {
    std::string decoded;
    try {
        decoded = base64Decode(response);
    } catch (const std::exception&) {
        return;  // the server says what was wrong with it
    }
    if (authMechanism_ == "PLAIN") {  // RFC 4616 2: [authzid] NUL authcid NUL passwd
        auto first = decoded.find('\0'), second = decoded.find('\0', first + 1);
        if (first != std::string::npos && second != std::string::npos) authUser_ = decoded.substr(first + 1, second - first - 1);
    } else if (authMechanism_ == "LOGIN" && authUser_.empty()) {
        authUser_ = decoded.empty() ? " " : decoded;  // the first response is the user name
    }
}

ServerReply SmtpClient::command(const std::string& line, const std::string& logAs) {
    if (trace_) trace_("C", logAs.empty() ? line : logAs);
    sendRaw(line + "\r\n");
    ServerReply reply = readReply();
    // AUTH continues with 334 challenges; the caller sends the responses with command() too.
    track(line, reply);
    return reply;
}

ServerReply SmtpClient::sendMessage(const std::string& message) {
    std::string stuffed = dotStuff(message);
    if (trace_) trace_("C", "<message: " + std::to_string(stuffed.size()) + " octets, dot-stuffed>");
    if (trace_) trace_("C", ".");
    sendRaw(stuffed + ".\r\n");
    ServerReply reply = readReply();
    if (reply.code == kServiceNotAvailable) state_ = State::Closed;
    else state_ = State::Ready;  // after the final reply to DATA, accepted or not, the transaction is over
    mailFrom_.clear();
    recipients_.clear();
    return reply;
}

ServerReply SmtpClient::unsolicited(int waitMs) {
    socket_->setReceiveTimeout(Poco::Timespan(0, waitMs * 1000));
    ServerReply reply;
    try {
        reply = readReply();
    } catch (const Poco::TimeoutException&) {
        reply = ServerReply{};  // only TLS housekeeping arrived (a session ticket)
    }
    socket_->setReceiveTimeout(Poco::Timespan(timeoutSeconds_, 0));
    return reply;
}

void SmtpClient::close() {
    if (!socket_) return;
    try {
        if (state_ != State::Closed && state_ != State::Disconnected) command("QUIT");
    } catch (const std::exception&) {
    }
    // The server closes after 221; closeGracefully also reads its close_notify and FIN, so neither
    // side leaves unread bytes behind (an RST in the capture).
    closeGracefully(*socket_, secure_, 1000);
    try {
        socket_->close();
    } catch (const Poco::Exception&) {
    }
    socket_.reset();
    state_ = State::Disconnected;
}

}  // namespace maillab::smtp
