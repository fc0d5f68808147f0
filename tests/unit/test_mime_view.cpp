// The MIME view without sockets: decoded header fields, the text body, the parts list, and what bad
// MIME (no boundary, broken base64, deep nesting, thousands of parts, unknown charsets) gives.
#include "../../retriever/mime_view.h"

#include "catch.hpp"

#include <chrono>
#include <string>

using namespace maillab::mime;

namespace {
// What Python's email.message.EmailMessage writes for an RFC 2047 subject, a quoted-printable text
// with a soft line break, and a PNG with an RFC 2231 file name (tests/e2e sends the same through smtplib).
const std::string kPythonMessage =
    "Received: from x by y\r\n"
    "From: Ana =?utf-8?q?M=C3=BCller?= <ana@447.edu>\r\n"
    "To: bob@447.edu\r\n"
    "Subject: Diagramm =?utf-8?q?f=C3=BCr?= dich\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"===============8319021646260848536==\"\r\n"
    "\r\n"
    "--===============8319021646260848536==\r\n"
    "Content-Type: text/plain; charset=\"utf-8\"\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "Hallo Bob, hier ist das Diagramm f=C3=BCr dich. long long=\r\n"
    " long l=\r\n"
    "ong=20\r\n"
    "\r\n"
    "--===============8319021646260848536==\r\n"
    "Content-Type: image/png\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "Content-Disposition: attachment; filename*=utf-8''Gr%C3%B6%C3%9Fe.png\r\n"
    "MIME-Version: 1.0\r\n"
    "\r\n"
    "iVBORw0KGgoAAGRhdGE=\r\n"
    "\r\n"
    "--===============8319021646260848536==--\r\n";

const std::string kPngBytes = std::string("\x89PNG\r\n\x1a\n\0\0data", 14);

std::string multipartOf(const std::string& boundary, const std::vector<std::string>& parts) {
    std::string out = "Content-Type: multipart/mixed; boundary=\"" + boundary + "\"\r\n\r\n";
    for (const auto& p : parts) out += "--" + boundary + "\r\n" + p + "\r\n";
    return out + "--" + boundary + "--\r\n";
}
}  // namespace

TEST_CASE("a message from Python's email package is decoded", "[mime]") {
    View v = viewMessage(kPythonMessage);
    CHECK(v.subject == "Diagramm f\xC3\xBCr dich");
    CHECK(v.from == "Ana M\xC3\xBCller <ana@447.edu>");
    CHECK(v.to == "bob@447.edu");
    CHECK(v.textType == "text/plain");
    CHECK(v.text == "Hallo Bob, hier ist das Diagramm f\xC3\xBCr dich. long long long long \n");
    REQUIRE(v.parts.size() == 2);
    CHECK(v.parts[0].isTextBody);
    CHECK_FALSE(v.parts[0].isAttachment);
    CHECK(v.parts[1].index == 2);
    CHECK(v.parts[1].contentType == "image/png");
    CHECK(v.parts[1].fileName == "Gr\xC3\xB6\xC3\x9F" "e.png");
    CHECK(v.parts[1].disposition == "attachment");
    CHECK(v.parts[1].size == kPngBytes.size());
    CHECK(v.parts[1].isAttachment);
    CHECK(v.problems.empty());
    CHECK_FALSE(v.partFound);
    View part = viewMessage(kPythonMessage, {}, 2);
    CHECK(part.partFound);
    CHECK(part.partBytes == kPngBytes);
    CHECK_FALSE(viewMessage(kPythonMessage, {}, 3).partFound);
}

TEST_CASE("a plain message without MIME is its own text", "[mime]") {
    View v = viewMessage("From: <ana@447.edu>\r\nSubject: Note <1>\r\n\r\nbody 1\r\nline 2\r\n");
    CHECK(v.from == "ana@447.edu");
    CHECK(v.subject == "Note <1>");
    CHECK(v.text == "body 1\nline 2\n");
    REQUIRE(v.parts.size() == 1);
    CHECK(v.parts[0].isTextBody);
    CHECK(v.problems.empty());
}

