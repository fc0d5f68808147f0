// Log value escaping (see log_text.h).
#include "log_text.h"

#include <cstdio>

#include "text.h"

namespace maillab {

bool isPlainLogText(std::string_view text) {
    for (char ch : text) {
        unsigned char c = static_cast<unsigned char>(ch);
        if (c < 0x20 || c >= 0x7F || c == '\\') return false;
    }
    return true;
}

std::string escapeControl(const std::string& text) {
    if (isPlainLogText(text)) return text;  // most text: printable ASCII, nothing to escape
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        char hex[12];
        if (c == '\\') out += "\\\\";
        else if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (text::isControlAt(text, i) && c >= 0x80) {
            // A C1 control (ESC's 8-bit twins: CSI, OSC) or a directional override is shown by its
            // code point, never written (both are well-formed UTF-8 of 2 or 3 octets).
            size_t n = text::utf8SequenceLength(text, i);
            unsigned codePoint = n == 2 ? (c & 0x1Fu) << 6 | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu)
                                        : (c & 0x0Fu) << 12 | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu) << 6 |
                                              (static_cast<unsigned char>(text[i + 2]) & 0x3Fu);
            std::snprintf(hex, sizeof hex, "\\u%04X", codePoint);
            out += hex;
            i += n - 1;
        } else if (text::isControlAt(text, i)) {
            std::snprintf(hex, sizeof hex, "\\x%02X", c);
            out += hex;
        } else if (c >= 0x80) {
            // UTF-8 stays readable; a byte that is not part of it is shown, not written raw.
            if (size_t n = text::utf8SequenceLength(text, i)) {
                out.append(text, i, n);
                i += n - 1;
            } else {
                std::snprintf(hex, sizeof hex, "\\x%02X", c);
                out += hex;
            }
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

std::string logValue(const std::string& value) {
    std::string safe = escapeControl(value);
    if (!safe.empty() && safe.find_first_of(" \"=") == std::string::npos) return safe;
    return quotedLogValue(value);
}

std::string quotedLogValue(const std::string& value) {
    std::string safe = escapeControl(value);
    std::string out = "\"";
    for (char c : safe) {
        if (c == '"') out += '\\';
        out += c;
    }
    return out + "\"";
}

}  // namespace maillab
