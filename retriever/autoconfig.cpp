// Mozilla's autoconfig document for the lab (format: the Thunderbird "Autoconfiguration" wiki's
// config-v1.1.xml): one POP3 incoming server per POP3 port the retriever serves, and the sender as
// the outgoing SMTP server; the user name is the whole address, the password sent inside TLS.
#include "autoconfig.h"

#include "../common/net/text.h"

namespace maillab::autoconfig {

namespace {
bool plainHostName(const std::string& host) {
    if (host.empty() || host.size() > 253) return false;
    if (host.front() == '[')  // an IPv6 literal
        return host.back() == ']' && host.find_first_not_of("0123456789abcdefABCDEF:.", 1) == host.size() - 1;
    return host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
           std::string::npos;
}

std::string server(const char* kind, const std::string& type, const std::string& host, int port,
                   const char* socketType, const std::string& extra = "") {
    return std::string("    <") + kind + " type=\"" + type + "\">\n" +
           "      <hostname>" + text::htmlEscape(host) + "</hostname>\n" +
           "      <port>" + std::to_string(port) + "</port>\n" +
           "      <socketType>" + socketType + "</socketType>\n" +
           "      <username>%EMAILADDRESS%</username>\n" +
           "      <authentication>password-cleartext</authentication>\n" + extra +
           "    </" + kind + ">\n";
}
}  // namespace

std::string hostFor(const Settings& settings, const std::string& hostHeader) {
    if (!settings.hostname.empty()) return settings.hostname;
    std::string host = hostHeader;
    size_t colon = host.rfind(':');
    if (colon != std::string::npos && host.find(']', colon) == std::string::npos &&
        (host.front() == '[' || host.find(':') == colon))
        host = host.substr(0, colon);  // name:port or [v6]:port
    return plainHostName(host) ? text::lowerCase(host) : "localhost";
}

std::string configXml(const Settings& settings, const std::string& hostname) {
    const std::string domain = text::htmlEscape(settings.domain);
    // A client that leaves its mail on the server sees each message once: UIDLs are stable.
    const std::string keep = "      <pop3>\n        <leaveMessagesOnServer>true</leaveMessagesOnServer>\n      </pop3>\n";
    std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n";
    xml += "  <emailProvider id=\"" + domain + "\">\n";
    xml += "    <domain>" + domain + "</domain>\n";
    xml += "    <displayName>maillab (" + domain + ")</displayName>\n";
    xml += "    <displayShortName>maillab</displayShortName>\n";
    if (settings.pop3Port > 0) xml += server("incomingServer", "pop3", hostname, settings.pop3Port, "SSL", keep);
    if (settings.pop3PlainPort > 0)
        xml += server("incomingServer", "pop3", hostname, settings.pop3PlainPort, "STARTTLS", keep);
    xml += server("outgoingServer", "smtp", hostname, settings.smtpPort, "SSL");
    xml += "  </emailProvider>\n</clientConfig>\n";
    return xml;
}

}  // namespace maillab::autoconfig
