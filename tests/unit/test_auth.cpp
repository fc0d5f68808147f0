// Authentication: registration, verification, the credential cache, lock-out across connections.
#include "fixtures.h"
#include "racing_store.h"

#include "catch.hpp"

#include <atomic>
#include <functional>
#include <utility>
#include <thread>
#include <vector>

using namespace maillab;
using maillab::testing::LabFixture;

namespace {
// fastPolicy() with the settings a test is about changed by `change`.
template <typename Change>
AuthPolicy fastPolicyWith(Change change) {
    AuthPolicy policy = maillab::testing::fastPolicy();
    change(policy);
    return policy;
}

// A lab where ana@447.edu has the password 11111447.
struct AnaLab : LabFixture {
    explicit AnaLab(AuthPolicy policy = maillab::testing::fastPolicy()) : LabFixture(policy) {
        addUser("ana@447.edu", "11111447");
    }
};

// Another process (maillab-admin, the other server) changes ana's password from 11111447 to 22222447
// in the database: `server` refuses the old one and takes the new one at once, whatever it has cached.
void checkPasswordChangeSeen(LabFixture& lab, Authenticator& server, bool mayRegister = true,
                             const std::string& source = "") {
    REQUIRE(lab.setPasswordInDatabase("ana@447.edu", "22222447"));
    CHECK(server.authenticate("ana@447.edu", "11111447", mayRegister, source).outcome == AuthOutcome::BadCredentials);
    CHECK(server.authenticate("ana@447.edu", "22222447", mayRegister, source).outcome == AuthOutcome::Ok);
}
}  // namespace

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

TEST_CASE("a password with NULs after it is not the password (HMAC's zero-padded key would say it is)", "[auth]") {
    LabFixture lab;
    auto r = lab.auth->authenticate("ana", "");
    REQUIRE(r.outcome == AuthOutcome::Registered);
    CHECK(lab.auth->authenticate("ana@447.edu", r.newPassword + std::string(1, '\0')).outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", r.newPassword + std::string(3, '\0')).outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", r.newPassword).outcome == AuthOutcome::Ok);
    CHECK(lab.auth->authenticate("ana@447.edu", r.newPassword + std::string(1, '\0')).outcome == AuthOutcome::BadCredentials);
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
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.guessBurst = 3; p.guessRefillSeconds = 60; });
    AnaLab lab(policy);
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
    // No cache: every check reaches the budget.
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.guessBurst = 2; p.cacheTtlSeconds = 0; });
    AnaLab lab(policy);
    for (int i = 0; i < 10; ++i) CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    CHECK(lab.auth->authenticate("ana@447.edu", "x").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
}

TEST_CASE("others' failures do not shut out the owner at an address she logged in from", "[auth][budget]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.guessBurst = 3; p.guessRefillSeconds = 3600; });
    AnaLab lab(policy);
    REQUIRE(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.0.0.5").outcome == AuthOutcome::Ok);
    // An attacker from many other addresses spends the account's shared budget...
    for (int i = 0; i < 20; ++i)
        lab.auth->authenticate("ana@447.edu", "guess" + std::to_string(i), false, "10.9.0." + std::to_string(i));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.9.0.99").outcome == AuthOutcome::Throttled);
    // ...and the owner, from her address, still gets in (a new process: no cache).
    Authenticator fresh(*lab.store, policy, [&] { return lab.now; });
    CHECK(fresh.authenticate("ana@447.edu", "11111447", false, "10.0.0.5").outcome == AuthOutcome::Ok);
    CHECK(fresh.authenticate("ana@447.edu", "11111447", false, "::ffff:10.0.0.5").outcome == AuthOutcome::Ok);
    // The record tells her own failures from the others' (the class board's hint depends on it).
    AuthResult hers = fresh.authenticate("ana@447.edu", "typo", false, "10.0.0.5");
    CHECK((hers.outcome == AuthOutcome::BadCredentials && hers.knownAccount && hers.knownSource));
    AuthResult theirs = fresh.authenticate("ana@447.edu", "guess", false, "10.9.0.1");
    CHECK((theirs.outcome == AuthOutcome::Throttled && theirs.knownAccount && !theirs.knownSource));
}

TEST_CASE("parallel guesses never get more checks than the budget", "[auth][budget]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.guessBurst = 7; p.guessRefillSeconds = 3600; });
    AnaLab lab(policy);
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
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.cacheTtlSeconds = 600; });
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
    AnaLab lab;
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);  // cached
    CHECK(lab.auth->authenticate("ana@447.edu", "11111448").outcome == AuthOutcome::BadCredentials);
    // The wrong password above dropped the cache entry: a hash changed in the database is seen at once.
    checkPasswordChangeSeen(lab, *lab.auth);
}

