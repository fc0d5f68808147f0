// Small text helpers every part of the lab uses: ASCII case folding (addresses, header names,
// commands) and trimming of spaces and tabs. One definition each, in common/.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace maillab::text {

std::string lowerCase(std::string text);  // ASCII letters only; other bytes as they are
std::string upperCase(std::string text);
std::string trim(const std::string& text);  // spaces and tabs at both ends
bool equalsIgnoringCase(const std::string& a, const std::string& b);
// UTF-8 (RFC 3629): the length of the well-formed sequence starting at text[i] (1 to 4), or 0 when
// the bytes there are not one (overlong forms, surrogates and code points past U+10FFFF included).
// The lab's one UTF-8 decoder: the retriever's text, the logs and the clients' output use it.
size_t utf8SequenceLength(std::string_view text, size_t i);
// True for a C0 or C1 control character or DEL at text[i] (a terminal acts on those: ESC, CSI, OSC),
// or a Unicode directional embedding, override or isolate (U+202A-U+202E, U+2066-U+2069: they
// reorder the text shown after them). Tab, CR and LF count as controls too; callers that keep them say so.
bool isControlAt(std::string_view text, size_t i);
// Text safe to show: invalid UTF-8 and C0/C1 controls other than tab, CR and LF become U+FFFD.
std::string validUtf8(std::string_view text);
// & < > " ' as character references: safe in HTML text and in quoted attribute values.
std::string htmlEscape(const std::string& text);

}  // namespace maillab::text
