// The store, on SQLite (and on PostgreSQL too with MAILLAB_TEST_PG_URL: see fixtures.h): accounts,
// delivery to several mailboxes, listing, lookup, schema version.
#include "fixtures.h"
#include "../../common/lab/group_commit.h"

#include "catch.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <mutex>
#include <set>
#include <sqlite3.h>

#include <thread>

using namespace maillab;
using maillab::testing::LabFixture;

namespace {
NewMessage message(const std::string& subject, std::vector<std::string> rcpts) {
    return maillab::testing::sampleMessage(subject, std::move(rcpts));
}
}  // namespace

TEST_CASE("accounts are created once and found case-sensitively by their normalized name", "[store]") {
    LabFixture lab;
    CHECK(lab.store->createAccount("ana@447.edu", "h1", 5));
    CHECK_FALSE(lab.store->createAccount("ana@447.edu", "h2", 6));
    auto a = lab.store->findAccount("ana@447.edu");
    REQUIRE(a);
    CHECK(a->passwordHash == "h1");
    CHECK(a->createdAt == 5);
    CHECK_FALSE(lab.store->findAccount("bob@447.edu"));
}

TEST_CASE("guess budgets are token buckets kept in the database", "[store]") {
    LabFixture lab;
    lab.store->createAccount("ana@447.edu", "h", 1);
    CHECK(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 100) == 0);
    CHECK(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 100) == 0);
    CHECK(std::lround(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 100)) == 10);
    CHECK(std::lround(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 105)) == 5);
    CHECK(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 110) == 0);
    lab.store->returnGuess("acct:ana@447.edu", 2);
    CHECK(lab.store->takeGuess("acct:ana@447.edu", 2, 10, 110) == 0);
    CHECK_FALSE(lab.store->isTrustedSource("ana@447.edu", "127.0.0.1"));
    lab.store->trustSource("ana@447.edu", "127.0.0.1", 5);
    CHECK(lab.store->isTrustedSource("ana@447.edu", "127.0.0.1"));
    REQUIRE(lab.deleteAccountInDatabase("ana@447.edu"));
    CHECK_FALSE(lab.store->isTrustedSource("ana@447.edu", "127.0.0.1"));  // forgotten with the account
}

TEST_CASE("delivery stores one copy per recipient, listed newest first", "[store]") {
    LabFixture lab;
    auto ids = lab.store->deliver(message("one", {"ana@447.edu", "bob@447.edu"}));
    REQUIRE(ids.size() == 2);
    lab.store->deliver(message("two", {"bob@447.edu"}));
    auto bob = lab.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(bob.size() == 2);
    CHECK(bob[0].subject == "two");
    CHECK(bob[1].subject == "one");
    CHECK(bob[1].size == static_cast<int64_t>(message("one", {}).raw.size()));
    CHECK(lab.store->listMessages("ana@447.edu", 0, 10).size() == 1);
    CHECK(lab.store->listMessages("bob@447.edu", 1, 10).size() == 1);  // paging
    CHECK(lab.store->listMessages("bob@447.edu", 0, 1).size() == 1);

    auto stored = lab.store->getMessage("ana@447.edu", ids[0]);
    REQUIRE(stored);
    CHECK(stored->raw == message("one", {}).raw);
    // A mailbox never reaches another mailbox's copy, even by id.
    CHECK_FALSE(lab.store->getMessage("ana@447.edu", ids[1]));

    auto stats = lab.store->mailboxStats("bob@447.edu");
    CHECK(stats.count == 2);
    CHECK(stats.newestId > ids[1]);
    CHECK(lab.store->mailboxStats("nobody@447.edu").count == 0);
}

TEST_CASE("binary-safe message bodies", "[store]") {
    LabFixture lab;
    NewMessage m = message("bin", {"ana@447.edu"});
    m.raw = std::string("a\0b\xff\r\n", 6);
    auto ids = lab.store->deliver(m);
    CHECK(lab.store->getMessage("ana@447.edu", ids[0])->raw == m.raw);
}

