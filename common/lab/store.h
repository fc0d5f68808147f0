// The one narrow interface to the lab's accounts, mailboxes, guess budgets, provenance and class
// activity. The servers and maillab-admin read and write only through it (the grader and the tests
// through maillab-admin). Two backends, chosen by one setting (store.url, see openStore): SQLite
// (common/lab/sqlite_store.cpp, the embedded default) and PostgreSQL (common/lab/postgres_store.cpp, for
// several server instances on several machines sharing one database).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
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
    std::string role;          // "" (a student) or "instructor" (the class board, /metrics)
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
    // The session that delivered it (issue 19, "a message's own story"): a JSON object written by
    // the SMTP session (when, peer, TLS, account, the redacted transcript); stored once with the text.
    std::string story;
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

// One authenticated TLS session as a class server records it (store.provenance): the ClientHello's
// and the ServerHello's randoms (64 hex digits each, as Wireshark shows them), which service, the
// peer, when, and the account that logged in. The client chooses its random (and a student can
// replay a classmate's); the server's random is the server's own choice, so the pair names one
// session of this server, and a capture names it by the same two fields. The grader matches a
// capture's sessions against these records.
struct TlsSessionRecord {
    std::string clientRandom;
    std::string serverRandom;
    std::string service;  // "smtp", "http" or "pop3"
    std::string peer;     // address:port
    int64_t startedAt = 0;
    std::string account;
};

// What the class board counts per account and kind of event ("login", "login_failed", "sent",
// "lab_message", "mailbox_read", "not_modified"): how often, first and last time. The servers add
// to these counts in batches (ActivityRecorder).
struct ActivityCount {
    std::string account;
    std::string kind;
    int64_t count = 0;
    int64_t firstAt = 0;
    int64_t lastAt = 0;
};

// A source address an account has logged in from before (it draws on a guess budget of its own).
struct TrustedSource {
    std::string email;
    std::string source;
    int64_t lastOk = 0;  // the last login from there, Unix seconds
};

// Moving a class's database into another store (maillab-admin migrate, common/lab/migrate_store.h): the
// target's side. Everything added through it is ONE transaction on the target: the servers see none
// of it, and nothing of it stays after a failure, until commit(); destroyed without commit(), it is
// rolled back. It holds one of the store's connections until then (SQLite: the write lock), so it
// must not outlive its store.
class StoreImport {
public:
    virtual ~StoreImport() = default;
    // The account as it was: the same password hash (its password keeps working), creation time and
    // role. False when the address is taken in the target already (kept there as it is).
    virtual bool addAccount(const Account& account) = 0;
    // One stored text and story (NewMessage::story) for every mailbox in message.recipients, as
    // deliver() stores them. `ids`, one per recipient, keeps the source's numbering (links and POP3
    // UIDs stay the same; they must be free in the target); empty: the target numbers them.
    virtual std::vector<int64_t> addMessage(const NewMessage& message, const std::vector<int64_t>& ids) = 0;
    virtual void addTrustedSource(const TrustedSource& trusted) = 0;
    // False when the pair of randoms is on record already (Store::recordTlsLogin).
    virtual bool addTlsLogin(const TlsSessionRecord& session) = 0;
    // Added to what is recorded (Store::recordActivity).
    virtual void addActivity(const std::vector<ActivityCount>& counts) = 0;
    virtual void commit() = 0;
};

struct MailboxStats {
    int64_t count = 0;
    int64_t newestId = 0;          // 0 when empty
    int64_t newestReceivedAt = 0;  // 0 when empty
    int64_t bytes = 0;             // the stored size of its messages (the quota counts these)
    // When its contents last changed: the newest arrival's time, or a deletion's (the store's clock).
    // A listing's Last-Modified (RFC 9110 8.8.2): a removed message changes the listing too.
    int64_t changedAt = 0;
};

// The guess budget's token-bucket arithmetic, one definition for the store's buckets and the ones
// kept in memory: what a bucket that held `tokens` at `updated` holds at `now` (one more every
// `refillSeconds`, at most `burst`), and how long until it holds one.
inline double refilledTokens(double tokens, int64_t updated, int64_t now, double burst, double refillSeconds) {
    return refillSeconds > 0 && now > updated ? std::min(burst, tokens + (now - updated) / refillSeconds) : tokens;
}
inline double secondsUntilToken(double tokens, double refillSeconds) {
    return refillSeconds > 0 ? std::max(1.0, (1.0 - tokens) * refillSeconds) : 1e9;
}

