// Moving a class's database into another store (common/lab/migrate_store.h, maillab-admin migrate): on
// SQLite, and on PostgreSQL with MAILLAB_TEST_PG_URL (source and target then two schemas of it).
#include "fixtures.h"

#include "../../common/lab/migrate_store.h"

#include "catch.hpp"

using namespace maillab;
using maillab::testing::LabFixture;

namespace {
NewMessage delivery(const std::string& subject, std::vector<std::string> rcpts, int64_t at) {
    NewMessage m = maillab::testing::sampleMessage(subject, std::move(rcpts));
    m.receivedAt = at;
    m.raw = "Subject: " + subject + "\r\n\r\n8-bit \xe9 and a NUL " + std::string(1, '\0') + "\r\n";
    m.story = "{\"peer\":\"127.0.0.1:4000\",\"subject\":\"" + subject + "\"}";
    return m;
}

// How many texts the store holds (looked at behind the store's back: the interface does not say).
int64_t storedTexts(LabFixture& lab) {
    auto n = lab.selectValue("count(*)", "bodies");
    REQUIRE(n);
    return std::stoll(*n);
}

// A class's store after a few days: three accounts (one instructor), a message to two mailboxes, one
// deleted, a trusted source, provenance and the board's counts.
void fill(LabFixture& lab) {
    lab.addUser("ana@447.edu", "12345447");
    lab.addUser("bob@447.edu", "23456447");
    lab.addUser("carol@447.edu", "34567447");
    lab.store->setRole("carol@447.edu", "instructor");
    lab.store->deliver(delivery("both", {"ana@447.edu", "bob@447.edu"}, 1000));
    auto gone = lab.store->deliver(delivery("gone", {"bob@447.edu"}, 1001));
    lab.store->deliver(delivery("bob only", {"bob@447.edu"}, 1002));
    lab.store->deleteMessages("bob@447.edu", gone);
    lab.store->trustSource("ana@447.edu", "10.0.0.1", 990);
    lab.store->recordTlsLogin(TlsSessionRecord{std::string(64, 'a'), std::string(64, 'b'), "smtp", "10.0.0.1:4000", 995,
                                               "ana@447.edu"});
    lab.store->recordActivity({ActivityCount{"ana@447.edu", "sent", 2, 1000, 1001}});
}
}  // namespace

TEST_CASE("a move copies accounts, mail with its ids and stories, provenance and counts, in one go", "[migrate]") {
    LabFixture source, target;
    fill(source);
    MigrationCounts counts = migrateStore(*source.store, *target.store);
    CHECK(counts.accounts == 3);
    CHECK(counts.accountsKept == 0);
    CHECK(counts.mailboxes == 2);
    CHECK(counts.messages == 3);
    CHECK(counts.bodies == 2);  // "both" once for two mailboxes
    CHECK(counts.trustedSources == 1);
    CHECK(counts.tlsSessions == 1);
    CHECK(counts.activityCounts == 1);
    CHECK(storedTexts(target) == 2);
    CHECK(describeMigration(counts).find("messages 3\n") != std::string::npos);

    // Accounts as they were: hash, creation time, role; the old password works through the target.
    auto before = source.store->listAccounts(), after = target.store->listAccounts();
    REQUIRE(after.size() == before.size());
    for (size_t i = 0; i < before.size(); ++i) {
        CHECK(after[i].email == before[i].email);
        CHECK(after[i].passwordHash == before[i].passwordHash);
        CHECK(after[i].createdAt == before[i].createdAt);
        CHECK(after[i].role == before[i].role);
    }
    CHECK(target.auth->authenticate("bob@447.edu", "23456447", false, "10.0.0.9").outcome == AuthOutcome::Ok);
    CHECK(target.store->isTrustedSource("ana@447.edu", "10.0.0.1"));

    // Every mailbox: the same messages under the same ids, bytes and stories.
    for (const std::string mailbox : {"ana@447.edu", "bob@447.edu"}) {
        auto a = source.store->listMessages(mailbox, 0, 100), b = target.store->listMessages(mailbox, 0, 100);
        REQUIRE(a.size() == b.size());
        for (size_t i = 0; i < a.size(); ++i) {
            CHECK(b[i].id == a[i].id);
            CHECK(b[i].subject == a[i].subject);
            CHECK(b[i].receivedAt == a[i].receivedAt);
            CHECK(b[i].size == a[i].size);
            CHECK(target.store->getMessage(mailbox, b[i].id)->raw == source.store->getMessage(mailbox, a[i].id)->raw);
            CHECK(*target.store->messageStory(mailbox, b[i].id) == *source.store->messageStory(mailbox, a[i].id));
        }
        CHECK(target.store->mailboxStats(mailbox).bytes == source.store->mailboxStats(mailbox).bytes);
        CHECK(target.store->mailboxStats(mailbox).newestId == source.store->mailboxStats(mailbox).newestId);
    }
    CHECK(target.store->findTlsSessions({})[0].account == "ana@447.edu");
    CHECK(target.store->listActivity()[0].count == 2);

    // The next delivery in the target is numbered past the moved messages.
    int64_t newest = source.store->mailboxStats("bob@447.edu").newestId;
    CHECK(target.store->deliver(delivery("after", {"bob@447.edu"}, 2000))[0] > newest);
}

