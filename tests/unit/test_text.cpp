// The lab's one UTF-8 decoder and what the logs and terminals get from client text: no control
// character, C0 or C1, is ever written raw.
#include "../../common/net/log_text.h"
#include "../../common/net/text.h"

#include "catch.hpp"

using namespace maillab;

TEST_CASE("UTF-8 sequences as RFC 3629 defines them", "[text]") {
    CHECK(text::utf8SequenceLength("a", 0) == 1);
    CHECK(text::utf8SequenceLength("\xc3\xa9", 0) == 2);
    CHECK(text::utf8SequenceLength("\xe2\x82\xac", 0) == 3);
    CHECK(text::utf8SequenceLength("\xf0\x9f\x98\x80", 0) == 4);
    CHECK(text::utf8SequenceLength("\xc0\x80", 0) == 0);          // overlong
    CHECK(text::utf8SequenceLength("\xed\xa0\x80", 0) == 0);      // a surrogate
    CHECK(text::utf8SequenceLength("\xf5\x80\x80\x80", 0) == 0);  // past U+10FFFF
    CHECK(text::utf8SequenceLength("\xe2\x82", 0) == 0);          // cut short
}

TEST_CASE("log lines show controls, C1 included, by their code, and keep UTF-8 text", "[text][log]") {
    CHECK(escapeControl("ana\x1b[2J") == "ana\\x1B[2J");
    CHECK(escapeControl("x\xc2\x9b" "31m\xc2\x9d" "0;t\x07") == "x\\u009B31m\\u009D0;t\\x07");
    CHECK(escapeControl("caf\xc3\xa9 \xc2\xa0") == "caf\xc3\xa9 \xc2\xa0");
    CHECK(escapeControl("a\xff") == "a\\xFF");
    CHECK(escapeControl("del\x7f") == "del\\x7F");
    // Directional overrides and isolates (CVE-2021-42574) by their code point; other U+20xx stays text.
    CHECK(escapeControl("invoice \xe2\x80\xaegpj.exe") == "invoice \\u202Egpj.exe");
    CHECK(escapeControl("a\xe2\x80\xaa" "b\xe2\x81\xa6" "c\xe2\x81\xa9" "d") == "a\\u202Ab\\u2066c\\u2069d");
    CHECK(escapeControl("a\xe2\x80\x94" "b\xe2\x81\xa5" "c\xe2\x80\xaf") == "a\xe2\x80\x94" "b\xe2\x81\xa5" "c\xe2\x80\xaf");
    CHECK(text::validUtf8("invoice \xe2\x80\xaegpj.exe") == "invoice \xEF\xBF\xBDgpj.exe");
    CHECK(text::validUtf8("\xe2\x80\xae") == "\xEF\xBF\xBD");
    CHECK(text::validUtf8("\xe2\x80") == "\xEF\xBF\xBD\xEF\xBF\xBD");  // cut short: not read past the end
    CHECK(quotedLogValue("ana") == "\"ana\"");
    CHECK(logValue("a b\"c") == "\"a b\\\"c\"");
}