TEST_CASE("header words: RFC 2047 in several charsets, broken words as written", "[mime]") {
    CHECK(decodeHeader("=?ISO-8859-1?Q?caf=E9?=") == "caf\xC3\xA9");
    CHECK(decodeHeader("=?utf-8?b?ZsO8cg==?= =?utf-8?b?IGRpY2g=?=") == "f\xC3\xBCr dich");  // RFC 2047 6.2: space between words goes
    CHECK(decodeHeader("plain") == "plain");
    CHECK(decodeHeader("=?x?") == "x?");  // Poco drops an unterminated "=?"; nothing worse
    CHECK(decodeHeader("=?unknown-charset?q?a=FFb?=").find("a") == 0);
    CHECK(decodeHeader("a=?utf-8?q?=0D=0A?=b") == "a  b");  // no line break gets into a header
    std::string huge(100000, 'x');
    CHECK(decodeHeader(huge).size() < 5000);
    // The worst case for Poco's decoder: the shortest encoded words, one after another.
    std::string words;
    while (words.size() < 1000000) words += "=?a?q?b?=";
    auto start = std::chrono::steady_clock::now();
    decodeHeader(words);
    // Bounded: the whole megabyte would take Poco minutes; its first 4 KB take a millisecond
    // (more under the sanitizers).
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(1));
}

TEST_CASE("addresses are shown one way", "[mime]") {
    CHECK(displayAddresses("<ana@447.edu>") == "ana@447.edu");
    CHECK(displayAddresses("ana@447.edu") == "ana@447.edu");
    CHECK(displayAddresses("Ana <ana@447.edu>") == "Ana <ana@447.edu>");
    CHECK(displayAddresses("\"M\xC3\xBCller, Ana\" <ana@447.edu>, bob@447.edu (Bob)") ==
          "M\xC3\xBCller, Ana <ana@447.edu>, bob@447.edu");
    CHECK(displayAddresses("=?utf-8?q?Ana_M=C3=BCller?= <ana@447.edu>") == "Ana M\xC3\xBCller <ana@447.edu>");
    CHECK(displayAddresses("undisclosed-recipients:;") == "");
    CHECK(displayAddresses("Team: a@x.edu, b@x.edu;") == "a@x.edu, b@x.edu");
}

TEST_CASE("HTML mail becomes text, never markup", "[mime]") {
    std::string html = "<html><head><title>t</title><style>p{}</style></head><body><p>Hi &amp; <b>bye</b></p>"
                       "<script>alert(1)</script><img src=\"http://evil.example/x.png\"><div>caf&#233; &#x1F600;</div>"
                       "<!-- hidden --></body></html>";
    CHECK(htmlToText(html) == "Hi & bye\ncaf\xC3\xA9 \xF0\x9F\x98\x80\n");
    std::string message = "Content-Type: text/html; charset=utf-8\r\n\r\n" + html;
    View v = viewMessage(message);
    CHECK(v.textType == "text/html");
    CHECK(v.text.find("alert") == std::string::npos);
    CHECK(v.text.find("<") == std::string::npos);
    // text/plain is preferred in an alternative; the HTML is a part, not an attachment.
    View alt = viewMessage("Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n"
                           "<p>html</p>\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b--\r\n");
    CHECK(alt.text == "plain");
    REQUIRE(alt.parts.size() == 2);
    CHECK_FALSE(alt.parts[0].isAttachment);
}

TEST_CASE("charsets: Latin-1 converted, an unknown one said", "[mime]") {
    View latin = viewMessage("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xE9\r\n");
    CHECK(latin.text == "caf\xC3\xA9\n");
    View windows = viewMessage("Content-Type: text/plain; charset=windows-1250\r\n\r\n\x8A\r\n");  // Š
    CHECK(windows.text == "\xC5\xA0\n");
    View unknown = viewMessage("Content-Type: text/plain; charset=x-klingon\r\n\r\nab\xFF\r\n");
    CHECK(unknown.text == "ab\xEF\xBF\xBD\n");
    REQUIRE(unknown.problems.size() == 1);
    CHECK(unknown.problems[0].find("x-klingon") != std::string::npos);
}