TEST_CASE("a target holding anything is refused unless told; told, its own accounts are kept", "[migrate]") {
    LabFixture source, target;
    fill(source);
    target.addUser("bob@447.edu", "99999447");
    target.store->deliver(delivery("already", {"bob@447.edu"}, 500));
    CHECK_THROWS_AS(migrateStore(*source.store, *target.store), MigrationRefused);
    CHECK(target.store->listAccounts().size() == 1);  // nothing written

    MigrationOptions into;
    into.intoNonEmpty = true;
    MigrationCounts counts = migrateStore(*source.store, *target.store, into);
    CHECK(counts.accounts == 2);
    CHECK(counts.accountsKept == 1);
    CHECK(target.auth->authenticate("bob@447.edu", "99999447", false, "10.0.0.9").outcome == AuthOutcome::Ok);
    // Bob's mailbox there: his own message, then the two moved ones, numbered by the target in order.
    auto bob = target.store->listMessages("bob@447.edu", 0, 10);
    REQUIRE(bob.size() == 3);
    CHECK(bob[0].subject == "bob only");
    CHECK(bob[1].subject == "both");
    CHECK(bob[2].subject == "already");
    CHECK(bob[0].id > bob[1].id);
}

TEST_CASE("an import not committed leaves nothing; a clash rolls the whole import back", "[migrate]") {
    LabFixture target;
    {
        auto import = target.store->beginImport();
        CHECK(import->addAccount(Account{"ana@447.edu", "hash", 1, ""}));
        CHECK_FALSE(import->addAccount(Account{"ana@447.edu", "other", 2, ""}));  // taken: first one kept
        import->addMessage(delivery("x", {"ana@447.edu"}, 1), {7});
    }  // destroyed without commit
    CHECK(target.store->listAccounts().empty());
    CHECK(target.store->listMailboxes().empty());
    {
        auto import = target.store->beginImport();
        import->addAccount(Account{"ana@447.edu", "hash", 1, ""});
        import->addMessage(delivery("x", {"ana@447.edu"}, 1), {7});
        CHECK_THROWS_AS(import->addMessage(delivery("y", {"ana@447.edu"}, 1), {7}), StoreError);  // id 7 again
        CHECK_THROWS_AS(import->addMessage(delivery("z", {"ana@447.edu", "bob@447.edu"}, 1), {8}), StoreError);
    }
    CHECK(target.store->listAccounts().empty());
    CHECK(target.store->mailboxStats("ana@447.edu").count == 0);
    // The store is usable afterwards (its connection went back clean, or was dropped).
    CHECK(target.store->createAccount("ana@447.edu", "hash", 1));
}