TEST_CASE("concurrent deliveries from many threads all land", "[store]") {
    LabFixture lab;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&lab, t] {
            for (int i = 0; i < 25; ++i) lab.store->deliver(message(std::to_string(t * 100 + i), {"ana@447.edu"}));
        });
    for (auto& th : threads) th.join();
    CHECK(lab.store->mailboxStats("ana@447.edu").count == 200);
}

TEST_CASE("the schema carries its version, and a newer one is refused", "[store]") {
    LabFixture lab;
    if (lab.isPostgres()) {
        WARN("SQLite's PRAGMA user_version: skipped on PostgreSQL (test_postgres_store.cpp has its schema_version)");
        return;
    }
    std::string path = lab.dir.path + "/test.db";
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, nullptr);
    sqlite3_step(st);
    CHECK(sqlite3_column_int(st, 0) == 8);
    sqlite3_finalize(st);
    sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr);
    sqlite3_close(db);
    SqliteOptions options;
    options.path = path;
    CHECK_THROWS_AS(openSqliteStore(options), StoreError);
}

TEST_CASE("a version 1 database is migrated: mailbox totals are computed from the messages", "[store]") {
    maillab::testing::TempDir dir;
    std::string path = dir.path + "/v1.db";
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TABLE accounts(email TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at INTEGER NOT NULL,"
                         " failed_logins INTEGER NOT NULL DEFAULT 0, locked_until INTEGER NOT NULL DEFAULT 0);"
                         "CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT, queue_id TEXT NOT NULL, mailbox TEXT NOT NULL,"
                         " envelope_from TEXT NOT NULL, header_from TEXT NOT NULL, header_to TEXT NOT NULL, subject TEXT NOT NULL,"
                         " date TEXT NOT NULL, received_at INTEGER NOT NULL, size INTEGER NOT NULL, raw BLOB NOT NULL);"
                         "INSERT INTO messages(queue_id, mailbox, envelope_from, header_from, header_to, subject, date, received_at, size, raw)"
                         " VALUES ('a','bob@447.edu','','','','','',10,1,'x'),('b','bob@447.edu','','','','','',20,1,'y');"
                         "PRAGMA user_version=1;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    SqliteOptions options;
    options.path = path;
    auto store = openSqliteStore(options);
    auto stats = store->mailboxStats("bob@447.edu");
    CHECK(stats.count == 2);
    CHECK(stats.newestReceivedAt == 20);
    CHECK(stats.bytes == 2);
    CHECK(stats.changedAt == 20);  // version 8: until a deletion, the newest arrival
    // A message stored before bodies had a table of their own is still read whole.
    auto old = store->getMessage("bob@447.edu", 1);
    REQUIRE(old);
    CHECK(old->raw == "x");
    NewMessage m = message("three", {"bob@447.edu"});
    store->deliver(m);
    CHECK(store->mailboxStats("bob@447.edu").count == 3);
}

TEST_CASE("a message to many mailboxes is stored once; each mailbox counts its bytes", "[store][quota]") {
    LabFixture lab;
    std::vector<std::string> rcpts;
    for (int i = 0; i < 50; ++i) rcpts.push_back("r" + std::to_string(i) + "@447.edu");
    NewMessage m = message("big", rcpts);
    m.raw = "Subject: big\r\n\r\n" + std::string(1 << 20, 'x') + "\r\n";
    auto ids = lab.store->deliver(m);
    REQUIRE(ids.size() == 50);
    CHECK(lab.store->getMessage("r7@447.edu", ids[7])->raw == m.raw);
    CHECK(lab.store->listMessageStarts("r9@447.edu", 0, 10, 12)[0].start == "Subject: big");
    CHECK(lab.store->mailboxStats("r3@447.edu").bytes == static_cast<int64_t>(m.raw.size()));
    // On disk: about one copy (1 MiB), not fifty.
    auto stored = lab.selectValue("sum(length(raw))", "bodies");
    REQUIRE(stored);
    CHECK(*stored == std::to_string(m.raw.size()));
}

TEST_CASE("provenance: an authenticated session is recorded by both randoms, never replaced", "[store][provenance]") {
    LabFixture lab;
    std::string client(64, 'a'), server(64, 'b'), replayedServer(64, 'c');
    CHECK(lab.store->findTlsSessions({client}).empty());
    CHECK(lab.store->recordTlsLogin(TlsSessionRecord{client, server, "smtp", "198.18.0.11:40000", 1795000000, "ana@447.edu"}));
    // The same pair again (a second login in the session, or a replay) changes nothing.
    CHECK_FALSE(lab.store->recordTlsLogin(TlsSessionRecord{client, server, "smtp", "198.18.0.66:1", 1795000999, "mallory@447.edu"}));
    // A replayed client random meets a new server random: a record of its own, the first untouched.
    CHECK(lab.store->recordTlsLogin(TlsSessionRecord{client, replayedServer, "http", "198.18.0.66:2", 1795000500, "mallory@447.edu"}));
    auto found = lab.store->findTlsSessions({client});
    REQUIRE(found.size() == 2);
    for (const auto& r : found) {
        if (r.serverRandom == server) {
            CHECK(r.account == "ana@447.edu");
            CHECK(r.peer == "198.18.0.11:40000");
            CHECK(r.startedAt == 1795000000);
        } else {
            CHECK(r.serverRandom == replayedServer);
            CHECK(r.account == "mallory@447.edu");
        }
    }
    CHECK(lab.store->findTlsSessions({}).size() == 2);
    CHECK(lab.store->forgetTlsSessionsBefore(1795000100) == 1);
    CHECK(lab.store->findTlsSessions({}).size() == 1);
}

TEST_CASE("activity counts add up across batches; roles are set on existing accounts only", "[store][board]") {
    LabFixture lab;
    lab.store->recordActivity({{"ana@447.edu", "login", 2, 100, 110}, {"ana@447.edu", "sent", 1, 105, 105}});
    lab.store->recordActivity({{"ana@447.edu", "login", 1, 90, 200}});
    auto all = lab.store->listActivity();
    REQUIRE(all.size() == 2);
    CHECK(all[0].kind == "login");
    CHECK(all[0].count == 3);
    CHECK(all[0].firstAt == 90);
    CHECK(all[0].lastAt == 200);
    CHECK_FALSE(lab.store->setRole("nobody@447.edu", "instructor"));
    REQUIRE(lab.store->createAccount("teacher@447.edu", "x", 1));
    CHECK(lab.store->setRole("teacher@447.edu", "instructor"));
    CHECK(lab.store->findAccount("teacher@447.edu")->role == "instructor");
}

TEST_CASE("deleteMessages removes a mailbox's own messages in one go; counts, bytes and bodies follow",
          "[store][pop3]") {
    LabFixture lab;
    auto shared = lab.store->deliver(message("shared", {"ana@447.edu", "bob@447.edu"}));
    auto own = lab.store->deliver(message("own", {"bob@447.edu"}));
    auto third = lab.store->deliver(message("third", {"bob@447.edu"}));
    MailboxStats before = lab.store->mailboxStats("bob@447.edu");
    REQUIRE(before.count == 3);
    CHECK(before.changedAt == before.newestReceivedAt);  // an arrival moves it
    const int64_t anaChanged = lab.store->mailboxStats("ana@447.edu").changedAt;
    // Another mailbox's id and an unknown one are skipped, not an error.
    const int64_t deletedFrom = static_cast<int64_t>(std::time(nullptr));
    CHECK(lab.store->deleteMessages("bob@447.edu", {shared[1], own[0], shared[0], 999999}) == 2);
    CHECK(lab.store->deleteMessages("bob@447.edu", {}) == 0);
    MailboxStats bob = lab.store->mailboxStats("bob@447.edu");
    CHECK(bob.count == 1);
    CHECK(bob.bytes == static_cast<int64_t>(message("third", {}).raw.size()));
    // A deletion moves when the mailbox changed (the store's clock): a listing's Last-Modified follows.
    CHECK(bob.changedAt >= deletedFrom);
    CHECK(bob.changedAt <= static_cast<int64_t>(std::time(nullptr)));
    CHECK(bob.newestReceivedAt == before.newestReceivedAt);
    CHECK(lab.store->mailboxStats("ana@447.edu").changedAt == anaChanged);  // ana's mailbox did not change
    CHECK_FALSE(lab.store->getMessage("bob@447.edu", own[0]));
    REQUIRE(lab.store->listMessages("bob@447.edu", 0, 10).size() == 1);
    CHECK(lab.store->listMessages("bob@447.edu", 0, 10)[0].id == third[0]);
    // Ana's copy of the shared message keeps its body; the body of "own" went with its only message.
    CHECK(lab.store->getMessage("ana@447.edu", shared[0])->raw == message("shared", {}).raw);
    CHECK(lab.store->mailboxStats("ana@447.edu").count == 1);
    auto bodies = lab.selectValue("count(*)", "bodies");
    REQUIRE(bodies);
    CHECK(*bodies == "2");  // shared (ana) and third
}

TEST_CASE("group commit: one commit for every waiter, each woken with its own result", "[store][group-commit]") {
    std::atomic<int> commits{0};
    std::atomic<int64_t> nextId{1};
    GroupCommit group([&](const std::vector<GroupCommit::Delivery*>& batch) {
        ++commits;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));  // an fsync: others arrive meanwhile
        bool fail = batch.front()->message->queueId == "FAIL";
        for (GroupCommit::Delivery* d : batch) {
            if (fail) d->error = std::make_exception_ptr(StoreError("disk full"));
            else d->ids.push_back(nextId++);
        }
    });
    const int threads = 16, each = 20;
    std::vector<std::thread> workers;
    std::atomic<int> delivered{0};
    std::vector<std::vector<int64_t>> ids(threads);
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            for (int i = 0; i < each; ++i) {
                NewMessage m;
                m.queueId = "Q" + std::to_string(t);
                auto got = group.deliver(m);
                if (got.size() == 1) ids[t].push_back(got[0]);
                ++delivered;
            }
        });
    for (auto& w : workers) w.join();
    CHECK(delivered == threads * each);
    std::set<int64_t> all;
    for (auto& v : ids) all.insert(v.begin(), v.end());
    CHECK(all.size() == static_cast<size_t>(threads * each));  // every caller its own id, none lost
    CHECK(commits < threads * each);                           // grouped
    // A failed commit fails its caller (and whoever shared it), and the next one goes on.
    NewMessage bad;
    bad.queueId = "FAIL";
    CHECK_THROWS_AS(group.deliver(bad), StoreError);
    NewMessage good;
    good.queueId = "Q";
    CHECK(group.deliver(good).size() == 1);
}

