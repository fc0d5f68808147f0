// The sender client's message text (sender/compose.h): plain, with attachments, encoded subjects.
// Each composed message is read back with Poco's own MIME reader, the way a mail reader would.
#include "../../sender/compose.h"

#include <Poco/Net/MailMessage.h>
#include <Poco/Net/PartHandler.h>
#include <Poco/Net/MessageHeader.h>
#include <Poco/StreamCopier.h>

#include <sstream>

#include "catch.hpp"

using namespace maillab::smtp;

namespace {
struct Collect : Poco::Net::PartHandler {
    std::vector<std::pair<Poco::Net::MessageHeader, std::string>> parts;
    void handlePart(const Poco::Net::MessageHeader& header, std::istream& stream) override {
        std::string bytes;
        Poco::StreamCopier::copyToString(stream, bytes);
        parts.emplace_back(header, bytes);
    }
};
}  // namespace

TEST_CASE("a plain message: headers, CRLF lines, 7bit or 8bit declared", "[compose]") {
    std::string text = composeMessage(Draft{"ana@447.edu", {"bob@447.edu", "carol@447.edu"}, "Hi", "one\ntwo", {}});
    CHECK(text.find("From: <ana@447.edu>\r\nTo: <bob@447.edu>, <carol@447.edu>\r\nSubject: Hi\r\n") == 0);
    CHECK(text.find("Content-Transfer-Encoding: 7bit\r\n") != std::string::npos);
    CHECK(text.substr(text.size() - 10) == "one\r\ntwo\r\n");
    std::string utf8 = composeMessage(Draft{"ana@447.edu", {"bob@447.edu"}, "Hi", "Grüße\r\n", {}});
    CHECK(utf8.find("Content-Transfer-Encoding: 8bit\r\n") != std::string::npos);
}

TEST_CASE("a non-ASCII subject travels as RFC 2047 words and decodes back", "[compose]") {
    std::string wire = encodedSubject("Diagramm für die Übung");
    CHECK(wire.rfind("=?UTF-8?", 0) == 0);
    for (char c : wire) CHECK(static_cast<unsigned char>(c) < 0x80);
    CHECK(encodedSubject("plain ASCII") == "plain ASCII");
}

TEST_CASE("attachments: multipart/mixed, base64, RFC 2231 names, bytes intact", "[compose]") {
    std::string binary;
    for (int i = 0; i < 5000; ++i) binary += static_cast<char>((i * 7) & 0xFF);
    Draft draft{"ana@447.edu", {"bob@447.edu"}, "files", "see attached\n",
                {{"Übung 1.png", "image/png", binary}, {"notes.txt", "text/plain", "a\r\n.b\r\n"}}};
    std::string text = composeMessage(draft);
    CHECK(text.find("Content-Type: multipart/mixed; boundary=") != std::string::npos);
    CHECK(text.find("filename*=UTF-8''%C3%9Cbung%201.png") != std::string::npos);
    CHECK(text.find("filename=\"notes.txt\"") != std::string::npos);
    for (size_t start = 0, end; (end = text.find("\r\n", start)) != std::string::npos; start = end + 2)
        CHECK(end - start <= 998);  // RFC 5322 2.1.1

    std::istringstream in(text);
    Poco::Net::MailMessage message;
    Collect handler;
    message.read(in, handler);
    REQUIRE(handler.parts.size() == 3);
    CHECK(handler.parts[0].second == "see attached\r\n");
    CHECK(handler.parts[1].first.get("Content-Type").rfind("image/png", 0) == 0);
    CHECK(handler.parts[1].second == binary);
    CHECK(handler.parts[2].second == "a\r\n.b\r\n");
}

TEST_CASE("media types from extensions, octet-stream otherwise", "[compose]") {
    CHECK(contentTypeFor("x.PNG") == "image/png");
    CHECK(contentTypeFor("capture.pcapng") == "application/octet-stream");
    CHECK(contentTypeFor("README") == "application/octet-stream");
}

TEST_CASE("attaching what is not a readable file says why", "[compose]") {
    CHECK_THROWS_WITH(readAttachment("/no/such/file"), "cannot attach /no/such/file: no such file");
    CHECK_THROWS_WITH(readAttachment("/tmp"), "cannot attach /tmp: not a regular file");
}
