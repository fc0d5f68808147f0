// The clients' connect routine and their explanations of failure; see connect.h.
#include "connect.h"

#include <openssl/x509_vfy.h>
#include "text.h"

#include "tls.h"

#include <Poco/Net/IPAddress.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/Net/SocketAddress.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace maillab {

namespace {

bool contains(const std::string& text, const std::string& lowerNeedle) {
    return text::lowerCase(text).find(lowerNeedle) != std::string::npos;
}

std::string where(const Target& t) {
    return (t.host.find(':') != std::string::npos ? "[" + t.host + "]" : t.host) + ":" + std::to_string(t.port);
}

std::string otherService(const Target& t) {
    return t.service == "smtp" ? "the retriever's (HTTPS) port? The sender listens on 9000 by default"
                               : "the sender's (SMTP) port? The retriever listens on 9100 by default";
}

// Every address of `host` for TCP, in the resolver's order (RFC 6724: ::1 may come before
// 127.0.0.1). No AI_ADDRCONFIG: it hides ::1 on a machine whose only IPv6 address is loopback.
std::vector<Poco::Net::SocketAddress> resolve(const Target& target) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* result = nullptr;
    std::string port = std::to_string(target.port);
    int rc = ::getaddrinfo(target.host.c_str(), port.c_str(), &hints, &result);
    if (rc != 0)
        throw ClientError(kExitConnect, "cannot find the host '" + target.host + "' (" + gai_strerror(rc) +
                                            "): check the spelling of --host/HOST=");
    std::vector<Poco::Net::SocketAddress> addresses;
    for (addrinfo* ai = result; ai; ai = ai->ai_next) {
        Poco::Net::SocketAddress address(ai->ai_addr, static_cast<poco_socklen_t>(ai->ai_addrlen));
        if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) addresses.push_back(address);
    }
    ::freeaddrinfo(result);
    return addresses;
}

// RFC 6125 6.4.4: a client checks the subjectAltName and never falls back to the subject's CN when
// the certificate has SANs; we go further and never use the CN at all (as browsers do), so a
// certificate that names the host only in its CN is refused. Poco's own check accepts the CN.
void requireSubjectAltName(const Poco::Net::StreamSocket& socket, const Target& target) {
    SSL* ssl = sslOf(socket);
    if (!ssl) return;
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (!cert) throw ClientError(kExitTls, "the server at " + where(target) + " sent no certificate");
    Poco::Net::IPAddress ip;
    bool literal = Poco::Net::IPAddress::tryParse(target.serverName, ip);
    int ok = literal ? X509_check_ip_asc(cert, target.serverName.c_str(), 0)
                     : X509_check_host(cert, target.serverName.c_str(), target.serverName.size(),
                                       X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr);
    X509_free(cert);
    if (ok != 1)
        throw ClientError(kExitTls, "the certificate of " + where(target) + " does not name '" + target.serverName +
                                        "' in its subjectAltName (a name only in the CN is not accepted, RFC 6125): "
                                        "make a new one with `make certs` or give --servername with a name it lists");
}

}  // namespace

std::string startCommand(const Target& target) {
    std::string make = target.service == "smtp" ? "make senderserver" : "make retrieverserver";
    return "`" + make + " PORT=" + std::to_string(target.port) + "`";
}

Poco::Net::StreamSocket connectToServer(const Target& target, Poco::Timespan timeout) {
    std::vector<Poco::Net::SocketAddress> addresses = resolve(target);
    std::string tried;
    bool timedOut = false, refused = false;
    for (const auto& address : addresses) {
        tried += (tried.empty() ? "" : ", ") + address.host().toString();
        try {
            Poco::Net::StreamSocket socket;
            socket.connect(address, timeout);
            socket.setNoDelay(true);  // both clients write whole commands and requests: never wait on Nagle
            return socket;
        } catch (const Poco::TimeoutException&) {
            timedOut = true;
        } catch (const Poco::Net::ConnectionRefusedException&) {
            refused = true;
        } catch (const Poco::Exception&) {
            // unreachable, no route: try the next address
        }
    }
    std::string head = "cannot connect to " + where(target) + " (tried " + tried + "): ";
    if (refused && !timedOut)
        throw ClientError(kExitConnect, head + "nothing is listening there. Start the server with " +
                                            startCommand(target) + ", or check --port/PORT=");
    if (timedOut)
        throw ClientError(kExitConnect, head + "no answer within " + std::to_string(timeout.totalSeconds()) +
                                            " s. Is the host up, and is a firewall dropping the port?");
    throw ClientError(kExitConnect, head + "the network cannot reach it. Check --host/HOST=");
}

struct Deadline::State {
    std::mutex mutex;
    std::condition_variable wake;
    bool done = false, expired = false;
};

Deadline::Deadline(const Poco::Net::StreamSocket& socket, Poco::Timespan within) : state_(std::make_shared<State>()) {
    int fd = static_cast<int>(socket.impl()->sockfd());
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(within.totalMicroseconds());
    std::thread([state = state_, fd, until] {
        std::unique_lock<std::mutex> lock(state->mutex);
        if (!state->wake.wait_until(lock, until, [&] { return state->done; })) {
            state->expired = true;
            ::shutdown(fd, SHUT_RDWR);  // the blocked read returns at once
        }
    }).detach();
}

Deadline::~Deadline() {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->done = true;
    state_->wake.notify_all();
}

