// Mozilla's mail autoconfig document (config-v1.1.xml, as Thunderbird reads it): what a mail client
// needs to set up a lab account by itself. The retriever serves it without login at
// /.well-known/autoconfig/mail/config-v1.1.xml and /mail/config-v1.1.xml (mail_api.cpp's table);
// it names the sender's SMTP submission port (implicit TLS) and the retriever's POP3 ports.
#pragma once
#include <string>

namespace maillab::autoconfig {

struct Settings {
    std::string hostname;         // the servers' name; "": the name the client asked for (its Host)
    std::string domain = "447.edu";
    int smtpPort = 9000;          // the sender's port (implicit TLS, RFC 8314); 465 on a class server
    int pop3Port = 0;             // POP3 over implicit TLS; 0: not served
    int pop3PlainPort = 0;        // POP3 with STLS on a plaintext port; 0: not served
};

// The name the document gives: the setting, else the request's Host without its port when that is
// a plain host name or address (letters, digits, '-', '.', ':' inside [...]), else "localhost".
std::string hostFor(const Settings& settings, const std::string& hostHeader);

// The document itself (UTF-8 XML); `hostname` as hostFor() gives it.
std::string configXml(const Settings& settings, const std::string& hostname);

}  // namespace maillab::autoconfig
