// Authentication: registration, verification, the credential cache, lock-out across connections.
#include "fixtures.h"

#include "catch.hpp"
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

TEST_CASE("wrong passwords lock the account for a while, then it opens again", "[auth]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.lockAfterFailures = 3;
    policy.lockSeconds = 60;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    CHECK(lab.auth->authenticate("ana@447.edu", "x").outcome == AuthOutcome::BadCredentials);
    CHECK(lab.auth->authenticate("ana@447.edu", "y").outcome == AuthOutcome::BadCredentials);
    auto third = lab.auth->authenticate("ana@447.edu", "z");
    CHECK(third.outcome == AuthOutcome::Locked);
    CHECK(third.retryAfterSeconds == 60);
    // Even the right password is refused while locked.
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Locked);
    lab.now += 61;
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    CHECK(lab.store->findAccount("ana@447.edu")->failedLogins == 0);
}

TEST_CASE("a success resets the failure count", "[auth]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.lockAfterFailures = 3;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    lab.auth->authenticate("ana@447.edu", "x");
    lab.auth->authenticate("ana@447.edu", "x");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    lab.auth->authenticate("ana@447.edu", "x");
    lab.auth->authenticate("ana@447.edu", "x");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
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

TEST_CASE("a cached success skips the database until its TTL; a changed hash is seen after it", "[auth][cache]") {
    AuthPolicy policy = maillab::testing::fastPolicy();
    policy.cacheTtlSeconds = 60;
    LabFixture lab(policy);
    lab.addUser("ana@447.edu", "11111447");
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);
    REQUIRE(lab.setPasswordInDatabase("ana@447.edu", "22222447"));
    CHECK(lab.auth->authenticate("ana@447.edu", "11111447").outcome == AuthOutcome::Ok);  // from the cache
    lab.now += 61;
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
