// The HTTPS words of the connection gate (http_guard.h).
#include "http_guard.h"

#include "mail_api.h"

#include <Poco/String.h>

namespace maillab::http {

std::string plainHttpAnswer(const std::string& request, int port) {
    std::string host = "localhost";
    size_t at = Poco::toLower(request).find("\nhost:");
    if (at != std::string::npos) {
        size_t start = request.find_first_not_of(" \t", at + 6);
        size_t end = request.find_first_of("\r\n", start);
        std::string value = start == std::string::npos ? "" : request.substr(start, end - start);
        value = value.substr(0, value.rfind(':') == std::string::npos || value.back() == ']' ? value.size()
                                                                                             : value.rfind(':'));
        bool plain = !value.empty() && value.size() < 256 &&
                     value.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-[]:") ==
                         std::string::npos;
        if (plain) host = value;
    }
    std::string url = "https://" + host + ":" + std::to_string(port) + "/";
    std::string body = "This port speaks HTTPS (TLS), not plain HTTP.\nUse " + url +
                       " instead, e.g.\n  curl --cacert certs/ca.pem " + url + "\n";
    return "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

GuardedProtocol guardedProtocol() {
    GuardedProtocol protocol;
    // At tens of thousands of connections a second a line each is a cost (issue 22): only refusals
    // and failures are logged, and requests that fail.
    protocol.logsEveryConnection = false;
    protocol.closesGracefully = false;  // Poco's keep-alive loop ends the connection
    // RFC 9110 15.6.4: 503 with Retry-After when the server cannot take the connection now.
    protocol.refusedAs = "503";
    protocol.refusal = [](ConnectionLimiter::Verdict verdict) {
        ApiResponse busy = errorResponse(503, verdict == ConnectionLimiter::Verdict::TooManyFromAddress
                                                  ? "Too many connections from your address; try again later"
                                                  : "Too many connections; try again later");
        std::string wire = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n";
        for (const auto& [name, value] : busy.headers) wire += name + ": " + value + "\r\n";
        return wire + "Content-Length: " + std::to_string(busy.body.size()) + "\r\n\r\n" + busy.body;
    };
    // Plain HTTP on the HTTPS port (curl http://, a browser's http:// link): a request line where a
    // ClientHello should be gets a clear-text 400 naming the https:// URL, as nginx does, instead of
    // a TLS alert the client cannot read ("connection reset"); other clear text is closed. Silence
    // is the handshake's deadline's (a browser may open a connection and speak later).
    protocol.clearText = [](FirstBytes kind, const std::string& seen, int port) -> std::optional<ClearTextReply> {
        if (kind == FirstBytes::HttpRequest) return ClearTextReply{plainHttpAnswer(seen, port), "400"};
        if (kind == FirstBytes::Plaintext) return ClearTextReply{"", "closed"};
        return std::nullopt;
    };
    return protocol;
}

}  // namespace maillab::http