TEST_CASE("group commit: deliverAsync shares commits with deliver and answers each once; stop commits what is left",
          "[store][group-commit]") {
    std::atomic<int> commits{0};
    std::atomic<int64_t> nextId{1};
    std::mutex gateMutex;
    std::atomic<bool> firstBegun{false};
    std::mutex batchesMutex;
    std::vector<std::vector<std::string>> batches;  // the queue ids of each commit
    GroupCommit group([&](const std::vector<GroupCommit::Delivery*>& batch) {
        firstBegun = true;
        std::lock_guard<std::mutex> wait(gateMutex);  // held by the test: the commit waits (a lock, an fsync)
        {
            std::lock_guard<std::mutex> lock(batchesMutex);
            batches.emplace_back();
            for (GroupCommit::Delivery* d : batch) batches.back().push_back(d->message->queueId);
        }
        ++commits;
        bool fail = batch.front()->message->queueId == "FAIL";
        for (GroupCommit::Delivery* d : batch) {
            if (fail) d->error = std::make_exception_ptr(StoreError("disk full"));
            else d->ids.push_back(nextId++);
        }
    });
    std::mutex answersMutex;
    std::vector<std::pair<std::vector<int64_t>, std::string>> answers;
    auto record = [&](std::vector<int64_t> ids, const std::string& error) {
        std::lock_guard<std::mutex> lock(answersMutex);
        answers.emplace_back(std::move(ids), error);
    };
    auto make = [](const std::string& id) {
        auto m = std::make_shared<NewMessage>();
        m->queueId = id;
        return std::shared_ptr<const NewMessage>(m);
    };
    {
        std::unique_lock<std::mutex> gate(gateMutex);
        group.deliverAsync(make("A1"), record);  // the committer takes it alone and waits at the gate
        while (!firstBegun) std::this_thread::yield();
        for (int i = 0; i < 5; ++i) group.deliverAsync(make("A" + std::to_string(i + 2)), record);
        std::vector<int64_t> syncIds;
        std::thread caller([&] {
            NewMessage m;
            m.queueId = "S";
            syncIds = group.deliver(m);  // waits behind the commit, then goes with the five
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        {
            std::lock_guard<std::mutex> lock(answersMutex);
            CHECK(answers.empty());  // returned at once, answered only once committed
        }
        gate.unlock();
        caller.join();
        CHECK(syncIds.size() == 1);
    }
    group.deliverAsync(make("FAIL"), record);
    group.stop();  // commits what it holds before it returns
    std::lock_guard<std::mutex> lock(answersMutex);
    REQUIRE(answers.size() == 7);
    std::set<int64_t> ids;
    for (size_t i = 0; i < 6; ++i) {
        CHECK(answers[i].second.empty());
        REQUIRE(answers[i].first.size() == 1);
        ids.insert(answers[i].first[0]);
    }
    CHECK(ids.size() == 6);
    CHECK(answers[6].first.empty());
    CHECK(answers[6].second == "disk full");
    CHECK(commits <= 4);  // A1 alone, the five (with S, unless S came after), FAIL: not one each
    {
        std::lock_guard<std::mutex> batchesLock(batchesMutex);
        REQUIRE(batches.size() >= 2);
        CHECK(batches[0] == std::vector<std::string>{"A1"});
        std::vector<std::string> second = batches[1];
        second.erase(std::remove(second.begin(), second.end(), "S"), second.end());
        // The five that arrived during the first commit went into the next one together.
        CHECK(second == std::vector<std::string>{"A2", "A3", "A4", "A5", "A6"});
    }
    // After stop nothing can commit it: answered at once with an error, never left waiting.
    std::string late;
    group.deliverAsync(make("late"), [&](std::vector<int64_t>, const std::string& error) { late = error; });
    CHECK(late == "the store is closing");
}

TEST_CASE("group commit: under load a commit waits for company; a message that comes alone is committed at once",
          "[store][group-commit]") {
    std::mutex gateMutex;
    std::atomic<bool> firstBegun{false};
    std::mutex batchesMutex;
    std::vector<std::vector<std::string>> batches;
    GroupCommit* self = nullptr;
    std::vector<std::chrono::microseconds> waits;  // the delays asked for (only the committer thread sleeps)
    std::function<void()> duringWait;              // what "arrives" while the commit waits
    std::atomic<int64_t> nowMicroseconds{1000000};  // the time the group commit sees: moved on by the test
    std::atomic<int> answered{0};
    auto record = [&](std::vector<int64_t>, const std::string&) { ++answered; };
    auto make = [](const std::string& id) {
        auto m = std::make_shared<NewMessage>();
        m->queueId = id;
        return std::shared_ptr<const NewMessage>(m);
    };
    GroupCommit::Clock clock;
    clock.sleep = [&](std::chrono::microseconds d) {
        waits.push_back(d);
        std::function<void()> arrive = std::move(duringWait);  // once
        duringWait = nullptr;
        if (arrive) arrive();
    };
    clock.now = [&] { return std::chrono::steady_clock::time_point(std::chrono::microseconds(nowMicroseconds.load())); };
    GroupCommit group(
        [&](const std::vector<GroupCommit::Delivery*>& batch) {
            firstBegun = true;
            std::lock_guard<std::mutex> wait(gateMutex);
            std::lock_guard<std::mutex> lock(batchesMutex);
            batches.emplace_back();
            for (GroupCommit::Delivery* d : batch) {
                batches.back().push_back(d->message->queueId);
                d->ids.push_back(1);
            }
        },
        CommitDelay{300, 2}, clock);
    self = &group;
    // Waits for the answers (a broken delay fails here rather than hanging the suite).
    auto settle = [&](int n) {
        auto giveUp = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (answered < n && std::chrono::steady_clock::now() < giveUp) std::this_thread::yield();
        REQUIRE(answered == n);
    };
    {
        std::unique_lock<std::mutex> gate(gateMutex);
        group.deliverAsync(make("A1"), record);  // alone: no wait
        while (!firstBegun) std::this_thread::yield();
        group.deliverAsync(make("A2"), record);
        group.deliverAsync(make("A3"), record);
        // The commit after a lone one does not wait either, though two are there.
    }
    settle(3);
    CHECK(waits.empty());
    // The last commit (a moment ago) held two: the next one waits, and what arrives meanwhile joins it.
    duringWait = [&] {
        self->deliverAsync(make("B2"), record);
        self->deliverAsync(make("B3"), record);
    };
    nowMicroseconds += 100;
    group.deliverAsync(make("B1"), record);
    settle(6);
    REQUIRE(waits.size() == 1);
    CHECK(waits[0] == std::chrono::microseconds(300));
    // That commit held three, but it ended a second ago: load gone, C1 is committed at once; and after
    // a commit of one, D1 too.
    nowMicroseconds += 1000000;
    group.deliverAsync(make("C1"), record);
    settle(7);
    CHECK(waits.size() == 1);
    group.deliverAsync(make("D1"), record);
    settle(8);
    CHECK(waits.size() == 1);
    group.stop();
    std::lock_guard<std::mutex> lock(batchesMutex);
    CHECK(batches == std::vector<std::vector<std::string>>{{"A1"}, {"A2", "A3"}, {"B1", "B2", "B3"}, {"C1"}, {"D1"}});
}

TEST_CASE("group commit: a commit delay out of range is refused with the setting's name", "[store][group-commit]") {
    auto none = [](const std::vector<GroupCommit::Delivery*>&) {};
    CHECK_THROWS_WITH(GroupCommit(none, CommitDelay{-1, 2}),
                      "store.commitDelayMicroseconds must be between 0 and 100000 (it is -1); 0 commits at once");
    CHECK_THROWS_AS(GroupCommit(none, CommitDelay{kMostCommitDelayMicroseconds + 1, 2}), StoreError);
    CHECK_THROWS_WITH(GroupCommit(none, CommitDelay{250, 0}), "store.commitDelayAfterBatchOf must be at least 1 (it is 0)");
    CHECK_NOTHROW(GroupCommit(none, CommitDelay{0, 1}));
}

TEST_CASE("SQLite: a mailbox's totals kept in memory end with every change another process commits",
          "[store][generations]") {
    // Two stores on one file are two processes (the sender delivers, the retriever lists): each keeps
    // the totals it read while the mailbox's slot in <db>-generations is unchanged.
    maillab::testing::TempDir dir;
    SqliteOptions options;
    options.path = dir.path + "/shared.db";
    auto sender = openSqliteStore(options);
    auto retriever = openSqliteStore(options);
    CHECK(retriever->mailboxStats("bob@447.edu").count == 0);  // read, and kept
    auto first = sender->deliver(message("one", {"bob@447.edu", "ana@447.edu"}));
    CHECK(retriever->mailboxStats("bob@447.edu").count == 1);
    CHECK(retriever->mailboxStats("bob@447.edu").newestId == first[0]);
    CHECK(retriever->mailboxStats("ana@447.edu").count == 1);
    auto second = sender->deliver(message("two", {"bob@447.edu"}));
    CHECK(retriever->mailboxStats("bob@447.edu").count == 2);
    CHECK(retriever->mailboxStats("bob@447.edu").newestId == second[0]);
    CHECK(sender->deleteMessages("bob@447.edu", {first[0]}) == 1);
    CHECK(retriever->mailboxStats("bob@447.edu").count == 1);
    sender->createAccount("ana@447.edu", "h", 1);
    CHECK(sender->deleteAccount("ana@447.edu"));
    CHECK(retriever->mailboxStats("ana@447.edu").count == 0);

    // A whole-store move into it (maillab-admin migrate) ends every mailbox's kept totals.
    CHECK(retriever->mailboxStats("carol@447.edu").count == 0);
    {
        auto import = sender->beginImport();
        import->addMessage(message("moved", {"carol@447.edu"}), {});
        import->commit();
    }
    CHECK(retriever->mailboxStats("carol@447.edu").count == 1);
}

TEST_CASE("SQLite: a delivery keeps the totals it committed for the next quota check", "[store][generations]") {
    // The sender checks the quota at each RCPT and each message's end: once its own commit has bumped
    // the mailbox's slot, it keeps the totals its transaction left instead of reading them again. Shown
    // by a row changed behind every store's back (no bump): the delivering store does not read it, a
    // store that must read does; the next commit by anyone ends what was kept.
    maillab::testing::TempDir dir;
    SqliteOptions options;
    options.path = dir.path + "/shared.db";
    auto sender = openSqliteStore(options);
    auto other = openSqliteStore(options);
    auto first = sender->deliver(message("one", {"bob@447.edu", "ana@447.edu"}));
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(options.path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "UPDATE mailbox_stats SET count = 99", nullptr, nullptr, nullptr) == SQLITE_OK);
    MailboxStats kept = sender->mailboxStats("bob@447.edu");
    CHECK(kept.count == 1);
    CHECK(kept.newestId == first[0]);
    CHECK(kept.bytes > 0);
    CHECK(sender->mailboxStats("ana@447.edu").count == 1);
    CHECK(other->mailboxStats("bob@447.edu").count == 99);  // it read the row
    REQUIRE(sqlite3_exec(db, "UPDATE mailbox_stats SET count = 1", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    // Another process's commit after ours: its bump ends what we kept.
    auto second = other->deliver(message("two", {"bob@447.edu"}));
    CHECK(sender->mailboxStats("bob@447.edu").count == 2);
    CHECK(sender->mailboxStats("bob@447.edu").newestId == second[0]);
    CHECK(sender->mailboxStats("bob@447.edu").bytes == other->mailboxStats("bob@447.edu").bytes);
}

TEST_CASE("SQLite: an account kept in memory ends with every change another process commits",
          "[store][generations]") {
    // The sender asks at each RCPT whether the mailbox exists; the admin tool (another process)
    // changes accounts behind it.
    maillab::testing::TempDir dir;
    SqliteOptions options;
    options.path = dir.path + "/shared.db";
    auto sender = openSqliteStore(options);
    auto admin = openSqliteStore(options);
    CHECK_FALSE(sender->findAccount("dan@447.edu"));
    REQUIRE(admin->createAccount("dan@447.edu", "h1", 1));
    REQUIRE(sender->findAccount("dan@447.edu"));  // a registration is seen at once (none is kept)
    CHECK(sender->findAccount("dan@447.edu")->passwordHash == "h1");
    REQUIRE(admin->setPasswordHash("dan@447.edu", "h2"));
    CHECK(sender->findAccount("dan@447.edu")->passwordHash == "h2");
    REQUIRE(admin->setRole("dan@447.edu", "instructor"));
    CHECK(sender->findAccount("dan@447.edu")->role == "instructor");
    REQUIRE(admin->deleteAccount("dan@447.edu"));
    CHECK_FALSE(sender->findAccount("dan@447.edu"));
}
