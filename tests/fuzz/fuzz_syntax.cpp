// libFuzzer target: the SMTP syntax helpers a client's text reaches (command lines, MAIL/RCPT paths,
// addresses, dot-stuffing, header summaries) on arbitrary bytes. Also checks that dot-stuffing and
// unstuffing agree.
#include "../../sender/smtp_syntax.h"

#include <cstdint>
#include <cstdlib>
#include <string>

using namespace maillab::smtp;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string text(reinterpret_cast<const char*>(data), size);
    Command command = parseCommand(text);
    (void)command;
    (void)parsePath(text, "FROM");
    (void)parsePath(text, "TO");
    (void)isValidMailbox(text);
    (void)summarizeHeaders(text);
    (void)parseTlsMode(text);
    // A line without CR or LF: stuffing then unstuffing gives it back.
    if (text.find_first_of("\r\n") == std::string::npos) {
        std::string stuffed = dotStuff(text);
        if (stuffed.size() >= 2 && stuffed.compare(stuffed.size() - 2, 2, "\r\n") == 0) stuffed.resize(stuffed.size() - 2);
        // The receiver's rule (RFC 5321 4.5.2, Session::takeContentLine): one leading dot removed.
        if (!stuffed.empty() && stuffed[0] == '.') stuffed.erase(0, 1);
        if (stuffed != text) std::abort();
    }
    return 0;
}
