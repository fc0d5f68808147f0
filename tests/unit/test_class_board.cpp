// The class board without sockets: lab tokens (the same as captures/labtoken.py), the roster, the
// board's rows and hints, its renderings, and the retriever's /class and /metrics for instructors only.
#include "fixtures.h"

#include "../../common/lab/class_board.h"
#include "../../common/lab/password.h"
#include "../../retriever/mail_api.h"

#include "catch.hpp"

#include <fstream>

using namespace maillab;
using maillab::testing::LabFixture;
using maillab::testing::TempDir;

TEST_CASE("a lab token is the one captures/labtoken.py makes", "[board][token]") {
    // /usr/bin/python3 captures/labtoken.py token --student S1234567 --secret "class secret"
    CHECK(labToken("class secret", "S1234567") == "lab-c8ez-1cpq");
    CHECK(labToken("class secret", " s1234567 ") == "lab-c8ez-1cpq");
    CHECK(labToken("another secret", "s1234567") != "lab-c8ez-1cpq");
}

TEST_CASE("the roster maps accounts to student ids; a bad roster says what it needs", "[board]") {
    TempDir dir;
    std::string path = dir.path + "/roster.csv";
    std::ofstream(path) << "student,account\r\nS1,Ana@447.edu\n\"s2\",bob@447.edu\n\n";
    Roster roster = loadRoster(path);
    CHECK(roster.size() == 2);
    CHECK(studentOf(roster, "ana@447.edu") == "s1");
    CHECK(studentOf(roster, "carol@447.edu") == "carol");
    std::ofstream(dir.path + "/bad.csv") << "id,email\n";
    // The refusal names the file and what it needs (no string matchers: Catch2 2 and 3 spell them apart).
    auto refusal = [](const std::string& path) {
        try {
            loadRoster(path);
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK(refusal(dir.path + "/bad.csv").find("student,account") != std::string::npos);
    CHECK(refusal(dir.path + "/missing.csv").find("missing.csv") != std::string::npos);
}

TEST_CASE("the sender tells a lab message by the sender's own token", "[board][token]") {
    TempDir dir;
    std::ofstream(dir.path + "/secret") << "class secret\n";
    LabTokens tokens(dir.path + "/secret", Roster{{"ana@447.edu", "s1234567"}});
    CHECK(tokens.isLabMessage("ana@447.edu", "Lab 3 lab-c8ez-1cpq"));
    CHECK_FALSE(tokens.isLabMessage("bob@447.edu", "Lab 3 lab-c8ez-1cpq"));  // a classmate's token
    CHECK_FALSE(tokens.isLabMessage("ana@447.edu", "Lab 3"));
    LabTokens none(dir.path + "/no-secret-yet", {});
    CHECK_FALSE(none.isLabMessage("ana@447.edu", "Lab 3 lab-c8ez-1cpq"));
}

TEST_CASE("the board: one row per student, hints for the stuck, instructors left out", "[board]") {
    LabFixture lab;
    const int64_t t0 = 1795000000;
    lab.store->createAccount("ana@447.edu", "x", t0);
    lab.store->createAccount("bob@447.edu", "x", t0);
    lab.store->createAccount("teacher@447.edu", "x", t0);
    lab.store->createAccount("dora@447.edu", "x", t0);
    lab.store->setRole("teacher@447.edu", "instructor");
    {
        ActivityRecorder activity(*lab.store, 60000);  // flushed when it goes
        activity.note("ana@447.edu", activity::kSent, t0 + 60);
        activity.note("ana@447.edu", activity::kLabMessage, t0 + 60);
        activity.note("ana@447.edu", activity::kMailboxRead, t0 + 120);
        activity.note("ana@447.edu", activity::kNotModified, t0 + 130);
        for (int i = 0; i < 4; ++i) activity.note("bob@447.edu", activity::kLoginFailed, t0 + 200 + i);
        // Guesses at dora from addresses she never used: not her lost password.
        for (int i = 0; i < 12; ++i) activity.note("dora@447.edu", activity::kLoginFailedNewSource, t0 + 300 + i);
    }
    Roster roster{{"ana@447.edu", "s1"}, {"bob@447.edu", "s2"}, {"carol@447.edu", "s3"}};
    Board board = classBoard(*lab.store, roster, t0 + 30 * 60);
    REQUIRE(board.rows.size() == 4);
    CHECK(board.rows[0].student == "s1");
    CHECK(board.rows[0].hint == "done");
    CHECK(board.rows[0].labMessageAt == t0 + 60);
    CHECK(board.rows[1].failedLogins == 4);
    CHECK(board.rows[1].hint.find("4 failed logins, none since: a lost password?") != std::string::npos);
    CHECK(board.rows[2].account == "carol@447.edu");
    CHECK_FALSE(board.rows[2].registered);
    CHECK(board.rows[2].hint.find("not registered") != std::string::npos);
    CHECK(board.rows[3].account == "dora@447.edu");  // not on the roster: after it
    CHECK(board.rows[3].failedLogins == 0);
    CHECK(board.rows[3].failedLoginsNewSource == 12);
    CHECK(board.rows[3].hint.find("12 failed logins from addresses this account never logged in from") == 0);
    CHECK(board.rows[3].hint.find("only if she asks") != std::string::npos);
    CHECK(boardJson(board).find("\"failed_logins_new_source\":12") != std::string::npos);

    // Stuck: registered 30 minutes ago, nothing sent.
    lab.store->createAccount("dan@447.edu", "x", t0);
    Board later = classBoard(*lab.store, {}, t0 + 30 * 60);
    bool found = false;
    for (const auto& r : later.rows)
        if (r.account == "dan@447.edu") found = r.hint == "registered 30 min ago, no message yet";
    CHECK(found);

    std::string json = boardJson(board);
    CHECK(json.find("\"lab_message_at\":1795000060") != std::string::npos);
    CHECK(json.find("\"registered_at\":null") != std::string::npos);  // carol
    std::string metrics = boardMetrics(board);
    CHECK(metrics.find("# TYPE maillab_class_lab_message_sent gauge\nmaillab_class_lab_message_sent 1\n") != std::string::npos);
    CHECK(metrics.find("maillab_failed_logins_total{account=\"bob@447.edu\"} 4\n") != std::string::npos);
    CHECK(boardText(board).find("s3") != std::string::npos);
}

TEST_CASE("the board's page escapes what students chose", "[board][html]") {
    LabFixture lab;
    lab.store->createAccount("x<script>@447.edu", "x", 1795000000);
    std::string html = boardHtml(classBoard(*lab.store, {}, 1795000000), 10);
    CHECK(html.find("<script>") == std::string::npos);
    CHECK(html.find("x&lt;script&gt;@447.edu") != std::string::npos);
}

TEST_CASE("/class and /metrics answer the instructor only; reads and 304s are counted", "[board][api]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "11111447");
    lab.addUser("teacher@447.edu", "33333447");
    lab.store->setRole("teacher@447.edu", "instructor");
    auto recorder = std::make_unique<ActivityRecorder>(*lab.store, 60000);
    http::ClassView view;
    view.activity = recorder.get();
    http::MailApi api(*lab.store, *lab.auth, {}, [&] { return lab.now; }, view);
    auto get = [&](const std::string& target, const std::string& user, const std::string& password,
                   std::vector<std::pair<std::string, std::string>> extra = {}) {
        http::ApiRequest r;
        r.method = "GET";
        r.target = target;
        r.headers.emplace_back("Host", "lab.maillab.test");
        r.headers.emplace_back("Authorization", "Basic " + base64Encode(user + ":" + password));
        for (auto& h : extra) r.headers.push_back(h);
        return api.handle(r);
    };
    auto student = get("/class", "ana@447.edu", "11111447");
    CHECK(student.status == 403);
    CHECK(student.body.find("instructor") != std::string::npos);
    CHECK(get("/metrics", "ana@447.edu", "11111447").status == 403);
    auto wrong = get("/mailboxes/ana@447.edu/messages", "ana@447.edu", "99999447");
    CHECK(wrong.status == 401);
    CHECK(wrong.triedUser == "ana@447.edu");
    auto listing = get("/mailboxes/ana@447.edu/messages", "ana@447.edu", "11111447");
    REQUIRE(listing.status == 200);
    CHECK(get("/mailboxes/ana@447.edu/messages", "ana@447.edu", "11111447", {{"If-None-Match", listing.header("ETag")}})
              .status == 304);
    recorder->flush();
    auto page = get("/class", "teacher@447.edu", "33333447");
    CHECK(page.status == 200);
    CHECK(page.header("Content-Security-Policy").find("default-src 'none'") != std::string::npos);
    CHECK(page.body.find("ana@447.edu") != std::string::npos);
    auto metrics = get("/metrics", "teacher@447.edu", "33333447");
    CHECK(metrics.status == 200);
    CHECK(metrics.header("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
    CHECK(metrics.body.find("maillab_class_mailbox_read 1\n") != std::string::npos);
    CHECK(metrics.body.find("maillab_class_conditional_get 1\n") != std::string::npos);
    CHECK(metrics.body.find("maillab_failed_logins_total{account=\"ana@447.edu\"} 1\n") != std::string::npos);
    CHECK(metrics.body.find("teacher@447.edu") == std::string::npos);  // the instructor is not a student
}