TEST_CASE("a changed password is seen at once, cache or not", "[auth][cache]") {
    for (int64_t cacheTtl : {0, 600}) {
        CAPTURE(cacheTtl);
        AuthPolicy policy = fastPolicyWith([cacheTtl](AuthPolicy& p) { p.cacheTtlSeconds = cacheTtl; });
        AnaLab lab(policy);
        CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
        checkPasswordChangeSeen(lab, *lab.auth);
    }
}

TEST_CASE("the cache expires after its TTL", "[auth][cache]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.cacheTtlSeconds = 10; });
    AnaLab lab(policy);
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
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.guessBurst = 1; p.guessRefillSeconds = 3600; });
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

using maillab::testing::RacingStore;

TEST_CASE("a cached password is never compared once the budget is spent, even by a login that read it before",
          "[auth][budget][cache]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "12345447");
    RacingStore racing(*lab.store);
    Authenticator server(racing, lab.auth->policy(), [&] { return lab.now; });
    // The owner logs in through this server from her address: her password is cached there.
    REQUIRE(server.authenticate("ana@447.edu", "12345447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    // A guesser elsewhere spends the shared bucket down to its last guess.
    for (int i = 0; i < lab.auth->policy().guessBurst - 1; ++i)
        REQUIRE(lab.auth->authenticate("ana@447.edu", "00000447", false, "10.0.0.66").outcome == AuthOutcome::BadCredentials);
    // One of the guesser's logins begins (its first read; one guess left); before it compares, a
    // parallel wrong guess spends that last one. The right password must not then be accepted from
    // the cache: the budget is read under the account's lock, after anything read before it.
    racing.hook = [&] {
        CHECK(lab.auth->authenticate("ana@447.edu", "99999447", false, "10.0.0.66").outcome == AuthOutcome::BadCredentials);
    };
    CHECK(server.authenticate("ana@447.edu", "12345447", false, "10.0.0.66").outcome == AuthOutcome::Throttled);
    CHECK_FALSE(racing.hook);  // the parallel guess did run in between
    // The owner, from her own address, is not shut out.
    CHECK(server.authenticate("ana@447.edu", "12345447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
}

TEST_CASE("a name with no account is refused exactly as an account is, budget included", "[auth][budget]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "12345447");
    std::vector<AuthOutcome> known, unknown;
    for (int i = 0; i < lab.auth->policy().guessBurst + 2; ++i) {
        known.push_back(lab.auth->authenticate("ana@447.edu", "00000447", false, "198.18.0.66").outcome);
        unknown.push_back(lab.auth->authenticate("nobody@447.edu", "00000447", false, "198.18.0.66").outcome);
    }
    CHECK(known == unknown);
    CHECK(known.back() == AuthOutcome::Throttled);
}

TEST_CASE("registrations are limited per address (not on loopback), and to the roster when set", "[auth][register]") {
    LabFixture lab;
    int burst = lab.auth->policy().registrationBurst;
    for (int i = 0; i < burst; ++i)
        CHECK(lab.auth->authenticate("s" + std::to_string(i), "", true, "198.18.0.11").outcome == AuthOutcome::Registered);
    AuthResult over = lab.auth->authenticate("extra", "", true, "198.18.0.11");
    CHECK(over.outcome == AuthOutcome::RegistrationLimited);
    CHECK(over.retryAfterSeconds > 0);
    CHECK_FALSE(lab.store->findAccount("extra@447.edu"));
    CHECK(lab.auth->authenticate("extra", "", true, "198.18.0.12").outcome == AuthOutcome::Registered);  // another address
    for (int i = 0; i < burst + 2; ++i)
        CHECK(lab.auth->authenticate("local" + std::to_string(i), "", true, "127.0.0.1").outcome == AuthOutcome::Registered);
    lab.auth->restrictRegistrationTo({"S7@447.edu"});
    CHECK(lab.auth->authenticate("carol", "", true, "198.18.0.13").outcome == AuthOutcome::NotOnRoster);
    CHECK(lab.auth->authenticate("s7", "", true, "198.18.0.13").outcome == AuthOutcome::Registered);
}

TEST_CASE("the instructor's password reset also refills the account's budgets", "[auth][budget]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "12345447");
    while (lab.auth->authenticate("ana@447.edu", "00000447", false, "198.18.0.66").outcome != AuthOutcome::Throttled) {
    }
    CHECK(lab.auth->authenticate("ana@447.edu", "12345447", false, "198.18.0.20").outcome == AuthOutcome::Throttled);
    lab.store->setPasswordHash("ana@447.edu", hashPassword("54321447", ScryptParams{1024, 8, 1}));
    lab.store->clearGuessBudgets("ana@447.edu");
    CHECK(lab.auth->authenticate("ana@447.edu", "54321447", false, "198.18.0.20").outcome == AuthOutcome::Ok);
}

TEST_CASE("on a full disk logins go on, and guesses are still paid for (from memory)", "[auth][budget][disk]") {
    LabFixture lab;
    lab.addUser("ana@447.edu", "12345447");
    RacingStore disk(*lab.store);
    disk.diskFull = true;
    Authenticator server(disk, lab.auth->policy(), [&] { return lab.now; });
    CHECK(server.authenticate("ana@447.edu", "12345447", false, "198.18.0.20").outcome == AuthOutcome::Ok);
    int checked = 0;
    while (server.authenticate("ana@447.edu", "00000447", false, "198.18.0.66").outcome == AuthOutcome::BadCredentials)
        ++checked;
    CHECK(checked == lab.auth->policy().guessBurst);
}

TEST_CASE("a fresh cached login reads no account, and another process's change still ends it at once",
          "[auth][cache][generation]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.cacheTtlSeconds = 600; });
    AnaLab lab(policy);
    RacingStore counting(*lab.store);
    Authenticator server(counting, policy, [&] { return lab.now; });
    // Checked by the slow hash, then once against the account from the cache: fresh from then on.
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    int reads = counting.loginStateReads;
    for (int i = 0; i < 5; ++i)
        REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    CHECK(counting.loginStateReads == reads);  // no database read of the account
    // Another address is not fresh: its budget was never read for this entry.
    CHECK(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.2").outcome == AuthOutcome::Ok);
    CHECK(counting.loginStateReads == reads + 1);  // one read, under the account's lock (issue 22: was two)
    // A wrong password is never accepted, fresh or not.
    CHECK(server.authenticate("ana@447.edu", "11111448", false, "10.0.0.2").outcome == AuthOutcome::BadCredentials);
    // Another process (maillab-admin, the other server, another instance) changes the password.
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    checkPasswordChangeSeen(lab, server, false, "10.0.0.1");
    // ...or removes the account.
    REQUIRE(server.authenticate("ana@447.edu", "22222447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    REQUIRE(lab.deleteAccountInDatabase("ana@447.edu"));
    CHECK(server.authenticate("ana@447.edu", "22222447", false, "10.0.0.1").outcome == AuthOutcome::BadCredentials);
}

TEST_CASE("a fresh cached login stays fresh from each of the owner's recent addresses, up to kCheckedSources",
          "[auth][cache][generation]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.cacheTtlSeconds = 600; });
    AnaLab lab(policy);
    RacingStore counting(*lab.store);
    Authenticator server(counting, policy, [&] { return lab.now; });
    auto from = [](int i) { return "10.0.1." + std::to_string(i); };
    const int recent = 32;  // Authenticator::kCheckedSources
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(0)).outcome == AuthOutcome::Ok);
    for (int i = 0; i < recent; ++i)  // each address checked once against the account and its budget
        REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(i)).outcome == AuthOutcome::Ok);
    int reads = counting.loginStateReads;
    // Taking turns (a laptop and a phone, connections from a class's NAT addresses): no read.
    for (int round = 0; round < 3; ++round)
        for (int i = 0; i < recent; ++i)
            REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(i)).outcome == AuthOutcome::Ok);
    CHECK(counting.loginStateReads == reads);
    // One more address is checked, and the one checked longest ago is no longer fresh.
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(recent)).outcome == AuthOutcome::Ok);
    int fullPath = counting.loginStateReads - reads;
    CHECK(fullPath > 0);
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(0)).outcome == AuthOutcome::Ok);
    CHECK(counting.loginStateReads == reads + 2 * fullPath);
    // The newest are still fresh.
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(recent)).outcome == AuthOutcome::Ok);
    REQUIRE(server.authenticate("ana@447.edu", "11111447", false, from(recent - 1)).outcome == AuthOutcome::Ok);
    CHECK(counting.loginStateReads == reads + 2 * fullPath);
}

