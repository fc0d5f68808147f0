// Authentication shared by the sender (SMTP AUTH) and the retriever (HTTP Basic): lab registration,
// scrypt verification, a Dovecot-style cache of verified credentials, and lock-out of accounts that
// keep failing across connections.
#pragma once
#include "password.h"
#include "store.h"

#include <array>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

namespace maillab {

struct AuthPolicy {
    std::string labDomain = "447.edu";
    bool registrationEnabled = true;
    int lockAfterFailures = 10;      // consecutive failures of one account, across connections
    int64_t lockSeconds = 300;       // how long such an account is refused
    int64_t cacheTtlSeconds = 300;   // how long a verified password skips the slow hash
    ScryptParams scrypt;
};

enum class AuthOutcome {
    Ok,              // existing account, right password
    Registered,      // new lab account created; newPassword holds its password, shown once
    BadCredentials,  // unknown user or wrong password (never says which)
    Locked,          // too many failures; retryAfterSeconds says for how long
};

struct AuthResult {
    AuthOutcome outcome = AuthOutcome::BadCredentials;
    std::string user;         // normalized (lower-case) address
    std::string newPassword;  // with Registered only
    int64_t retryAfterSeconds = 0;
};

class Authenticator {
public:
    using Clock = std::function<int64_t()>;  // Unix seconds; injectable for tests
    Authenticator(Store& store, AuthPolicy policy, Clock clock = nullptr);

    // Registration (see docs/protocol.md): with mayRegister, an address of the lab domain with no
    // account and an EMPTY password registers. A non-empty password never creates an account.
    AuthResult authenticate(const std::string& user, const std::string& password, bool mayRegister = true);

    const AuthPolicy& policy() const { return policy_; }
    bool isLabAddress(const std::string& address) const;
    // Lower-case, and the lab domain appended to a bare local part.
    std::string normalizeUser(const std::string& user) const;

private:
    using Mac = std::array<unsigned char, 32>;
    struct CacheEntry {
        Mac mac;
        std::string hash;  // the stored hash the password was verified against
        int64_t expires;
    };
    Mac cacheMac(const std::string& email, const std::string& password, const std::string& hash) const;
    bool cachedOk(const std::string& email, const std::string& password, int64_t now);
    void remember(const Account& account, const std::string& password, int64_t now);
    AuthResult fail(const Account& account, int64_t now);

    Store& store_;
    AuthPolicy policy_;
    Clock clock_;
    std::array<unsigned char, 32> cacheKey_;  // random per process: the cache holds no reusable secret
    std::mutex cacheMutex_;
    std::unordered_map<std::string, CacheEntry> cache_;
};

// True for a local part the lab accepts: letters, digits, '.', '_', '-', '+', 1 to 64 characters.
bool isValidLocalPart(const std::string& localPart);

}  // namespace maillab
