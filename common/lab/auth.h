// Authentication shared by the sender (SMTP AUTH) and the retriever (HTTP Basic): lab registration,
// scrypt verification, a Dovecot-style cache of verified credentials, and the guess budget: every
// password check takes a token first (Store::takeGuess), so failures across connections, threads and
// both servers share one bound (docs/design.md, "The guess budget").
#pragma once
#include "password.h"
#include "store.h"

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace maillab {

struct AuthPolicy {
    std::string labDomain = "447.edu";
    bool registrationEnabled = true;
    // The guess budget (docs/design.md): per account, a bucket of `guessBurst` password checks that
    // gains one every `guessRefillSeconds`, shared by every connection of both servers; a source
    // address that has logged in to the account before draws on a bucket of its own, so that
    // others' failures do not shut the owner out. A right password costs nothing.
    int guessBurst = 5;
    int64_t guessRefillSeconds = 150;
    int64_t cacheTtlSeconds = 300;   // how long a verified password skips the slow hash
    ScryptParams scrypt;
    // Slow hashes (16 MiB of scrypt memory each) run at most this many at once, account or not:
    // memory before login stays bounded whatever the number of connections. 0: one per core.
    int maxConcurrentHashes = 0;
    // How long a login waits for a hash place before it is answered "temporarily unavailable".
    int64_t hashWaitMilliseconds = 10000;
    // New accounts per source address: a bucket of registrationBurst that gains one every
    // registrationRefillSeconds (a script cannot take a class's addresses before the students do).
    int registrationBurst = 5;
    int64_t registrationRefillSeconds = 360;
};

// A counting semaphore of places for slow hashes: enter() waits at most `wait` for a free one.
class HashPlaces {
public:
    explicit HashPlaces(int places) : free_(places) {}
    bool enter(std::chrono::milliseconds wait);
    void leave();

private:
    std::mutex mutex_;
    std::condition_variable freed_;
    int free_;
};

// Thrown by authenticate() when no hash place came free within hashWaitMilliseconds: the server is
// busy, nothing was checked (the guess, if taken, is given back). SMTP answers 454, HTTP 503.
struct AuthBusy : std::runtime_error {
    using std::runtime_error::runtime_error;
};

enum class AuthOutcome {
    Ok,              // existing account, right password
    Registered,      // new lab account created; newPassword holds its password, shown once
    BadCredentials,  // unknown user or wrong password (never says which)
    Throttled,       // the guess budget is spent: nothing was checked; retryAfterSeconds says when
    RegistrationLimited,  // too many new accounts from this address; retryAfterSeconds says when
    NotOnRoster,          // a class server registers only the roster's accounts
};

struct AuthResult {
    AuthOutcome outcome = AuthOutcome::BadCredentials;
    std::string user;         // normalized (lower-case) address
    std::string newPassword;  // with Registered only
    int64_t retryAfterSeconds = 0;
    // For the server's own record only (the class board counts failed logins of real accounts, and
    // tells the owner's own from those of addresses she never logged in from); never said to the
    // client, whose refusal is the same for all.
    bool knownAccount = false;
    bool knownSource = false;  // the source has logged in to this account before
};

class Authenticator {
public:
    using Clock = std::function<int64_t()>;  // Unix seconds; injectable for tests
    Authenticator(Store& store, AuthPolicy policy, Clock clock = nullptr);

    // Registration (see docs/protocol.md): with mayRegister, an address of the lab domain with no
    // account and an EMPTY password registers. A non-empty password never creates an account.
    // `source` is the client's address (budgets per source that logged in before; "" = none).
    AuthResult authenticate(const std::string& user, const std::string& password, bool mayRegister = true,
                            const std::string& source = "");

    // authenticate() for an event loop, which must never wait: the same answer when it can be given
    // at once (a cached password, checked against the account under its lock), or nothing when it
    // would wait for the account's check (another thread holds it: a wrong password's slow hash),
    // run a slow hash, write to the store (a source to trust), or refuse (a spent budget is said
    // by a worker, as a wrong password's refusal is: neither answer comes sooner than the other).
    // Nothing then was changed: the caller runs authenticate() where waiting is allowed
    // (retriever/event_server.cpp, sender/session_bytes.cpp).
    std::optional<AuthResult> authenticateWithoutWaiting(const std::string& user, const std::string& password,
                                                         const std::string& source = "");

    const AuthPolicy& policy() const { return policy_; }
    // A class server (class.roster with auth.registrationRosterOnly): only these addresses register.
    void restrictRegistrationTo(std::vector<std::string> accounts);
    // RFC 5321 4.5.1: postmaster@<lab domain> must exist. Created on first start with no usable
    // password (nobody can log in as it until the instructor sets one); mail to it is kept.
    void ensurePostmaster();
    bool isLabAddress(const std::string& address) const;
    // The name a refusal may say back (`make password USER=<name>`): a lab address's local part, or
    // "<you>" for anything else the client sent (nothing else it typed is echoed).
    std::string nameToShow(const std::string& user) const;
    // Lower-case, and the lab domain appended to a bare local part.
    std::string normalizeUser(const std::string& user) const;

private:
    using Mac = std::array<unsigned char, 32>;
    // Both of the above: with mayWait false, nullopt where authenticate() would wait or write.
    std::optional<AuthResult> check(const std::string& user, const std::string& password, bool mayRegister,
                                    const std::string& source, bool mayWait);
    struct CacheEntry {
        Mac mac;
        std::string hash;  // the stored hash the password was verified against
        int64_t expires;
        // The fresh hit (no database read): the source and the credential generation (read before
        // the account) with which the entry was last checked against the account and its budget.
        // A hit from that source while the generation is unchanged needs nothing else: the password
        // is the same, the account still there, and no guess has been taken from its budgets since.
        // Up to kCheckedSources sources, the latest checked last (more than the connections one client
        // opens at once: a round robin over more would miss every time): an owner's phone and laptop (and a
        // class behind several NAT addresses) do not take turns sending each other the full way.
        struct Checked {
            std::string source;
            uint64_t generation;
        };
        std::vector<Checked> checked;
    };
    static constexpr size_t kCheckedSources = 32;
    Mac cacheMac(const std::string& email, const std::string& password, const std::string& hash) const;
    // The cached verification of this password, if any: the stored hash it was checked against.
    std::optional<std::string> cachedHash(const std::string& email, const std::string& password, int64_t now);
    // Whether the account has an unexpired entry in the cache, whatever the password (see check()).
    bool accountInCache(const std::string& email, int64_t now);
    void remember(const Account& account, const std::string& password, int64_t now,
                  const std::string& source = "", std::optional<uint64_t> generation = std::nullopt);
    // The entry was just checked against the account read at `generation`, from `source`.
    void markChecked(const std::string& email, const std::string& hash, const std::string& source,
                     std::optional<uint64_t> generation);
    // A cached login that needs no database read (CacheEntry); false: take the full path.
    bool freshCacheHit(const std::string& email, const std::string& password, const std::string& source, int64_t now);
    // The store's generation, plus this process's own guesses paid from memory (memoryBudgets_).
    std::optional<uint64_t> generation(const std::string& email);
    std::atomic<uint64_t> memoryGuesses_{0};
    void forget(const std::string& email);

    // Buckets kept in memory (this process): names with no account draw on one as an account would,
    // so a refusal never tells which names exist; and registrations per source address.
    struct MemoryBucket {
        double tokens;
        int64_t updated;
    };
    double takeMemoryToken(std::unordered_map<std::string, MemoryBucket>& buckets, const std::string& key,
                           double burst, double refillSeconds, int64_t now);
    std::mutex memoryBucketsMutex_;
    std::unordered_map<std::string, MemoryBucket> unknownNames_, registrations_;
    std::unordered_map<std::string, MemoryBucket> memoryBudgets_;  // accounts' budgets while the store cannot write
    std::vector<std::string> registrationRoster_;  // sorted; empty = anyone in the lab domain

    Store& store_;
    AuthPolicy policy_;
    Clock clock_;
    std::unique_ptr<HashPlaces> hashPlaces_;
    std::array<unsigned char, 32> cacheKey_;  // random per process: the cache holds no reusable secret
    std::mutex cacheMutex_;
    std::unordered_map<std::string, CacheEntry> cache_;
    // One password check per account at a time in this process: the owner's parallel connections
    // (a browser opens six) wait for the first check and then find it cached, instead of spending
    // one guess each; a guesser's parallel connections queue up the same way.
    std::mutex accountLocksMutex_;
    std::unordered_map<std::string, std::shared_ptr<std::mutex>> accountLocks_;
    std::shared_ptr<std::mutex> accountLock(const std::string& email);
};

// True for a local part the lab accepts: letters, digits, '.', '_', '-', '+', 1 to 64 characters.
bool isValidLocalPart(const std::string& localPart);
// RFC 2142 role addresses (postmaster, abuse, ...): they exist for the instructor, never self-registered.
bool isReservedAddress(const std::string& address);

}  // namespace maillab