// Credential generations (docs/design.md, "Credential cache"): each account's changes are counted
// in one of kCredentialSlots counters, chosen by a hash of its address (accounts that share a slot
// see each other's changes: more than happened, never fewer).
constexpr uint32_t kCredentialSlots = 4096;
inline uint32_t credentialSlot(const std::string& email) {
    uint32_t h = 2166136261u;  // FNV-1a
    for (unsigned char c : email) h = (h ^ c) * 16777619u;
    return h % kCredentialSlots;
}

class Store {
public:
    virtual ~Store() = default;

    virtual std::optional<Account> findAccount(const std::string& email) = 0;
    // False when the account exists already (two registrations racing: only one wins).
    virtual bool createAccount(const std::string& email, const std::string& passwordHash, int64_t now) = 0;
    // The instructor's reset: a new hash for an existing account (false when there is none). Both
    // servers see it at their next login check (auth.h: the cache is bound to the stored hash and to
    // the credential generation, which this changes).
    virtual bool setPasswordHash(const std::string& email, const std::string& passwordHash) = 0;
    // Guess budgets (docs/design.md, "The guess budget"): a token bucket per key holding at most
    // `burst` guesses and gaining one every `refillSeconds`. takeGuess() takes one in a single write
    // transaction, so every connection of both servers draws on the same count and none can race
    // another; it returns 0 when a guess was taken (that changes the generation), else the seconds
    // until the next one.
    virtual double takeGuess(const std::string& key, double burst, double refillSeconds, int64_t now) = 0;
    // The credential generation of the account's slot: a number that changes, for every process and
    // instance on this store, whenever its password is changed, it is removed, or a guess is taken
    // from one of its budgets (the calls above and below that do so say "changes the generation").
    // A cached login is accepted on this one cheap read (auth.h). nullopt: cannot tell (the cache
    // then reads the account as before).
    virtual std::optional<uint64_t> credentialGeneration(const std::string& email) = 0;
    // The account's LoginState for a login from `source`; nullopt when there is no such account.
    virtual std::optional<LoginState> loginState(const std::string& email, const std::string& source) = 0;
    // The instructor's reset (maillab-admin set-password): every budget of the account full again, so
    // a guesser who kept the shared one empty no longer keeps the owner out of a new address.
    virtual void clearGuessBudgets(const std::string& email) = 0;
    // A guess that turned out right is given back: successes cost the owner nothing.
    virtual void returnGuess(const std::string& key, double burst) = 0;
    // Source addresses that have logged in to an account before: they draw on a budget of their own.
    virtual bool isTrustedSource(const std::string& email, const std::string& source) = 0;
    virtual void trustSource(const std::string& email, const std::string& source, int64_t now) = 0;

    // Stores one copy per recipient in a single durable transaction; returns only after the commit.
    // Throws on failure, in which case nothing is stored.
    virtual std::vector<int64_t> deliver(const NewMessage& message) = 0;
    // The same for a caller that must not wait (the sender's event loop): returns at once, and `done`
    // gets the ids, or the failure's text (nothing stored), once the commit is over, on the thread
    // that ran it; it must not block. This default waits for deliver(): a store whose commit is a
    // group commit (SQLite) overrides it.
    using Delivered = std::function<void(std::vector<int64_t> ids, const std::string& error)>;
    virtual void deliverAsync(std::shared_ptr<const NewMessage> message, Delivered done) {
        std::vector<int64_t> ids;
        std::string error;
        try {
            ids = deliver(*message);
        } catch (...) {
            error = failureText(std::current_exception());
        }
        done(std::move(ids), error);
    }
    // A failed delivery's text, for the log and the 451 (never empty).
    static std::string failureText(const std::exception_ptr& failure) {
        try {
            std::rethrow_exception(failure);
        } catch (const std::exception& e) {
            return *e.what() ? e.what() : "the store failed";
        } catch (...) {
            return "the store failed";
        }
    }

    // Newest first.
    virtual std::vector<MessageSummary> listMessages(const std::string& mailbox, int64_t offset, int64_t limit) = 0;
    virtual std::optional<StoredMessage> getMessage(const std::string& mailbox, int64_t id) = 0;
    // The same without its text (its size, date and validators, before deciding to read it).
    virtual std::optional<MessageSummary> findMessage(const std::string& mailbox, int64_t id) = 0;
    // A page of listMessages with the first `startBytes` of each message, in one query.
    virtual std::vector<MessageStart> listMessageStarts(const std::string& mailbox, int64_t offset, int64_t limit,
                                                        int64_t startBytes) = 0;
    virtual MailboxStats mailboxStats(const std::string& mailbox) = 0;
    // The story of the mailbox's message `id` (NewMessage::story); "" when it has none (stored
    // before version 7, or by a tool); nullopt when there is no such message.
    virtual std::optional<std::string> messageStory(const std::string& mailbox, int64_t id) = 0;
    // POP3's UPDATE state (RFC 1939 6): these messages of the mailbox removed, all in one
    // transaction or none (ids not in the mailbox are skipped); the mailbox's count and bytes and
    // the bodies no message uses any more go with them. Returns how many were removed.
    virtual int64_t deleteMessages(const std::string& mailbox, const std::vector<int64_t>& ids) = 0;

