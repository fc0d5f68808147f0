// Authentication: registration, verification, the credential cache, lock-out across connections.
#include "fixtures.h"

#include "catch.hpp"

#include <atomic>
#include <thread>
#include <vector>
#include <sqlite3.h>

using namespace maillab;
using maillab::testing::LabFixture;

TEST_CASE("an unknown lab address with an empty password registers", "[auth]") {
    LabFixture lab;
    auto r = lab.auth->authenticate("Ana", "");
    REQUIRE(r.outcome == AuthOutcome::Registered);
    CHECK(r.user == "ana@447.edu");
    CHECK(r.newPassword.size() == 8);
    auto stored = lab.store->findAccount("ana@447.edu");
    REQUIRE(stored);
    CHECK(stored->passwordHash.find(r.newPassword) == std::string::npos);
    CHECK(lab.auth->authenticate("ana@447.edu", r.newPassword).outcome == AuthOutcome::Ok);
    // A second registration attempt is a failed login, not a new password.
    CHECK(lab.auth->authenticate("ana@447.edu", "").outcome == AuthOutcome::BadCredentials);
}

TEST_CASE("no registration outside the lab domain, with a password, or when disabled", "[auth]") {
    LabFixture lab;
    CHECK(lab.auth->authenticate("eve@evil.example", "").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("new@447.edu", "guess").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("bad name@447.edu", "").outcome == AuthOutcome::BadCredentials);
    CHECK_FALSE(lab.store->findAccount("new@447.edu"));
    AuthPolicy closed = maillab::testing::fastPolicy();
    closed.registrationEnabled = false;
    LabFixture noRegistration(closed);
    CHECK(noRegistration.auth->authenticate("ana@447.edu", "").outcome == AuthOutcome::BadCredentials);
}

TEST_CASE("the guess budget: burst, then one guess per refill period, nothing checked while spent", "[auth][budget]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 3;
    policy.guessRefillSeconds = 60;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    for (int i = 0; i < 3; ++i)
        CHECK(lab.auth->authenticate("ana@447.edu", "x", false, "127.0.0.9").outcome == AuthOutcome::BadCredentials);
    auto spent = lab.auth->authenticate("ana@447.edu", "y", false, "127.0.0.9");
    CHECK(spent.outcome == AuthOutcome::Throttled);
    CHECK(spent.retryAfterSeconds == 60);
    // Even the right password is not checked from a source with no budget of its own...
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447", false, "127.0.0.10").outcome == AuthOutcome::Throttled);
    // ...until one guess has come back.
    lab.now += 60;
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447", false, "127.0.0.10").outcome == AuthOutcome::Ok);
}

