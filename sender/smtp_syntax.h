// Pure parsing for the SMTP server and client: command lines, MAIL/RCPT paths with parameters
// (RFC 5321 4.1.2), dot-stuffing (RFC 5321 4.5.2), and the header fields the store indexes.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace maillab::smtp {

// How TLS reaches a session (RFC 8314 implicit TLS, RFC 3207 STARTTLS, or none for comparison).
enum class TlsMode { Implicit, StartTls, Off };
std::optional<TlsMode> parseTlsMode(const std::string& name);  // "implicit", "starttls", "off"

struct Command {
    std::string verb;       // upper-case, e.g. "MAIL"
    std::string argument;   // the rest of the line after one space, as sent
};

// Splits "mail FROM:<a@b>" into {"MAIL", "FROM:<a@b>"}. The verb is what precedes the first space.
Command parseCommand(const std::string& line);

struct Path {
    std::string address;                        // without angle brackets; "" for the null path <>
    std::map<std::string, std::string> params;  // ESMTP parameters, keys upper-case ("SIZE" -> "1000")
    std::string repeated;  // the first parameter given more than once ("" when none): the caller refuses it
};

// Parses the argument of MAIL ("FROM:<addr> [params]") or RCPT ("TO:<addr> [params]"), with the
// keyword given as "FROM" or "TO". Tolerant the way Postfix is: case-insensitive keyword, spaces after
// the colon, and an address without brackets. nullopt on a syntax error.
std::optional<Path> parsePath(const std::string& argument, const std::string& keyword);

// A mailbox "local@domain" with a dot-atom local part and a domain of letters, digits, '-' and '.'.
bool isValidMailbox(const std::string& address);

// Prefixes a '.' to every line that begins with one (sender side), joining lines with CRLF.
std::string dotStuff(const std::string& text);

struct HeaderSummary {
    std::string from, to, subject, date, messageId;
    bool hasDate = false, hasMessageId = false;
};

// The fields the store indexes, from the header section (common/net/rfc5322.h: unfolded, the first of
// each name).
HeaderSummary summarizeHeaders(const std::string& message);

}  // namespace maillab::smtp