    // The instructor's removal: the account, its budgets, trusted sources and mailbox, in one
    // transaction; false when there is none. Its cached password stops working at once (auth.h):
    // this changes the generation.
    virtual bool deleteAccount(const std::string& email) = 0;
    // Every account, by address.
    virtual std::vector<Account> listAccounts() = 0;
    // "instructor" or "" (student); false when there is no such account.
    virtual bool setRole(const std::string& email, const std::string& role) = 0;

    // Provenance (class servers): an authenticated TLS session, recorded once per (session, account).
    // Inserted, never replaced: false when the pair of randoms is on record already.
    virtual bool recordTlsLogin(const TlsSessionRecord& session) = 0;
    // The records whose client random is one of `clientRandoms` (all records when empty).
    virtual std::vector<TlsSessionRecord> findTlsSessions(const std::vector<std::string>& clientRandoms) = 0;
    // Retention (store.provenanceDays): drops the records older than `cutoff`; returns how many.
    virtual int64_t forgetTlsSessionsBefore(int64_t cutoff) = 0;

    // The class board's counts: `counts` added to what is recorded, in one transaction.
    virtual void recordActivity(const std::vector<ActivityCount>& counts) = 0;
    virtual std::vector<ActivityCount> listActivity() = 0;

    // Moving the store (common/lab/migrate_store.h). The mailboxes holding at least one message, by name
    // (a mailbox is not always an account's: listAccounts() alone could miss one).
    virtual std::vector<std::string> listMailboxes() = 0;
    // Every account's trusted sources, by account.
    virtual std::vector<TrustedSource> listTrustedSources() = 0;
    // The one transaction a move into this store writes in (StoreImport).
    virtual std::unique_ptr<StoreImport> beginImport() = 0;
};

// The group commit's delay (PostgreSQL's commit_delay, for the same reason): when the last commit held
// at least `afterBatchOf` messages, others are arriving together, and the next commit first waits
// `microseconds` for more of them to join it: fewer fsyncs (and fewer writes of the same index pages)
// per message under load; a message that arrives alone is committed at once.
struct CommitDelay {
    int microseconds = 250;
    int afterBatchOf = 2;
};
constexpr int kMostCommitDelayMicroseconds = 100000;  // a tenth of a second: beyond it, a wait no one would choose

struct SqliteOptions {
    std::string path = "users/maillab.db";
    int busyTimeoutMs = 5000;
    // FULL: every acknowledged message survives a crash of the machine, not only of the process.
    std::string synchronous = "FULL";
    CommitDelay commitDelay;
};

std::unique_ptr<Store> openSqliteStore(const SqliteOptions& options);

struct PostgresOptions {
    std::string url;          // a libpq connection URI: postgresql://user@host:port/dbname?sslmode=...
    int maxConnections = 16;  // the pool: at most this many connections; more callers wait their turn
    // The schema holding the tables, created when missing ("" = the user's default, public): several
    // classes, or test runs, can share one database.
    std::string schema;
    int connectTimeoutSeconds = 5;  // a database that does not answer is a 451 / 503 this soon
    CommitDelay commitDelay;
};

std::unique_ptr<Store> openPostgresStore(const PostgresOptions& options);

// What the store.* settings say: which backend (`url`) and each backend's own tuning.
//   sqlite:users/maillab.db, or a bare path           SQLite (the default)
//   postgresql://user@host:port/dbname (postgres://)  PostgreSQL, a libpq connection URI
struct StoreOptions {
    std::string url = "sqlite:users/maillab.db";
    SqliteOptions sqlite;      // its path is taken from url
    PostgresOptions postgres;  // its url is taken from url
};

// The one way the servers and maillab-admin open the store. Throws StoreError when it cannot.
std::unique_ptr<Store> openStore(const StoreOptions& options);
bool isPostgresUrl(const std::string& url);
// The SQLite file a url names ("" for PostgreSQL).
std::string sqlitePathOf(const std::string& url);
// The url as a log line may show it: a PostgreSQL password is replaced by ***.
std::string describeStoreUrl(const std::string& url);

// Thrown by the store for database errors.
struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// A store.* setting that cannot work (out of range, not a URL): the instructor's to fix, so a server
// ends its start with exit 64 like any other bad setting, not 70.
struct StoreSettingError : StoreError {
    using StoreError::StoreError;
};

}  // namespace maillab
