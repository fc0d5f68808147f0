// libFuzzer target: the retriever's socket-free MailApi on arbitrary requests. The input's first
// line is "METHOD TARGET", the following lines "Name: value" headers. Every answer must carry a
// status the API documents and a body that is not larger than the mailbox could make it.
#include "fuzz_world.h"

#include "../../retriever/mail_api.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <sstream>
#include <string>

using namespace maillab;

namespace {
struct World : fuzzing::FuzzWorld {
    std::unique_ptr<http::MailApi> api;
    World() {
        NewMessage m = toBob("Q1", "hello", "From: Ana <ana@447.edu>\r\nSubject: hello\r\n\r\nbody\r\n");
        m.from = "Ana <ana@447.edu>";
        m.receivedAt = fuzzing::kFuzzNow;
        store->deliver(m);
        api = std::make_unique<http::MailApi>(*store, *auth, http::ApiLimits{}, [] { return fuzzing::kFuzzNow; });
    }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static World world;
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    http::ApiRequest request;
    std::string line;
    std::getline(in, line);
    size_t space = line.find(' ');
    request.method = line.substr(0, space);
    request.target = space == std::string::npos ? "" : line.substr(space + 1);
    while (std::getline(in, line)) {
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        request.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
    }
    // A Host unless the input has one (RFC 9112 3.2 refuses HTTP/1.1 without it): the fuzzer's
    // inputs then reach the resources instead of stopping at that 400.
    bool hasHost = false;
    for (const auto& h : request.headers) hasHost = hasHost || h.first == "Host";
    if (!hasHost) request.headers.emplace_back("Host", "localhost");
    request.peer = "127.0.0.1";
    http::ApiResponse response = world.api->handle(request);
    static const std::set<int> documented = {200, 304, 400, 401, 403, 404, 405, 406, 414, 429, 431, 501, 503, 505};
    if (!documented.count(response.status)) std::abort();
    if (response.body.size() > 1000000) std::abort();
    return 0;
}
