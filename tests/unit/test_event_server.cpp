// The events core's response head (retriever/event_server.h responseHead) against the bytes Poco's
// HTTPResponse writes for the thread core, set up as server.cpp and Poco's HTTPServerConnection set it.
#include "catch.hpp"

#include "../../retriever/event_server.h"

#include <Poco/Net/HTTPResponse.h>

#include <sstream>

namespace {

std::string pocoHead(const maillab::http::ApiResponse& r, bool http10, bool keepAlive, const std::string& date, size_t length) {
    Poco::Net::HTTPResponse response;
    response.set("Date", date);  // what setDate writes (Poco's HTTP_FORMAT is IMF-fixdate)
    response.setVersion(http10 ? Poco::Net::HTTPMessage::HTTP_1_0 : Poco::Net::HTTPMessage::HTTP_1_1);
    response.setKeepAlive(true);
    response.set("Server", "maillab-retriever");
    response.setStatusAndReason(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(r.status));
    for (const auto& [name, value] : r.headers) response.set(name, value);
    if (!keepAlive) response.setKeepAlive(false);
    if (r.status != 304) response.setContentLength(static_cast<std::streamsize>(length));  // as server.cpp
    std::ostringstream out;
    response.write(out);
    return out.str();
}

}  // namespace

TEST_CASE("events core: the response head is Poco's, byte for byte", "[events]") {
    const std::string date = "Wed, 02 Dec 2026 05:28:44 GMT";
    for (int status : {200, 304, 400, 401, 404, 414, 431, 503}) {
        maillab::http::ApiResponse r = maillab::http::errorResponse(status, "why");
        r.headers.emplace_back("ETag", "\"L1.1.0.50\"");
        for (bool http10 : {false, true})
            for (bool keepAlive : {true, false}) {
                size_t length = status == 304 ? 0 : r.body.size();
                CHECK(maillab::retriever_events::responseHead(r, http10, keepAlive, date, "maillab-retriever", length) ==
                      pocoHead(r, http10, keepAlive, date, length));
            }
    }
}

TEST_CASE("events core: an unknown method on a well-formed request line is told from garbage", "[events]") {
    using maillab::retriever_events::looksLikeRequestLine;
    CHECK(looksLikeRequestLine("FOO / HTTP/1.1\r\nHost: x\r\n\r\n"));
    CHECK(looksLikeRequestLine("get /mailboxes HTTP/1.1\n"));
    CHECK(looksLikeRequestLine("M-SEARCH * HTTP/1.1\r\n"));
    CHECK_FALSE(looksLikeRequestLine("GARBAGE\r\n\r\n"));
    CHECK_FALSE(looksLikeRequestLine("GET\r\n\r\n"));
    CHECK_FALSE(looksLikeRequestLine(std::string("\x00\x01\x02\x03\r\n\r\n", 8)));
    CHECK_FALSE(looksLikeRequestLine("FOO / HTTP/1.1"));  // no line end yet
    CHECK_FALSE(looksLikeRequestLine("F(O) / HTTP/1.1\r\n"));  // not a token
    CHECK_FALSE(looksLikeRequestLine("FOO /  HTTP/1.1\r\n"));
}