TEST_CASE("a right password costs nothing", "[auth][budget]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 2;
    policy.cacheTtlSeconds = 0;  // every check reaches the budget
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    for (int i = 0; i < 10; ++i) CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    CHECK(lab.auth->authenticate("ana@447.edu", "x").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
}

TEST_CASE("others' failures do not shut out the owner at an address she logged in from", "[auth][budget]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 3;
    policy.guessRefillSeconds = 3600;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    REQUIRE(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.0.0.5").outcome == AuthOutcome::Ok);
    // An attacker from many other addresses spends the account's shared budget...
    for (int i = 0; i < 20; ++i)
        lab.auth->authenticate("ana@447.edu", "guess" + std::to_string(i), false, "10.9.0." + std::to_string(i));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.9.0.99").outcome == AuthOutcome::Throttled);
    // ...and the owner, from her address, still gets in (a new process: no cache).
    Authenticator fresh(*lab.store, policy, [&] { return lab.now; });
    CHECK(fresh.authenticate("ana@447.edu", "11111447", false, "10.0.0.5").outcome == AuthOutcome::Ok);
    CHECK(fresh.authenticate("ana@447.edu", "11111447", false, "::ffff:10.0.0.5").outcome == AuthOutcome::Ok);
}

TEST_CASE("parallel guesses never get more checks than the budget", "[auth][budget]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 7;
    policy.guessRefillSeconds = 3600;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    // Two authenticators over one database file: the two servers.
    Authenticator second(*lab.store, policy, [&] { return lab.now; });
    std::atomic<int> checked{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 16; ++t)
        threads.emplace_back([&, t] {
            Authenticator& auth = t % 2 ? second : *lab.auth;
            for (int i = 0; i < 10; ++i)
                if (auth.authenticate("ana@447.edu", "g" + std::to_string(t * 100 + i), false,
                                      "127.0.1." + std::to_string(t)).outcome == AuthOutcome::BadCredentials)
                    ++checked;
        });
    for (auto& thread : threads) thread.join();
    CHECK(checked.load() == 7);
}

TEST_CASE("role addresses cannot be self-registered", "[auth]") {
    LabFixture lab;
    for (const char* name : {"postmaster", "abuse", "hostmaster", "webmaster", "admin", "root", "security", "noreply"})
        CHECK(lab.auth->authenticate(std::string(name) + "@447.edu", "").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("Postmaster", "").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("postmasters@447.edu", "").outcome == AuthOutcome::Registered);
}

TEST_CASE("a deleted or re-registered account's old password stops working at once", "[auth][cache]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.cacheTtlSeconds = 600;
    LabFixture lab(policy);
    auto first = lab.auth->authenticate("carol@447.edu", "");
    REQUIRE(first.outcome == AuthOutcome::Registered);
    Authenticator otherServer(*lab.store, policy, [&] { return lab.now; });
    REQUIRE(otherServer.authenticate("carol@447.edu", first.newPassword).outcome == AuthOutcome::Ok);  // cached there
    REQUIRE(lab.deleteAccountInDatabase("carol@447.edu"));
    CHECK(lab.auth->authenticate("carol@447.edu", first.newPassword).outcome == AuthOutcome::BadCredentials);
    CHECK(otherServer.authenticate("carol@447.edu", first.newPassword).outcome == AuthOutcome::BadCredentials);
    auto second = lab.auth->authenticate("carol@447.edu", "");
    REQUIRE(second.outcome == AuthOutcome::Registered);
    CHECK(otherServer.authenticate("carol@447.edu", first.newPassword).outcome != AuthOutcome::Ok);
    CHECK(otherServer.authenticate("carol@447.edu", second.newPassword).outcome == AuthOutcome::Ok);
}

TEST_CASE("the credential cache accepts the same password and never a different one", "[auth][cache]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "11111447");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);  // cached
    CHECK(lab.auth->authenticate("ana@447.edu", "11111448").outcome == AuthOutcome::BadCredentials);
    // The wrong password above dropped the cache entry: a hash changed in the database (another
    // process, an admin) is seen at once.
    REQUIRE(lab.setPasswordInDatabase("ana@447.edu", "22222447"));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", "22222447").outcome == AuthOutcome::Ok);
}

TEST_CASE("a changed password is seen at once, cache or not", "[auth][cache]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.cacheTtlSeconds = 600;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    REQUIRE(lab.setPasswordInDatabase("ana@447.edu", "22222447"));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", "22222447").outcome == AuthOutcome::Ok);
}

TEST_CASE("the cache expires after its TTL", "[auth][cache]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.cacheTtlSeconds = 10;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    lab.now += 11;
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);  // slow path again
}

TEST_CASE("address helpers", "[auth]") {
    LabFixture lab;
    CHECK(lab.auth->normalizeUser("Ana") == "ana@447.edu");
    CHECK(lab.auth->normalizeUser("Ana@447.EDU") == "ana@447.edu");
    CHECK(lab.auth->isLabAddress("ana@447.edu"));
    CHECK_FALSE(lab.auth->isLabAddress("ana@448.edu"));
    CHECK(isValidLocalPart("first.last"));
    CHECK_FALSE(isValidLocalPart("a b"));
    CHECK_FALSE(isValidLocalPart(std::string(65, 'a')));
}

TEST_CASE("a cached login also makes its source trusted", "[auth][budget]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.guessBurst = 1;
    policy.guessRefillSeconds = 3600;
    LabFixture lab(policy);
    auto reg = lab.auth->authenticate("dan@447.edu", "", true, "::1");
    REQUIRE(reg.outcome == AuthOutcome::Registered);
    // From another address, answered by the cache: that address is now the owner's too.
    REQUIRE(lab.auth->authenticate("dan@447.edu", reg.newPassword, false, "127.0.0.1").outcome == AuthOutcome::Ok);
    CHECK(lab.store->isTrustedSource("dan@447.edu", "127.0.0.1"));
    CHECK(lab.store->isTrustedSource("dan@447.edu", "::1"));
}

TEST_CASE("hash places: at most N at once, a waiter gets a freed place, past its wait it is refused", "[auth][memory]") {
    maillab::HashPlaces places(2);
    CHECK(places.enter(std::chrono::milliseconds(0)));
    CHECK(places.enter(std::chrono::milliseconds(0)));
    CHECK_FALSE(places.enter(std::chrono::milliseconds(20)));  // both taken: refused after its wait
    std::thread leaver([&] { places.leave(); });
    CHECK(places.enter(std::chrono::seconds(10)));  // the freed place goes to the waiter
    leaver.join();
    places.leave();
    places.leave();
    CHECK(places.enter(std::chrono::milliseconds(0)));
}