TEST_CASE("file names: RFC 2231 sections, RFC 2047 in quotes, Content-Type name", "[mime]") {
    View v = viewMessage(multipartOf(
        "b", {"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''%C3%BC;\r\n"
              " filename*1=ber.pdf\r\n\r\nx",
              "Content-Type: image/png; name=\"=?utf-8?b?w7wucG5n?=\"\r\n\r\ny",
              "Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"notes.txt\"\r\n\r\nz"}));
    REQUIRE(v.parts.size() == 3);
    CHECK(v.parts[0].fileName == "\xC3\xBC" "ber.pdf");
    CHECK(v.parts[1].fileName == "\xC3\xBC.png");
    CHECK(v.parts[2].fileName == "notes.txt");
    CHECK(v.parts[2].isAttachment);  // named text is an attachment, not the body
    CHECK(v.textType.empty());
}

TEST_CASE("bad MIME gives a best-effort view", "[mime]") {
    SECTION("multipart without a boundary parameter or any boundary line") {
        View v = viewMessage("Content-Type: multipart/mixed\r\n\r\njust text\r\n");
        CHECK(v.text == "just text\n");
        CHECK_FALSE(v.problems.empty());
    }
    SECTION("the boundary guessed from the first line") {
        View v = viewMessage("Content-Type: multipart/mixed\r\n\r\n--zz\r\n\r\nhello\r\n--zz--\r\n");
        CHECK(v.text == "hello");
    }
    SECTION("base64 cut short keeps what came before, and the next part is still read") {
        View v = viewMessage(multipartOf(
            "b", {"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgoAAGRhdG",
                  "Content-Type: text/plain\r\n\r\nafter"}));
        REQUIRE(v.parts.size() == 2);
        CHECK(v.parts[0].size >= 9);
        CHECK(v.text == "after");
        CHECK(v.problems.size() == 1);
    }
    SECTION("base64 with bad characters in the middle, quoted-printable with a bare '='") {
        View v = viewMessage(multipartOf(
            "b", {"Content-Transfer-Encoding: base64\r\nContent-Type: application/zip\r\n\r\nAAAA!!!!AAAA",
                  "Content-Transfer-Encoding: quoted-printable\r\n\r\n1+1=zwei"}));
        REQUIRE(v.parts.size() == 2);
        CHECK(v.parts[0].size == 3);
        CHECK(v.text == "1+1");
        CHECK(v.problems.size() == 2);
    }
    SECTION("the closing boundary missing (a truncated message)") {
        View v = viewMessage("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nfirst\r\n--b\r\n\r\nsecond");
        REQUIRE(v.parts.size() == 2);
        CHECK(v.text == "first");
        // Poco 1.11's reader lets the missing close delimiter be seen (and said); 1.13 and later end
        // the multipart at the end of input without a sign. Both show every part.
        CHECK(v.problems.size() <= 1);
    }
    SECTION("a boundary longer than RFC 2046 allows") {
        std::string boundary(2000, 'q');
        View v = viewMessage(multipartOf(boundary, {"\r\nx"}));
        REQUIRE(v.parts.size() == 1);
        CHECK(v.parts[0].contentType == "multipart/mixed");
        CHECK_FALSE(v.problems.empty());
    }
    SECTION("a header that is not one, an empty message, a body that is all header") {
        CHECK_NOTHROW(viewMessage(""));
        CHECK_NOTHROW(viewMessage("Content-Type: ;;;===\r\n\r\n"));
        CHECK_NOTHROW(viewMessage("Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n"));
        View v = viewMessage("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nbroken header line\r\n\r\nx\r\n--b--\r\n");
        CHECK(v.parts.size() <= 1);
    }
}

