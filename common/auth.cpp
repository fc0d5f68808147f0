// Authenticator: registration, verification with a cache of verified credentials, lock-out.
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <stdexcept>

namespace maillab {

bool isValidLocalPart(const std::string& localPart) {
    if (localPart.empty() || localPart.size() > 64) return false;  // RFC 5321 4.5.3.1.1
    if (localPart.front() == '.' || localPart.back() == '.') return false;
    return std::all_of(localPart.begin(), localPart.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '+';
    });
}

Authenticator::Authenticator(Store& store, AuthPolicy policy, Clock clock)
    : store_(store), policy_(std::move(policy)), clock_(std::move(clock)) {
    if (!clock_) clock_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
    if (RAND_bytes(cacheKey_.data(), static_cast<int>(cacheKey_.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
}

std::string Authenticator::normalizeUser(const std::string& user) const {
    std::string email = user;
    std::transform(email.begin(), email.end(), email.begin(), [](unsigned char c) { return std::tolower(c); });
    if (!email.empty() && email.find('@') == std::string::npos) email += "@" + policy_.labDomain;
    return email;
}

bool Authenticator::isLabAddress(const std::string& address) const {
    auto at = address.rfind('@');
    if (at == std::string::npos) return false;
    std::string domain = address.substr(at + 1);
    std::transform(domain.begin(), domain.end(), domain.begin(), [](unsigned char c) { return std::tolower(c); });
    return domain == policy_.labDomain && isValidLocalPart(address.substr(0, at));
}

Authenticator::Mac Authenticator::cacheMac(const std::string& email, const std::string& password,
                                           const std::string& hash) const {
    // Keyed by the stored hash too, so a changed password invalidates the entry by itself.
    std::string input = email + '\0' + password + '\0' + hash;
    Mac mac{};
    unsigned int length = 0;
    HMAC(EVP_sha256(), cacheKey_.data(), static_cast<int>(cacheKey_.size()),
         reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(), &length);
    OPENSSL_cleanse(input.data(), input.size());
    return mac;
}

bool Authenticator::cachedOk(const std::string& email, const std::string& password, int64_t now) {
    if (policy_.cacheTtlSeconds <= 0) return false;
    CacheEntry entry;
    {
        std::lock_guard<std::mutex> lock(cacheMutex_);
        auto it = cache_.find(email);
        if (it == cache_.end() || it->second.expires <= now) return false;
        entry = it->second;
    }
    Mac mac = cacheMac(email, password, entry.hash);
    return CRYPTO_memcmp(entry.mac.data(), mac.data(), mac.size()) == 0;
}

void Authenticator::remember(const Account& account, const std::string& password, int64_t now) {
    if (policy_.cacheTtlSeconds <= 0) return;
    Mac mac = cacheMac(account.email, password, account.passwordHash);
    std::lock_guard<std::mutex> lock(cacheMutex_);
    cache_[account.email] = CacheEntry{mac, account.passwordHash, now + policy_.cacheTtlSeconds};
}

AuthResult Authenticator::fail(const Account& account, int64_t now) {
    int failures = account.failedLogins + 1;
    int64_t lockedUntil = 0;
    if (policy_.lockAfterFailures > 0 && failures >= policy_.lockAfterFailures) {
        lockedUntil = now + policy_.lockSeconds;
        failures = 0;  // a new count starts when the lock expires
    }
    store_.recordLoginFailure(account.email, failures, lockedUntil);
    {
        std::lock_guard<std::mutex> lock(cacheMutex_);
        cache_.erase(account.email);
    }
    AuthResult result{AuthOutcome::BadCredentials, account.email, "", 0};
    if (lockedUntil) {
        result.outcome = AuthOutcome::Locked;
        result.retryAfterSeconds = lockedUntil - now;
    }
    return result;
}

AuthResult Authenticator::authenticate(const std::string& user, const std::string& password, bool mayRegister) {
    const int64_t now = clock_();
    const std::string email = normalizeUser(user);
    // Dovecot-style: a password verified within the TTL is accepted without the database or the
    // slow hash. Only successes are cached and any failure drops the entry, so every guess still
    // reaches the database and counts towards the lock-out.
    if (!password.empty() && cachedOk(email, password, now)) return AuthResult{AuthOutcome::Ok, email, "", 0};
    std::optional<Account> account = store_.findAccount(email);

    if (!account) {
        if (mayRegister && password.empty() && policy_.registrationEnabled && isLabAddress(email)) {
            std::string newPassword = generateLabPassword();
            std::string hash = hashPassword(newPassword, policy_.scrypt);
            if (store_.createAccount(email, hash, now)) {
                remember(Account{email, hash, now, 0, 0}, newPassword, now);  // no need to read it back
                return AuthResult{AuthOutcome::Registered, email, newPassword, 0};
            }
        }
        // Spend the same slow hash as a real check so timing does not tell which addresses exist.
        verifyPassword(password, "scrypt$" + std::to_string(policy_.scrypt.n) + "$" + std::to_string(policy_.scrypt.r) +
                                     "$" + std::to_string(policy_.scrypt.p) + "$AAAAAAAAAAAAAAAAAAAAAA==$" +
                                     std::string(43, 'A') + "=");
        return AuthResult{AuthOutcome::BadCredentials, email, "", 0};
    }

    if (account->lockedUntil > now)
        return AuthResult{AuthOutcome::Locked, email, "", account->lockedUntil - now};

    if (!password.empty() && verifyPassword(password, account->passwordHash)) {
        remember(*account, password, now);
        if (account->failedLogins != 0 || account->lockedUntil != 0) store_.clearLoginFailures(email);
        return AuthResult{AuthOutcome::Ok, email, "", 0};
    }
    return fail(*account, now);
}

}  // namespace maillab
