// See text.h.
#include "text.h"

#include <algorithm>
#include <cctype>

namespace maillab::text {

std::string lowerCase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    return text;
}

std::string upperCase(std::string text) {
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::toupper(c); });
    return text;
}

std::string trim(const std::string& text) {
    size_t b = text.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    size_t e = text.find_last_not_of(" \t");
    return text.substr(b, e - b + 1);
}

bool equalsIgnoringCase(const std::string& a, const std::string& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
               return std::tolower(x) == std::tolower(y);
           });
}

size_t utf8SequenceLength(std::string_view text, size_t i) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
    unsigned char c = byte(0);
    if (c < 0x80) return 1;
    size_t n = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n == 0 || i + n > text.size()) return 0;
    for (size_t k = 1; k < n; ++k)
        if ((byte(k) & 0xC0) != 0x80) return 0;
    // RFC 3629 4: the second byte's range after E0, ED, F0 and F4 (no overlongs, surrogates or > U+10FFFF).
    if ((c == 0xE0 && byte(1) < 0xA0) || (c == 0xED && byte(1) > 0x9F) || (c == 0xF0 && byte(1) < 0x90) ||
        (c == 0xF4 && byte(1) > 0x8F))
        return 0;
    return n;
}

bool isControlAt(std::string_view text, size_t i) {
    auto byte = [&](size_t k) { return i + k < text.size() ? static_cast<unsigned char>(text[i + k]) : 0; };
    unsigned char c = byte(0);
    if (c < 0x20 || c == 0x7F) return true;
    // C1 (U+0080 to U+009F) is C2 80 to C2 9F in UTF-8: CSI (9B) and OSC (9D) drive terminals too.
    if (c == 0xC2) return byte(1) >= 0x80 && byte(1) <= 0x9F;
    // Unicode's explicit directional formatting (UAX #9 2.1-2.2): the embeddings and overrides
    // U+202A to U+202E (E2 80 AA-AE) and the isolates U+2066 to U+2069 (E2 81 A6-A9) reorder what
    // follows on screen: "invoice \u202Egpj.exe" shows as "invoice exe.jpg" (CVE-2021-42574).
    if (c == 0xE2 && byte(1) == 0x80) return byte(2) >= 0xAA && byte(2) <= 0xAE;
    if (c == 0xE2 && byte(1) == 0x81) return byte(2) >= 0xA6 && byte(2) <= 0xA9;
    return false;
}

std::string validUtf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
        size_t length = text::utf8SequenceLength(text, i);
        bool keptControl = text[i] == '\t' || text[i] == '\r' || text[i] == '\n';
        if (length == 0 || (text::isControlAt(text, i) && !keptControl)) {
            out += "\xEF\xBF\xBD";  // U+FFFD for a byte that is not UTF-8, and for a C0/C1 control
            i += length ? length : 1;
            continue;
        }
        out.append(text.substr(i, length));
        i += length;
    }
    return out;
}

std::string htmlEscape(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out += c;
        }
    }
    return out;
}

}  // namespace maillab::text
