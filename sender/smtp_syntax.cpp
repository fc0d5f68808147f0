// SMTP syntax helpers: command and path parsing, dot-stuffing and header summaries.
#include "smtp_syntax.h"

#include "../common/net/rfc5322.h"
#include "../common/net/text.h"

#include <cctype>

namespace maillab::smtp {

namespace {
using text::trim;
using text::upperCase;

bool isAtext(unsigned char c) {
    // RFC 5322 3.2.3 atext
    return std::isalnum(c) || std::string("!#$%&'*+-/=?^_`{|}~").find(static_cast<char>(c)) != std::string::npos;
}
}  // namespace

std::optional<TlsMode> parseTlsMode(const std::string& name) {
    if (name == "implicit") return TlsMode::Implicit;
    if (name == "starttls") return TlsMode::StartTls;
    if (name == "off") return TlsMode::Off;
    return std::nullopt;
}

Command parseCommand(const std::string& line) {
    size_t space = line.find(' ');
    if (space == std::string::npos) return {upperCase(line), ""};
    return {upperCase(line.substr(0, space)), line.substr(space + 1)};
}

bool isValidMailbox(const std::string& address) {
    size_t at = address.rfind('@');
    if (at == std::string::npos || at == 0 || at + 1 >= address.size()) return false;
    std::string local = address.substr(0, at), domain = address.substr(at + 1);
    if (local.size() > 64 || domain.size() > 255) return false;  // RFC 5321 4.5.3.1.1-2
    if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string::npos) return false;
    for (unsigned char c : local)
        if (!isAtext(c) && c != '.') return false;
    if (domain.front() == '.' || domain.back() == '.' || domain.find("..") != std::string::npos) return false;
    if (domain.front() == '[') return false;  // address literals are not lab mailboxes
    for (unsigned char c : domain)
        if (!std::isalnum(c) && c != '-' && c != '.') return false;
    return true;
}

std::optional<Path> parsePath(const std::string& argument, const std::string& keyword) {
    std::string arg = trim(argument);
    if (arg.size() <= keyword.size() || upperCase(arg.substr(0, keyword.size())) != keyword) return std::nullopt;
    arg = trim(arg.substr(keyword.size()));
    if (arg.empty() || arg[0] != ':') return std::nullopt;
    arg = trim(arg.substr(1));
    if (arg.empty()) return std::nullopt;

    Path path;
    std::string rest;
    if (arg[0] == '<') {
        size_t close = arg.find('>');
        if (close == std::string::npos) return std::nullopt;
        path.address = arg.substr(1, close - 1);
        rest = arg.substr(close + 1);
        // RFC 5321 4.1.2 source routes ("@a,@b:user@c") are accepted and ignored (RFC 5321 C).
        if (!path.address.empty() && path.address[0] == '@') {
            size_t colon = path.address.find(':');
            if (colon == std::string::npos) return std::nullopt;
            path.address = path.address.substr(colon + 1);
        }
    } else {
        size_t space = arg.find(' ');
        path.address = arg.substr(0, space);
        rest = space == std::string::npos ? "" : arg.substr(space);
    }
    if (!rest.empty() && rest[0] != ' ') return std::nullopt;
    rest = trim(rest);
    size_t pos = 0;
    while (pos < rest.size()) {
        size_t end = rest.find(' ', pos);
        std::string token = rest.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        pos = end == std::string::npos ? rest.size() : end + 1;
        if (token.empty()) continue;
        size_t eq = token.find('=');
        std::string key = upperCase(token.substr(0, eq));
        if (key.empty()) return std::nullopt;
        if (path.params.count(key) && path.repeated.empty()) path.repeated = key;
        path.params[key] = eq == std::string::npos ? "" : token.substr(eq + 1);
    }
    return path;
}

std::string dotStuff(const std::string& text) {
    std::string out;
    out.reserve(text.size() + text.size() / 64 + 2);
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (nl == std::string::npos && line.empty()) break;
        if (!line.empty() && line[0] == '.') out += '.';
        out += line;
        out += "\r\n";
        if (nl == std::string::npos) break;
        pos = nl + 1;
    }
    return out;
}

HeaderSummary summarizeHeaders(const std::string& message) {
    HeaderSummary summary;
    rfc5322::HeaderSection section = rfc5322::parseHeaderSection(message);
    if (const auto* f = section.find("From")) summary.from = f->value;
    if (const auto* f = section.find("To")) summary.to = f->value;
    if (const auto* f = section.find("Subject")) summary.subject = f->value;
    if (const auto* f = section.find("Date")) summary.date = f->value, summary.hasDate = true;
    if (const auto* f = section.find("Message-ID")) summary.messageId = f->value, summary.hasMessageId = true;
    return summary;
}

}  // namespace maillab::smtp
