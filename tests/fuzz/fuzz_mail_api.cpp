// libFuzzer target: the retriever's socket-free MailApi on arbitrary requests. The input's first
// line is "METHOD TARGET", the following lines "Name: value" headers. Every answer must carry a
// status the API documents and a body that is not larger than the mailbox could make it.
#include "../../common/lab/auth.h"
#include "../../common/lab/password.h"
#include "../../common/lab/store.h"
#include "../../retriever/mail_api.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

using namespace maillab;

namespace {
struct World {
    std::unique_ptr<Store> store;
    std::unique_ptr<Authenticator> auth;
    std::unique_ptr<http::MailApi> api;
    World() {
        char pattern[] = "/tmp/maillab-fuzz-XXXXXX";
        std::string dir = ::mkdtemp(pattern);
        SqliteOptions options;
        options.path = dir + "/fuzz.db";
        options.synchronous = "OFF";
        store = openSqliteStore(options);
        AuthPolicy policy;
        policy.scrypt = ScryptParams{16, 1, 1};
        policy.guessBurst = 1000000;
        auth = std::make_unique<Authenticator>(*store, policy, [] { return int64_t{1795000000}; });
        store->createAccount("bob@447.edu", hashPassword("22222447", policy.scrypt), 0);
        NewMessage m;
        m.queueId = "Q1";
        m.envelopeFrom = "ana@447.edu";
        m.recipients = {"bob@447.edu"};
        m.from = "Ana <ana@447.edu>";
        m.subject = "hello";
        m.receivedAt = 1795000000;
        m.raw = "From: Ana <ana@447.edu>\r\nSubject: hello\r\n\r\nbody\r\n";
        store->deliver(m);
        api = std::make_unique<http::MailApi>(*store, *auth, http::ApiLimits{}, [] { return int64_t{1795000000}; });
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
    static const std::set<int> documented = {200, 304, 400, 401, 403, 404, 405, 406, 414, 429, 431, 503, 505};
    if (!documented.count(response.status)) std::abort();
    if (response.body.size() > 1000000) std::abort();
    return 0;
}
