// How a value is written into a key=value log line: quoted when it holds spaces, quotes or '=', and
// every control byte escaped, so a client cannot forge log lines or hide bytes in them. The one
// definition for every server, session and tool (the generic floor: it knows nothing of mail).
#pragma once
#include <string>
#include <string_view>

namespace maillab {

// Quotes a log value when it contains spaces or quotes: key="two words". Control characters are
// escaped (see escapeControl), so a client cannot forge log lines or hide bytes in them.
std::string logValue(const std::string& value);
// The same, always in double quotes: for values a client chose (an account name it tried).
std::string quotedLogValue(const std::string& value);
// Bytes below 0x20 and 0x7F as \r, \n, \t or \xNN; a backslash as \\. For every line a peer wrote.
std::string escapeControl(const std::string& text);
// True when escapeControl would give the text back unchanged (printable ASCII, no backslash).
bool isPlainLogText(std::string_view text);

}  // namespace maillab