bool Deadline::expired() const {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->expired;
}

Poco::Net::StreamSocket startClientTls(Poco::Net::StreamSocket& plain, const Target& target,
                                       Poco::Net::Context::Ptr context, Poco::Timespan within) {
    Deadline deadline(plain, within);
    try {
        Poco::Net::SecureStreamSocket secure = Poco::Net::SecureStreamSocket::attach(plain, target.serverName, context);
        secure.completeHandshake();  // chain, then host name (VERIFY_STRICT)
        requireSubjectAltName(secure, target);
        return secure;
    } catch (const std::exception& e) {
        if (deadline.expired())
            throw ClientError(kExitTls, "no TLS handshake from " + target.host + ":" + std::to_string(target.port) +
                                            " within " + std::to_string(within.totalSeconds()) +
                                            " s: it accepts connections but does not answer TLS (a plaintext "
                                            "server waiting for us to speak?). Check the port and --tls");
        throw explainFailure(e, target);
    }
}

ClientError explainFailure(const std::exception& error, const Target& target) {
    if (auto* known = dynamic_cast<const ClientError*>(&error)) return *known;
    std::string text = error.what();
    if (auto* poco = dynamic_cast<const Poco::Exception*>(&error)) text = poco->displayText();
    const std::string at = where(target);

    // The certificate names another host (checked in the handshake, see tls.cpp, and by Poco after it).
    int verifyError = lastCertificateVerifyError();
    if (dynamic_cast<const Poco::Net::CertificateValidationException*>(&error) ||
        contains(text, "unacceptable certificate") || contains(text, "hostname mismatch") ||
        verifyError == X509_V_ERR_HOSTNAME_MISMATCH || verifyError == X509_V_ERR_IP_ADDRESS_MISMATCH)
        return ClientError(kExitTls, "the certificate of " + at + " is not valid for the name '" + target.serverName +
                                         "': connect with a name it carries" +
                                         (target.serverName == "localhost" ? "" : " (e.g. HOST=localhost)") +
                                         ", or give --servername NAME with the name on the certificate");
    if (verifyError == X509_V_ERR_CERT_HAS_EXPIRED)
        return ClientError(kExitTls, "the certificate of " + at + " has expired: the server needs a new one "
                                         "(make certs on that machine after moving the old certs/server.* away)");
    if (verifyError == X509_V_ERR_CERT_NOT_YET_VALID)
        return ClientError(kExitTls, "the certificate of " + at + " is not valid yet: check this computer's clock "
                                         "(date) and the server's");
    if (contains(text, "certificate verify failed") || contains(text, "unable to get local issuer") ||
        contains(text, "self-signed") || contains(text, "self signed"))
        return ClientError(kExitTls, "the certificate of " + at + " is not signed by the CA in " + target.caFile +
                                         ": use --ca with the CA file of that server (certs/ca.pem where it runs)");
    // OpenSSL before 3.0.14 (Ubuntu 24.04's 3.0.13) has no text for this alert: its packed code
    // (ERR_LIB_SSL, SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL = 1120) is all the message carries.
    if (contains(text, "no application protocol") || contains(text, "no_application_protocol") ||
        contains(text, ":0A000460:") || contains(text, "reason(1120)"))
        return ClientError(kExitProtocol, at + " refused our protocol (TLS alert no_application_protocol): it is not an " +
                                              (target.service == "smtp" ? "SMTP" : "HTTPS") + " server. Is this " +
                                              otherService(target));
    // Our ClientHello met a server speaking in clear: "220 ..." or "HTTP/1.1 400" parsed as a record.
    if (contains(text, "wrong version number") || contains(text, "packet length too long") ||
        contains(text, "record layer failure") || contains(text, "http request") || contains(text, "unknown protocol"))
        return ClientError(kExitTls, at + " answered in plaintext, not TLS: " +
                                         std::string(target.service == "smtp"
                                                         ? "the server runs with --tls starttls or --tls off"
                                                         : "it runs without TLS (a retriever with --tls off, or the "
                                                           "sender's port in --tls starttls/off mode)") +
                                         ". Run this client with the same --tls, or check the port");
    if (contains(text, "unsupported protocol") || contains(text, "protocol version"))
        return ClientError(kExitTls, at + " does not speak TLS 1.3, the only version the lab allows");
    if (dynamic_cast<const Poco::TimeoutException*>(&error) || contains(text, "timeout") || contains(text, "timed out"))
        return ClientError(kExitProtocol, "no answer from " + at +
                                              " within the timeout: the server is stuck or overloaded; try again, "
                                              "or give more time with --timeout SECONDS");
    if (contains(text, "unexpected eof") || contains(text, "connection reset") || contains(text, "closed by server") ||
        contains(text, "connection closed") || contains(text, "broken pipe") ||
        dynamic_cast<const Poco::Net::SSLConnectionUnexpectedlyClosedException*>(&error))
        return ClientError(kExitProtocol, at + " closed the connection without a word: the server stopped or crashed. "
                                              "Start it again with " + startCommand(target) + " and reconnect");
    if (dynamic_cast<const Poco::Net::ConnectionRefusedException*>(&error))
        return ClientError(kExitConnect, "cannot connect to " + at + ": nothing is listening there. Start the server with " +
                                             startCommand(target));
    return ClientError(kExitProtocol, "talking to " + at + " failed: " + text);
}

}  // namespace maillab
