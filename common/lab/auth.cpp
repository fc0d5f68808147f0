// Authenticator: registration, verification with a cache of verified credentials, the guess budget.
#include "auth.h"
#include "../net/text.h"

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <iterator>
#include <condition_variable>
#include <thread>
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

bool HashPlaces::enter(std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!freed_.wait_for(lock, wait, [&] { return free_ > 0; })) return false;
    --free_;
    return true;
}

void HashPlaces::leave() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        ++free_;
    }
    freed_.notify_one();
}

namespace {
// Holds one hash place for the length of one slow hash.
struct HashPlace {
    HashPlace(HashPlaces& places, int64_t waitMs) : places_(places) {
        if (!places_.enter(std::chrono::milliseconds(waitMs)))
            throw AuthBusy("every password-hash place is busy; try again in a moment");
    }
    ~HashPlace() { places_.leave(); }
    HashPlace(const HashPlace&) = delete;
    HashPlace& operator=(const HashPlace&) = delete;
    HashPlaces& places_;
};
}  // namespace

Authenticator::Authenticator(Store& store, AuthPolicy policy, Clock clock)
    : store_(store), policy_(std::move(policy)), clock_(std::move(clock)) {
    int places = policy_.maxConcurrentHashes > 0 ? policy_.maxConcurrentHashes
                                                 : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    hashPlaces_ = std::make_unique<HashPlaces>(places);
    if (!clock_) clock_ = [] { return static_cast<int64_t>(std::time(nullptr)); };
    if (RAND_bytes(cacheKey_.data(), static_cast<int>(cacheKey_.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
}

std::string Authenticator::normalizeUser(const std::string& user) const {
    std::string email = text::lowerCase(user);
    if (!email.empty() && email.find('@') == std::string::npos) email += "@" + policy_.labDomain;
    return email;
}

bool Authenticator::isLabAddress(const std::string& address) const {
    auto at = address.rfind('@');
    if (at == std::string::npos) return false;
    std::string domain = text::lowerCase(address.substr(at + 1));
    return domain == policy_.labDomain && isValidLocalPart(address.substr(0, at));
}

std::string Authenticator::nameToShow(const std::string& user) const {
    return isLabAddress(user) ? user.substr(0, user.rfind('@')) : "<you>";
}

namespace {
// One HMAC context per thread, set up once with the cache key: HMAC() one-shot fetched SHA-256 and
// built a context on every call. The key is per Authenticator, so a thread that meets another one
// (the tests run several) sets it up again.
struct ThreadMac {
    EVP_MAC_CTX* ctx = nullptr;
    bool keyed = false;
    std::array<unsigned char, 32> key{};  // compared by value: a new Authenticator may reuse an address
    ThreadMac() = default;
    ~ThreadMac() { EVP_MAC_CTX_free(ctx); }
    ThreadMac(const ThreadMac&) = delete;
    ThreadMac& operator=(const ThreadMac&) = delete;
};
}  // namespace

Authenticator::Mac Authenticator::cacheMac(const std::string& email, const std::string& password,
                                           const std::string& hash) const {
    // Keyed by the stored hash too, so a changed password invalidates the entry by itself.
    static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    static thread_local ThreadMac mine;
    Mac mac{};
    size_t length = 0;
    bool ok = hmac != nullptr;
    if (ok && !mine.ctx) ok = (mine.ctx = EVP_MAC_CTX_new(hmac)) != nullptr;
    if (ok) {
        char digest[] = "SHA256";
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
        // A null key starts again with the key already set (EVP_MAC_init(3)).
        bool sameKey = mine.keyed && mine.key == cacheKey_;
        ok = EVP_MAC_init(mine.ctx, sameKey ? nullptr : cacheKey_.data(), sameKey ? 0 : cacheKey_.size(),
                          sameKey ? nullptr : params) == 1;
    }
    mine.keyed = ok;  // after a failure, set up afresh next time
    if (ok) mine.key = cacheKey_;
    static const unsigned char zero = 0;
    auto add = [&](const void* data, size_t size) {
        ok = ok && EVP_MAC_update(mine.ctx, static_cast<const unsigned char*>(data), size) == 1;
    };
    add(email.data(), email.size());
    add(&zero, 1);
    add(password.data(), password.size());
    add(&zero, 1);
    add(hash.data(), hash.size());
    ok = ok && EVP_MAC_final(mine.ctx, mac.data(), &length, mac.size()) == 1 && length == mac.size();
    if (!ok) {
        mine.keyed = false;
        throw std::runtime_error("HMAC-SHA256 of the credential cache failed (OpenSSL)");
    }
    return mac;
}

bool Authenticator::accountInCache(const std::string& email, int64_t now) {
    if (policy_.cacheTtlSeconds <= 0) return false;
    std::lock_guard<std::mutex> lock(cacheMutex_);
    auto it = cache_.find(email);
    return it != cache_.end() && it->second.expires > now;
}

std::optional<std::string> Authenticator::cachedHash(const std::string& email, const std::string& password,
                                                     int64_t now) {
    if (policy_.cacheTtlSeconds <= 0) return std::nullopt;
    CacheEntry entry;
    {
        std::lock_guard<std::mutex> lock(cacheMutex_);
        auto it = cache_.find(email);
        if (it == cache_.end() || it->second.expires <= now) return std::nullopt;
        entry = it->second;
    }
    Mac mac = cacheMac(email, password, entry.hash);
    if (CRYPTO_memcmp(entry.mac.data(), mac.data(), mac.size()) != 0) return std::nullopt;
    // Sliding: an owner who keeps using the account stays known, whatever a guesser spends.
    std::lock_guard<std::mutex> lock(cacheMutex_);
    auto it = cache_.find(email);
    if (it != cache_.end() && it->second.hash == entry.hash) it->second.expires = now + policy_.cacheTtlSeconds;
    return entry.hash;
}

std::optional<uint64_t> Authenticator::generation(const std::string& email) {
    std::optional<uint64_t> stored = store_.credentialGeneration(email);
    if (!stored) return std::nullopt;
    return *stored + (memoryGuesses_.load() << 32);
}

bool Authenticator::freshCacheHit(const std::string& email, const std::string& password, const std::string& source,
                                  int64_t now) {
    if (policy_.cacheTtlSeconds <= 0 || password.empty()) return false;
    Mac expected;
    std::string hash;
    std::optional<uint64_t> checked;
    {
        std::lock_guard<std::mutex> lock(cacheMutex_);
        auto it = cache_.find(email);
        if (it == cache_.end() || it->second.expires <= now) return false;
        for (const CacheEntry::Checked& c : it->second.checked)
            if (c.source == source) checked = c.generation;
        if (!checked) return false;
        expected = it->second.mac;
        hash = it->second.hash;
    }
    // The one read: a changed password, a removed account or a guess taken (by any process or
    // instance) since the entry was checked sends this login the full way.
    std::optional<uint64_t> now_generation = generation(email);
    if (!now_generation || *now_generation != *checked) return false;
    Mac mac = cacheMac(email, password, hash);
    if (CRYPTO_memcmp(expected.data(), mac.data(), mac.size()) != 0) return false;
    std::lock_guard<std::mutex> lock(cacheMutex_);
    auto it = cache_.find(email);
    if (it != cache_.end() && it->second.hash == hash) it->second.expires = now + policy_.cacheTtlSeconds;
    return true;
}

void Authenticator::markChecked(const std::string& email, const std::string& hash, const std::string& source,
                                std::optional<uint64_t> generation) {
    std::lock_guard<std::mutex> lock(cacheMutex_);
    auto it = cache_.find(email);
    if (it == cache_.end() || it->second.hash != hash || !generation) return;
    std::vector<CacheEntry::Checked>& checked = it->second.checked;
    auto same = std::find_if(checked.begin(), checked.end(), [&](const CacheEntry::Checked& c) { return c.source == source; });
    if (same != checked.end()) checked.erase(same);
    if (checked.size() >= kCheckedSources) checked.erase(checked.begin());  // the longest unchecked goes
    checked.push_back(CacheEntry::Checked{source, *generation});
}

void Authenticator::remember(const Account& account, const std::string& password, int64_t now,
                             const std::string& source, std::optional<uint64_t> generation) {
    if (policy_.cacheTtlSeconds <= 0) return;
    Mac mac = cacheMac(account.email, password, account.passwordHash);
    std::lock_guard<std::mutex> lock(cacheMutex_);
    CacheEntry entry{mac, account.passwordHash, now + policy_.cacheTtlSeconds, {}};
    if (generation) entry.checked.push_back(CacheEntry::Checked{source, *generation});
    cache_[account.email] = std::move(entry);
}

std::shared_ptr<std::mutex> Authenticator::accountLock(const std::string& email) {
    std::lock_guard<std::mutex> guard(accountLocksMutex_);
    auto& slot = accountLocks_[email];
    if (!slot) slot = std::make_shared<std::mutex>();
    return slot;
}

void Authenticator::forget(const std::string& email) {
    std::lock_guard<std::mutex> lock(cacheMutex_);
    cache_.erase(email);
}

namespace {
// The address a budget is kept for: an IPv4-mapped IPv6 address is the IPv4 one.
std::string sourceKey(const std::string& source) {
    if (source.rfind("::ffff:", 0) == 0 && source.find('.') != std::string::npos) return source.substr(7);
    return source;
}
}  // namespace

void Authenticator::restrictRegistrationTo(std::vector<std::string> accounts) {
    for (auto& a : accounts) a = text::lowerCase(a);
    std::sort(accounts.begin(), accounts.end());
    registrationRoster_ = std::move(accounts);
}

double Authenticator::takeMemoryToken(std::unordered_map<std::string, MemoryBucket>& buckets, const std::string& key,
                                      double burst, double refillSeconds, int64_t now) {
    std::lock_guard<std::mutex> lock(memoryBucketsMutex_);
    // Bounded: past 10,000 keys the full (refilled) buckets go, then, if need be, all of them.
    if (buckets.size() > 10000) {
        for (auto it = buckets.begin(); it != buckets.end();)
            it = refillSeconds > 0 && it->second.tokens + (now - it->second.updated) / refillSeconds >= burst
                     ? buckets.erase(it) : std::next(it);
        if (buckets.size() > 10000) buckets.clear();
    }
    auto [it, fresh] = buckets.try_emplace(key, MemoryBucket{burst, now});
    MemoryBucket& b = it->second;
    if (!fresh) b.tokens = refilledTokens(b.tokens, b.updated, now, burst, refillSeconds);
    b.updated = std::max(b.updated, now);
    if (b.tokens < 1.0) return secondsUntilToken(b.tokens, refillSeconds);
    b.tokens -= 1.0;
    return 0;
}

void Authenticator::ensurePostmaster() {
    store_.createAccount("postmaster@" + policy_.labDomain, "!no password yet: set by the instructor", clock_());
}

AuthResult Authenticator::authenticate(const std::string& user, const std::string& password, bool mayRegister,
                                       const std::string& source) {
    return *check(user, password, mayRegister, source, true);
}

std::optional<AuthResult> Authenticator::authenticateWithoutWaiting(const std::string& user, const std::string& password,
                                                                    const std::string& source) {
    return check(user, password, false, source, false);
}

std::optional<AuthResult> Authenticator::check(const std::string& user, const std::string& password, bool mayRegister,
                                               const std::string& source, bool mayWait) {
    const int64_t now = clock_();
    const std::string email = normalizeUser(user);
    const std::string from = sourceKey(source);
    // RFC 2104 2: HMAC pads a short key with zeros, so scrypt's PBKDF2 hears "pw" and "pw\0" alike.
    // No password holds a NUL (they are generated digits): one that does is wrong, whoever's it is.
    if (password.find('\0') != std::string::npos) return AuthResult{AuthOutcome::BadCredentials, email, "", 0};
    // The owner's next request on a password already checked from here: one counter read, no
    // account, no budget (CacheEntry says why that is enough).
    if (freshCacheHit(email, password, from, now)) return AuthResult{AuthOutcome::Ok, email, "", 0};
    // Not fresh: the account is read under its lock below, and a slow hash (and a guess paid for), a
    // registration or a cached comparison follows. Whether it is cached is decided by the account,
    // never by the password: a right and a wrong password for a cached
    // account do the same store work up to the comparison (with its budget spent, both are refused
    // after the same reads, and on an event loop neither is answered sooner than the other).
    const bool inCache = !password.empty() && accountInCache(email, now);  // an empty one may register
    if (!mayWait && !inCache) return std::nullopt;
    // One read for the hash, the source's standing and its bucket (the hot path of every login),
    // taken under the account's lock below. Read here too only for an account not in the cache:
    // whether it exists decides a registration or the unknown name's slow hash. A cached account
    // exists (read again under the lock: one deleted meanwhile is refused at once, no slow hash,
    // which tells only a holder of its last password that it is gone).
    std::optional<LoginState> state;
    if (!inCache) state = store_.loginState(email, from);
    if (!inCache && !state) {
        if (!mayWait) return std::nullopt;  // a registration or the unknown name's slow hash
        if (mayRegister && password.empty() && policy_.registrationEnabled && isLabAddress(email) &&
            !isReservedAddress(email)) {
            if (!registrationRoster_.empty() &&
                !std::binary_search(registrationRoster_.begin(), registrationRoster_.end(), email))
                return AuthResult{AuthOutcome::NotOnRoster, email, "", 0};
            // Loopback is the student's own machine (and the tests'): her accounts, no one else's.
            bool loopback = from.rfind("127.", 0) == 0 || from == "::1";
            if (double wait = loopback ? 0 : takeMemoryToken(registrations_, "reg:" + from, policy_.registrationBurst,
                                                             static_cast<double>(policy_.registrationRefillSeconds), now);
                wait > 0)
                return AuthResult{AuthOutcome::RegistrationLimited, email, "", static_cast<int64_t>(wait + 0.999)};
            std::string newPassword = generateLabPassword();
            std::string hash;
            {
                HashPlace place(*hashPlaces_, policy_.hashWaitMilliseconds);
                hash = hashPassword(newPassword, policy_.scrypt);
            }
            if (store_.createAccount(email, hash, now)) {
                remember(Account{email, hash, now, ""}, newPassword, now);  // no need to read it back
                if (!source.empty()) store_.trustSource(email, sourceKey(source), now);
                return AuthResult{AuthOutcome::Registered, email, newPassword, 0};
            }
        }
        // A name with no account is refused as an account's wrong password would be: the same
        // budget (kept in memory), the same slow hash, so neither the reply nor its timing tells
        // which names exist.
        if (double wait = takeMemoryToken(unknownNames_, email, policy_.guessBurst,
                                          static_cast<double>(policy_.guessRefillSeconds), now);
            wait > 0)
            return AuthResult{AuthOutcome::Throttled, email, "", static_cast<int64_t>(wait + 0.999)};
        HashPlace place(*hashPlaces_, policy_.hashWaitMilliseconds);
        verifyPassword(password, "scrypt$" + std::to_string(policy_.scrypt.n) + "$" + std::to_string(policy_.scrypt.r) +
                                     "$" + std::to_string(policy_.scrypt.p) + "$AAAAAAAAAAAAAAAAAAAAAA==$" +
                                     std::string(43, 'A') + "=");
        return AuthResult{AuthOutcome::BadCredentials, email, "", 0};
    }

    // One check per account at a time in this process, and the budget read afresh once it is our
    // turn: a snapshot read before waiting may be spent by the time we compare (a burst of parallel
    // guesses would each see the last token and compare with the cached password for free).
    std::shared_ptr<std::mutex> lock = accountLock(email);
    std::unique_lock<std::mutex> oneCheckAtATime(*lock, std::defer_lock);
    if (mayWait) {
        oneCheckAtATime.lock();
    } else if (!oneCheckAtATime.try_lock()) {
        return std::nullopt;  // another check of this account runs (a wrong password's slow hash may take long)
    }
    // Read before the account: a change committed after this read bumps past it (GenerationFile).
    std::optional<uint64_t> generationBefore = generation(email);
    state = store_.loginState(email, from);
    if (!state) return AuthResult{AuthOutcome::BadCredentials, email, "", 0, false};  // deleted meanwhile
    std::optional<Account> account = Account{email, state->passwordHash, 0, ""};
    bool trusted = state->trusted;
    const std::string key = trusted ? "pair:" + email + "|" + from : "acct:" + email;
    const double burst = policy_.guessBurst, refill = static_cast<double>(policy_.guessRefillSeconds);
    auto throttled = [&](double wait) {
        return AuthResult{AuthOutcome::Throttled, email, "", static_cast<int64_t>(wait + 0.999), true, trusted};
    };
    // Comparing with a cached password is a check too: only with budget left, or the cache would
    // answer a guesser for free. A right password costs nothing; a wrong one pays below before its
    // slow check, so no more comparisons run in this process than the budget holds.
    if (state->hasBucket) {
        double tokens = refilledTokens(state->tokens, state->updated, now, burst, refill);
        // Never said on an event loop: a worker says it, as it says a wrong password's refusal.
        if (tokens < 1.0) return mayWait ? std::optional<AuthResult>(throttled(secondsUntilToken(tokens, refill))) : std::nullopt;
    }
    auto cachedOk = [&] {
        if (password.empty()) return false;
        auto hash = cachedHash(email, password, now);
        // Only while the account still holds the very hash it was verified against: a changed
        // password, a deleted account or a re-registration (a new salt) ends it at once.
        if (!hash || account->passwordHash != *hash) return false;
        // Checked against the account and a budget with a guess left: fresh until the next change.
        markChecked(email, *hash, from, generationBefore);
        return true;
    };
    // A right password, cached or checked, makes its source one the owner has logged in from.
    auto ok = [&] {
        try {
            if (!trusted && !from.empty()) store_.trustSource(email, from, now);
        } catch (const StoreError&) {
            // A full disk: she is logged in all the same, and trusted next time there is room.
        }
        return AuthResult{AuthOutcome::Ok, email, "", 0};
    };
    // Making the source trusted is a store write: not where no waiting is allowed.
    if (!mayWait && !trusted && !from.empty()) return std::nullopt;
    if (cachedOk()) return ok();
    if (!mayWait) return std::nullopt;  // a guess to pay for and a slow hash

    // The guess is paid for before it is checked, in one transaction: no number of parallel
    // connections, on either server, gets more checks than the budget holds.
    // When the database cannot take the write (a full disk, a lock held too long), the guess is paid
    // from a budget kept in memory instead: logins go on, and still no guess is free.
    double wait = 0;
    bool inMemory = false;
    try {
        wait = store_.takeGuess(key, burst, refill, now);
    } catch (const StoreError&) {
        inMemory = true;
        wait = takeMemoryToken(memoryBudgets_, key, burst, refill, now);
        ++memoryGuesses_;  // no store to count it in: this process's fresh hits end all the same
    }
    if (wait > 0) return throttled(wait);
    auto giveBack = [&] {
        if (inMemory) {
            std::lock_guard<std::mutex> lock(memoryBucketsMutex_);
            auto it = memoryBudgets_.find(key);
            if (it != memoryBudgets_.end()) it->second.tokens = std::min(burst, it->second.tokens + 1);
            return;
        }
        try {
            store_.returnGuess(key, burst);
        } catch (const StoreError&) {
        }
    };

    bool right = false;
    if (!password.empty()) {
        try {
            HashPlace place(*hashPlaces_, policy_.hashWaitMilliseconds);
            right = verifyPassword(password, account->passwordHash);
        } catch (const AuthBusy&) {
            giveBack();  // nothing was checked: the guess is not spent
            throw;
        }
    }
    if (right) {
        giveBack();
        remember(*account, password, now);
        return ok();
    }
    // The owner's cached password stays: a wrong guess can never match it (the cache holds a MAC
    // of the right one), and dropping it would let a guesser log the owner out.
    return AuthResult{AuthOutcome::BadCredentials, email, "", 0, true, trusted};
}

bool isReservedAddress(const std::string& address) {
    // RFC 2142 role mailboxes, and the others a service keeps for itself: never self-registered.
    static const char* const kReserved[] = {"postmaster", "abuse",  "hostmaster", "webmaster", "admin",
                                            "administrator", "root", "security", "noreply", "no-reply",
                                            "mailer-daemon", "info", "support"};
    std::string local = text::lowerCase(address.substr(0, address.find('@')));
    for (const char* name : kReserved)
        if (local == name) return true;
    return false;
}

}  // namespace maillab