TEST_CASE("limits: nesting depth and number of parts", "[mime][limits]") {
    SECTION("nested deeper than maxDepth is one undecoded part") {
        std::string inner = "Content-Type: text/plain\r\n\r\ndeep";
        for (int i = 0; i < 30; ++i) inner = multipartOf("b" + std::to_string(i), {inner});
        Limits limits;
        limits.maxDepth = 5;
        View v = viewMessage(inner, limits);
        REQUIRE(v.parts.size() == 1);
        CHECK(v.parts[0].contentType == "multipart/mixed");
        CHECK(v.problems.size() == 1);
        CHECK(v.problems[0].find("deeper than 5") != std::string::npos);
        limits.maxDepth = 40;
        CHECK(viewMessage(inner, limits).text == "deep");
    }
    SECTION("10000 parts: the first maxParts listed, quickly") {
        std::vector<std::string> parts(10000, "Content-Type: application/octet-stream\r\n\r\nx");
        std::string message = multipartOf("b", parts);
        Limits limits;
        limits.maxParts = 1000;
        auto start = std::chrono::steady_clock::now();
        View v = viewMessage(message, limits);
        auto took = std::chrono::steady_clock::now() - start;
        CHECK(v.parts.size() == 1000);
        REQUIRE(v.problems.size() == 1);
        CHECK(v.problems[0].find("more than 1000 parts") != std::string::npos);
        CHECK(took < std::chrono::seconds(2));
        CHECK(viewMessage(message, {}, 1000).partFound);
        CHECK_FALSE(viewMessage(message, limits, 1001).partFound);
    }
}

TEST_CASE("file names cannot escape a directory or a header", "[mime][names]") {
    CHECK(safeFileName("../../etc/passwd", 1) == "passwd");
    CHECK(safeFileName("..\\..\\boot.ini", 1) == "boot.ini");
    CHECK(safeFileName("a\"\r\nX-Evil: 1.txt", 2) == "a_X-Evil_ 1.txt");
    CHECK(safeFileName("invoice \xe2\x80\xaegpj.exe", 3) == "invoice gpj.exe");  // no right-to-left override
    CHECK(safeFileName(std::string("nul\0byte.png", 12), 3) == "nulbyte.png");
    CHECK(safeFileName("..", 4) == "part-4");
    CHECK(safeFileName("", 5) == "part-5");
    CHECK(safeFileName(".bashrc", 6) == "bashrc");
    CHECK(safeFileName("Gr\xC3\xB6\xC3\x9F" "e.png", 7) == "Gr\xC3\xB6\xC3\x9F" "e.png");
    std::string longName = std::string(500, 'a') + ".png";
    std::string cut = safeFileName(longName, 8);
    CHECK(cut.size() <= 200);
    CHECK(cut.substr(cut.size() - 4) == ".png");
    std::string disposition = attachmentDisposition(safeFileName("a\"\r\nX-Evil: 1.txt", 2));
    CHECK(disposition == "attachment; filename=\"a_X-Evil_ 1.txt\"; filename*=UTF-8''a_X-Evil_%201.txt");
    CHECK(attachmentDisposition("Gr\xC3\xB6\xC3\x9F" "e.png") ==
          "attachment; filename=\"Gr____e.png\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe.png");
}

TEST_CASE("parts are served with a type that cannot run", "[mime][names]") {
    CHECK(servedContentType("image/png", "") == "image/png");
    CHECK(servedContentType("text/html", "utf-8") == "application/octet-stream");
    CHECK(servedContentType("image/svg+xml", "") == "application/octet-stream");
    CHECK(servedContentType("application/xhtml+xml", "") == "application/octet-stream");
    CHECK(servedContentType("text/plain", "utf-8") == "text/plain; charset=utf-8");
    CHECK(servedContentType("text/plain", "x\r\nSet-Cookie: a") == "text/plain; charset=us-ascii");
}
