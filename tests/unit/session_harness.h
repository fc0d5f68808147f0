// The SMTP session under test without a socket: a Session over a fresh store holding ana@447.edu
// (11111447) and bob@447.edu (22222447), its log and queue ids kept, and the few moves most session
// tests make. Shared by tests/unit/test_session.cpp and tests/unit/test_session_framing.cpp.
#pragma once
#include "fixtures.h"

#include "../../sender/session.h"

#include "catch.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace maillab::testing {

struct Harness {
    LabFixture lab;
    smtp::SessionLimits limits;
    std::vector<std::string> log;
    int queued = 0;
    std::unique_ptr<smtp::Session> session;

    int64_t freeDisk = INT64_MAX;

    explicit Harness(smtp::SessionLimits l = {}, smtp::DataBudget* budget = nullptr, smtp::SubmissionRates* rates = nullptr,
                     smtp::TlsMode mode = smtp::TlsMode::Implicit, AuthPolicy policy = fastPolicy())
        : lab(policy), limits(l) {
        lab.addUser("ana@447.edu", "11111447");
        lab.addUser("bob@447.edu", "22222447");
        smtp::SessionEnv env;
        env.hostname = "mail.447.edu";
        env.peerAddress = "127.0.0.1";
        env.tlsDescription = "TLSv1.3 TLS_AES_256_GCM_SHA384";
        env.clock = [this] { return lab.now; };
        env.newQueueId = [this] { return "QID" + std::to_string(++queued); };
        env.log = [this](const std::string& line) { log.push_back(line); };
        env.dataBudget = budget;
        env.rates = rates;
        env.freeDiskBytes = [this] { return freeDisk; };
        env.tlsMode = mode;
        session = std::make_unique<smtp::Session>(*lab.auth, *lab.store, limits, env);
    }

    static std::vector<std::string> lines(const smtp::Output& out) {
        std::vector<std::string> result;
        for (const auto& r : out.replies) {
            std::string wire = r.wire();
            size_t start = 0;
            while (start < wire.size()) {
                size_t end = wire.find("\r\n", start);
                result.push_back(wire.substr(start, end - start));
                start = end + 2;
            }
        }
        return result;
    }
    // One line as the client sends it (CRLF added), through the session's one entry.
    smtp::Output send(const std::string& line) { return session->onBytes(line + "\r\n"); }
    // The first line of the replies to one input line.
    std::string say(const std::string& line) {
        auto l = lines(send(line));
        return l.empty() ? "" : l.front();
    }
    // A line one octet over the limit.
    smtp::Output tooLong() { return session->onBytes(std::string(limits.maxLineLength - 1, 'x') + "\r\n"); }
    void login() {
        say("EHLO client");
        REQUIRE(say("AUTH PLAIN AGFuYUA0NDcuZWR1ADExMTExNDQ3") == "235 2.7.0 Authentication successful");
    }
    // The envelope most tests send in: from ana, to bob (the replies are the tests' business).
    void envelope() {
        say("MAIL FROM:<ana@447.edu>");
        say("RCPT TO:<bob@447.edu>");
    }
    // That envelope and DATA: what follows is the message.
    void startMessage() {
        envelope();
        REQUIRE(say("DATA").rfind("354 ", 0) == 0);
    }
};

}  // namespace maillab::testing