TEST_CASE("a fresh cached login stops once another process's guesses spend its budget", "[auth][cache][generation]") {
    AuthPolicy policy = fastPolicyWith([](AuthPolicy& p) { p.cacheTtlSeconds = 600; p.guessRefillSeconds = 1000000; });
    AnaLab lab(policy);
    Authenticator server(*lab.store, policy, [&] { return lab.now; });
    for (int i = 0; i < 3; ++i)
        REQUIRE(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Ok);
    // A guesser on the same address, through another process's store, spends that address's budget.
    auto other = lab.anotherStore();
    Authenticator guesser(*other, policy, [&] { return lab.now; });
    for (int i = 0; i < policy.guessBurst; ++i)
        REQUIRE(guesser.authenticate("ana@447.edu", "0000044" + std::to_string(i), false, "10.0.0.1").outcome ==
                AuthOutcome::BadCredentials);
    // The cached password is no longer compared for free: the budget is read, and it is empty.
    CHECK(server.authenticate("ana@447.edu", "11111447", false, "10.0.0.1").outcome == AuthOutcome::Throttled);
}

TEST_CASE("an event loop's login never waits: a cached password at once, anything else handed back", "[auth][events]") {
    AnaLab lab;
    // Not in the cache: a slow hash (and a guess) would follow, so nothing is done.
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("ana@447.edu", "11111447", "10.0.0.5"));
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("ana@447.edu", "wrong", "10.0.0.5"));
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("nobody@447.edu", "x", "10.0.0.5"));
    REQUIRE(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.0.0.5").outcome == AuthOutcome::Ok);
    // Cached and checked from a trusted source: answered without waiting, and fresh afterwards.
    for (int i = 0; i < 3; ++i) {
        auto r = lab.auth->authenticateWithoutWaiting("ana@447.edu", "11111447", "10.0.0.5");
        REQUIRE(r);
        CHECK(r->outcome == AuthOutcome::Ok);
    }
    // From a source not yet trusted, the login would write (trustSource): handed back, then done the
    // full way, after which that source too is answered at once.
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("ana@447.edu", "11111447", "10.0.0.6"));
    REQUIRE(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.0.0.6").outcome == AuthOutcome::Ok);
    auto again = lab.auth->authenticateWithoutWaiting("ana@447.edu", "11111447", "10.0.0.6");
    REQUIRE(again);
    CHECK(again->outcome == AuthOutcome::Ok);
    // The account's check held by another thread (a wrong password's slow hash): tests/e2e/test_event_core_abuse.py.

    // Its budget from 10.0.0.6 spent: the right password is handed back as a wrong one is, never
    // answered Throttled at once (a loop's quick refusal would tell a guesser the password was right).
    for (int i = 0; i < lab.auth->policy().guessBurst; ++i)
        REQUIRE(lab.auth->authenticate("ana@447.edu", "00000447", false, "10.0.0.6").outcome == AuthOutcome::BadCredentials);
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("ana@447.edu", "11111447", "10.0.0.6"));
    CHECK_FALSE(lab.auth->authenticateWithoutWaiting("ana@447.edu", "00000447", "10.0.0.6"));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447", false, "10.0.0.6").outcome == AuthOutcome::Throttled);
}
