// Choosing the backend (store.url) and what only the PostgreSQL store has to promise: several
// instances on one guess budget, its schema version, a database that is away and comes back. The
// cases that need a database run when MAILLAB_TEST_PG_URL names one (tests/pg_cluster.py run --
// build/bin/unit-tests "[postgres]"), and say they were skipped otherwise.
#include "fixtures.h"

#include "catch.hpp"

#include <thread>

using namespace maillab;
using maillab::testing::LabFixture;
using maillab::testing::postgresStatement;

namespace {
bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The PostgreSQL cases' guard: true (and a printed reason) when there is no database to run on.
bool skipWithoutPostgres() {
    if (maillab::testing::testPostgresUrl()) return false;
    WARN("skipped: no PostgreSQL database (set MAILLAB_TEST_PG_URL, or run `make test STORE=postgresql`)");
    return true;
}
}  // namespace

TEST_CASE("store.url names the backend; a password never reaches a message", "[store][postgres]") {
    CHECK(isPostgresUrl("postgresql://lab@db.example.edu/maillab"));
    CHECK(isPostgresUrl("postgres://lab@db/maillab"));
    CHECK_FALSE(isPostgresUrl("users/maillab.db"));
    CHECK(sqlitePathOf("sqlite:users/maillab.db") == "users/maillab.db");
    CHECK(sqlitePathOf("users/maillab.db") == "users/maillab.db");
    CHECK(sqlitePathOf("postgresql://db/maillab").empty());
    CHECK(describeStoreUrl("postgresql://lab:s3cret@db:5432/maillab") == "postgresql://lab:***@db:5432/maillab");
    CHECK(describeStoreUrl("postgresql://lab@db/maillab?sslmode=require&password=s3cret") ==
          "postgresql://lab@db/maillab?sslmode=require&password=***");
    StoreOptions options;
    options.url = "mysql://db/maillab";
    CHECK_THROWS_AS(openStore(options), StoreError);

    maillab::testing::TempDir dir;
    options.url = "sqlite:" + dir.path + "/x.db";
    auto store = openStore(options);
    CHECK(store->createAccount("ana@447.edu", "h", 1));
    options.url = dir.path + "/x.db";  // a bare path is the same SQLite file
    CHECK(openStore(options)->findAccount("ana@447.edu"));
}

TEST_CASE("a PostgreSQL database that cannot be reached is a StoreError naming it, never its password",
          "[store][postgres]") {
    StoreOptions options;
    options.url = "postgresql://lab:s3cret@127.0.0.1:1/classdb";  // port 1: nothing listens
    try {
        openStore(options);
        FAIL("opened a database that is not there");
    } catch (const StoreError& e) {
        std::string what = e.what();
        CHECK(contains(what, "classdb"));
        CHECK(contains(what, "127.0.0.1"));
        CHECK_FALSE(contains(what, "s3cret"));
    }
}

TEST_CASE("PostgreSQL: two instances take from one guess budget and never race", "[store][postgres]") {
    if (skipWithoutPostgres()) return;
    LabFixture lab;
    auto other = lab.anotherStore();  // another server instance: its own pool
    std::atomic<int> taken{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&, t] {
            Store& store = t % 2 ? *other : *lab.store;
            for (int i = 0; i < 25; ++i)
                if (store.takeGuess("acct:ana@447.edu", 100, 0, 1000) == 0) ++taken;
        });
    for (auto& th : threads) th.join();
    // 200 attempts on a budget of 100 that never refills: exactly 100 taken, whoever took them.
    CHECK(taken == 100);
    CHECK(lab.store->takeGuess("acct:ana@447.edu", 100, 0, 1000) > 0);
}

TEST_CASE("PostgreSQL: the schema carries its version, and a newer one is refused", "[store][postgres]") {
    if (skipWithoutPostgres()) return;
    LabFixture lab;
    std::string version;
    REQUIRE(postgresStatement("SELECT version FROM " + lab.options.postgres.schema + ".schema_version", &version));
    CHECK(version == "8");
    CHECK(lab.anotherStore());  // opening again migrates nothing
    REQUIRE(postgresStatement("UPDATE " + lab.options.postgres.schema + ".schema_version SET version = 99"));
    CHECK_THROWS_AS(lab.anotherStore(), StoreError);
}

TEST_CASE("PostgreSQL: bytes are kept as they came (8-bit headers, NULs)", "[store][postgres]") {
    if (skipWithoutPostgres()) return;
    LabFixture lab;
    NewMessage m;
    m.queueId = "Q1";
    m.envelopeFrom = "ana@447.edu";
    m.recipients = {"bob@447.edu"};
    m.subject = std::string("caf\xe9 \x01", 6);  // Latin-1, not UTF-8
    m.raw = std::string("Subject: caf\xe9\r\n\r\n\0\xff", 20);
    m.story = "{\"peer\":\"127.0.0.1\"}";
    auto ids = lab.store->deliver(m);
    auto stored = lab.store->getMessage("bob@447.edu", ids[0]);
    REQUIRE(stored);
    CHECK(stored->raw == m.raw);
    CHECK(stored->summary.subject == m.subject);
    CHECK(lab.store->messageStory("bob@447.edu", ids[0]) == m.story);
}

TEST_CASE("PostgreSQL: a connection the server dropped is replaced at the next call", "[store][postgres]") {
    if (skipWithoutPostgres()) return;
    LabFixture lab;
    REQUIRE(lab.store->createAccount("ana@447.edu", "h", 1));
    // As a restart of the database server would: every connection of this test's store is cut.
    REQUIRE(postgresStatement("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                              "'maillab' AND datname = current_database() AND pid <> pg_backend_pid()"));
    try {
        lab.store->findAccount("ana@447.edu");  // may fail once: the pooled connection was dead
    } catch (const StoreError& e) {
        CHECK(contains(e.what(), "PostgreSQL database"));
    }
    auto found = lab.store->findAccount("ana@447.edu");
    REQUIRE(found);
    CHECK(found->passwordHash == "h");
}
