// Small text helpers every part of the lab uses: ASCII case folding (addresses, header names,
// commands) and trimming of spaces and tabs. One definition each, in common/.
#pragma once
#include <string>

namespace maillab::text {

std::string lowerCase(std::string text);  // ASCII letters only; other bytes as they are
std::string upperCase(std::string text);
std::string trim(const std::string& text);  // spaces and tabs at both ends
bool equalsIgnoringCase(const std::string& a, const std::string& b);
// & < > " ' as character references: safe in HTML text and in quoted attribute values.
std::string htmlEscape(const std::string& text);

}  // namespace maillab::text
