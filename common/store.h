// The one narrow interface to the lab's accounts and mailboxes. The sender server writes through it,
// the retriever reads through it; SqliteStore is the backend, and another would be one new file.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace maillab {

// What a login needs to know, read in one query (the hot path of every SMTP AUTH and HTTP request):
// the account's hash, whether `source` has logged in to it before, and that budget's bucket.
struct LoginState {
    std::string passwordHash;
    bool trusted = false;
    bool hasBucket = false;  // false: a full bucket (never used)
    double tokens = 0;
    int64_t updated = 0;
};

struct Account {
    std::string email;         // lower-case address, the account's name
    std::string passwordHash;  // see password.h; never the password itself
    int64_t createdAt = 0;     // Unix seconds
};

// What a message carries into the store: the full RFC 5322 text as stored (headers added by the
// server included) and the header fields the mailbox listing shows, parsed once at delivery.
struct NewMessage {
    std::string queueId;
    std::string envelopeFrom;
    std::vector<std::string> recipients;  // one stored copy per recipient mailbox
    std::string from, to, subject, date;  // header fields, unfolded
    int64_t receivedAt = 0;
    std::string raw;
};

struct MessageSummary {
    int64_t id = 0;
    std::string queueId, mailbox, envelopeFrom, from, to, subject, date;
    int64_t receivedAt = 0;
    int64_t size = 0;
};

struct StoredMessage {
    MessageSummary summary;
    std::string raw;
};

// A listed message with the first bytes of its stored text (for previews: never the whole body).
struct MessageStart {
    MessageSummary summary;
    std::string start;
};

// One TLS session as a class server records it (store.provenance): the ClientHello's random (64 hex
// digits, as Wireshark shows it), which service, the peer, when, and the account that logged in.
// The grader matches a capture's sessions against these records.
struct TlsSessionRecord {
    std::string clientRandom;
    std::string service;  // "smtp" or "http"
    std::string peer;     // address:port
    int64_t startedAt = 0;
    std::string account;  // "" until a login in that session
};

struct MailboxStats {
    int64_t count = 0;
    int64_t newestId = 0;          // 0 when empty
    int64_t newestReceivedAt = 0;  // 0 when empty
};

class Store {
public:
    virtual ~Store() = default;

    virtual std::optional<Account> findAccount(const std::string& email) = 0;
    // False when the account exists already (two registrations racing: only one wins).
    virtual bool createAccount(const std::string& email, const std::string& passwordHash, int64_t now) = 0;
    // The instructor's reset: a new hash for an existing account (false when there is none). Both
    // servers see it at their next login check (auth.h: the cache is bound to the stored hash).
    virtual bool setPasswordHash(const std::string& email, const std::string& passwordHash) = 0;
    // Guess budgets (docs/design.md, "The guess budget"): a token bucket per key holding at most
    // `burst` guesses and gaining one every `refillSeconds`. takeGuess() takes one in a single write
    // transaction, so every connection of both servers draws on the same count and none can race
    // another; it returns 0 when a guess was taken, else the seconds until the next one.
    virtual double takeGuess(const std::string& key, double burst, double refillSeconds, int64_t now) = 0;
    // The account's LoginState for a login from `source`; nullopt when there is no such account.
    virtual std::optional<LoginState> loginState(const std::string& email, const std::string& source) = 0;
    // A guess that turned out right is given back: successes cost the owner nothing.
    virtual void returnGuess(const std::string& key, double burst) = 0;
    // Source addresses that have logged in to an account before: they draw on a budget of their own.
    virtual bool isTrustedSource(const std::string& email, const std::string& source) = 0;
    virtual void trustSource(const std::string& email, const std::string& source, int64_t now) = 0;

    // Stores one copy per recipient in a single durable transaction; returns only after the commit.
    // Throws on failure, in which case nothing is stored.
    virtual std::vector<int64_t> deliver(const NewMessage& message) = 0;

    // Newest first.
    virtual std::vector<MessageSummary> listMessages(const std::string& mailbox, int64_t offset, int64_t limit) = 0;
    virtual std::optional<StoredMessage> getMessage(const std::string& mailbox, int64_t id) = 0;
    // A page of listMessages with the first `startBytes` of each message, in one query.
    virtual std::vector<MessageStart> listMessageStarts(const std::string& mailbox, int64_t offset, int64_t limit,
                                                        int64_t startBytes) = 0;
    virtual MailboxStats mailboxStats(const std::string& mailbox) = 0;

    // Provenance (class servers): a TLS session when its handshake completes, its account at login.
    virtual void recordTlsSession(const TlsSessionRecord& session) = 0;
    virtual void setTlsSessionAccount(const std::string& clientRandom, const std::string& account) = 0;
    virtual std::optional<TlsSessionRecord> findTlsSession(const std::string& clientRandom) = 0;
};

struct SqliteOptions {
    std::string path = "users/maillab.db";
    int busyTimeoutMs = 5000;
    // FULL: every acknowledged message survives a crash of the machine, not only of the process.
    std::string synchronous = "FULL";
};

std::unique_ptr<Store> openSqliteStore(const SqliteOptions& options);

// Thrown by the store for database errors.
struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace maillab
