// SQLite backend of the Store: WAL journal, BEGIN IMMEDIATE for writes, a busy timeout, a small pool of
// connections shared by the server's threads, and a schema versioned with PRAGMA user_version.
#include "group_commit.h"
#include "sqlite_schema.h"
#include "store.h"
#include "store_import.h"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <unordered_map>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace maillab {

namespace {

// A message's text: its body row's, or (stored before version 6) its own.
const char* const kMessageText = "coalesce((SELECT b.raw FROM bodies b WHERE b.id = messages.body_id), messages.raw)";

// A pooled database connection and the statements prepared on it (preparing costs more than
// running most of the lab's queries).
struct Handle {
    sqlite3* db = nullptr;
    std::unordered_map<std::string, sqlite3_stmt*> statements;
    ~Handle() {
        for (auto& [sql, stmt] : statements) sqlite3_finalize(stmt);
        sqlite3_close(db);
    }
};

// A prepared statement, from the handle's cache when there is one (then reset, not finalized, at
// the end); bind and step helpers keep call sites short.
class Statement {
public:
    Statement(sqlite3* db, const char* sql) : db_(db) {
        if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
            throw StoreError(std::string("prepare: ") + sqlite3_errmsg(db));
    }
    Statement(Handle& handle, const std::string& sql) : db_(handle.db), cached_(true) {
        auto it = handle.statements.find(sql);
        if (it != handle.statements.end()) {
            stmt_ = it->second;
            return;
        }
        if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr) != SQLITE_OK)
            throw StoreError(std::string("prepare: ") + sqlite3_errmsg(db_));
        handle.statements.emplace(sql, stmt_);
    }
    ~Statement() {
        if (cached_) {
            sqlite3_reset(stmt_);
            sqlite3_clear_bindings(stmt_);
        } else {
            sqlite3_finalize(stmt_);
        }
    }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;

    Statement& bind(int index, const std::string& value) {
        sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT);
        return *this;
    }
    Statement& bindBlob(int index, const std::string& value) {
        sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
        return *this;
    }
    Statement& bind(int index, int64_t value) {
        sqlite3_bind_int64(stmt_, index, value);
        return *this;
    }
    Statement& bind(int index, double value) {
        sqlite3_bind_double(stmt_, index, value);
        return *this;
    }
    // True while a row is available.
    bool step() {
        int rc = sqlite3_step(stmt_);
        if (rc == SQLITE_ROW) return true;
        if (rc == SQLITE_DONE) return false;
        throw StoreError(std::string("step: ") + sqlite3_errmsg(db_));
    }
    void reset() {
        sqlite3_reset(stmt_);
        sqlite3_clear_bindings(stmt_);
    }
    std::string text(int column) const {
        const void* p = sqlite3_column_blob(stmt_, column);
        int n = sqlite3_column_bytes(stmt_, column);
        return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
    }
    int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
    double real(int column) const { return sqlite3_column_double(stmt_, column); }
    bool isNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

private:
    sqlite3* db_;
    sqlite3_stmt* stmt_ = nullptr;
    bool cached_ = false;
};

void exec(sqlite3* db, const char* sql) {
    char* error = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
        std::string message = error ? error : "unknown error";
        sqlite3_free(error);
        throw StoreError(std::string("exec: ") + message);
    }
}

// Rolls back unless committed, so an exception between BEGIN and COMMIT leaves nothing behind.
class Transaction {
public:
    explicit Transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
    // On a pooled connection: BEGIN and COMMIT prepared once, not parsed by sqlite3_exec at each
    // commit (the group commit's, issue 22).
    explicit Transaction(Handle& handle) : db_(handle.db), handle_(&handle) { Statement(handle, "BEGIN IMMEDIATE").step(); }
    ~Transaction() {
        if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    void commit() {
        if (handle_) Statement(*handle_, "COMMIT").step();
        else exec(db_, "COMMIT");
        done_ = true;
    }

private:
    sqlite3* db_;
    Handle* handle_ = nullptr;
    bool done_ = false;
};

const char* const kSummaryColumns =
    "id, queue_id, mailbox, envelope_from, header_from, header_to, subject, date, received_at, size";

// The writes the store's own methods share with an import (SqliteStore::ImportWrites).
bool insertTlsLogin(Handle& handle, const TlsSessionRecord& r) {
    Statement s(handle,
                "INSERT OR IGNORE INTO tls_logins(client_random, server_random, service, peer, started_at, account) "
                "VALUES(?1, ?2, ?3, ?4, ?5, ?6)");
    s.bind(1, r.clientRandom).bind(2, r.serverRandom).bind(3, r.service).bind(4, r.peer).bind(5, r.startedAt)
        .bind(6, r.account);
    s.step();
    return sqlite3_changes(handle.db) == 1;
}

void addActivityCounts(Handle& handle, const std::vector<ActivityCount>& counts) {
    Statement s(handle,
                "INSERT INTO activity(account, kind, count, first_at, last_at) VALUES(?1, ?2, ?3, ?4, ?5) "
                "ON CONFLICT(account, kind) DO UPDATE SET count = count + excluded.count, "
                "first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)");
    for (const ActivityCount& a : counts) {
        s.bind(1, a.account).bind(2, a.kind).bind(3, a.count).bind(4, a.firstAt).bind(5, a.lastAt);
        s.step();
        s.reset();
    }
}

MessageSummary readSummary(const Statement& s) {
    MessageSummary m;
    m.id = s.integer(0);
    m.queueId = s.text(1);
    m.mailbox = s.text(2);
    m.envelopeFrom = s.text(3);
    m.from = s.text(4);
    m.to = s.text(5);
    m.subject = s.text(6);
    m.date = s.text(7);
    m.receivedAt = s.integer(8);
    m.size = s.integer(9);
    return m;
}

// The credential generations (Store::credentialGeneration) of every process on one database file:
// kCredentialSlots 8-byte counters in a file beside it, <db>-generations. A cached login reads its
// slot with one pread: no SQLite, no lock, no -shm, and no mapping that a truncated file could turn
// into a SIGBUS. A change bumps the slot under flock (so no two processes lose a bump) after the
// commit that made it, so a login that read the old counter either read the old row too (and its
// entry is ended by the bump) or the new one. Made at full size with posix_fallocate, so a bump
// never meets a full disk. Removing the file while servers run is the same mistake as removing the
// -shm file: they keep the one they opened (docs/design.md, "Credential cache").
// After the credential slots come kMailboxSlots more, one per hash of a mailbox's address, bumped
// after every commit that adds or removes its messages: a mailbox's totals (the listing's validator,
// the quota's bytes) are kept in memory while its slot is unchanged (SqliteStore::mailboxStats).
constexpr uint32_t kMailboxSlots = 4096;
uint32_t mailboxSlot(const std::string& mailbox) { return kCredentialSlots + credentialSlot(mailbox) % kMailboxSlots; }

// What a read found, kept with the generation of its slot (read before the row) and given back while
// the slot still holds that generation: SqliteStore::mailboxStats and findAccount. Bounded: past
// kEntries it starts again empty (a few MB at most).
template <typename Value>
class GenerationMemo {
public:
    std::optional<Value> find(const std::string& key, uint64_t generation) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = entries_.find(key);
        if (it == entries_.end() || it->second.first != generation) return std::nullopt;
        return it->second.second;
    }
    void keep(const std::string& key, uint64_t generation, Value value) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (entries_.size() >= kEntries) entries_.clear();
        entries_[key] = {generation, std::move(value)};
    }

private:
    static constexpr size_t kEntries = 16384;
    std::mutex mutex_;
    std::unordered_map<std::string, std::pair<uint64_t, Value>> entries_;
};

class GenerationFile {
public:
    explicit GenerationFile(const std::string& databasePath) : path_(databasePath + "-generations") {
        if (databasePath.empty() || databasePath == ":memory:" || databasePath.rfind("file:", 0) == 0) return;
        fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd_ < 0) return;  // a read-only folder: every cached login reads the account instead
        struct stat st {};
        // A file made by an earlier version (credential slots only) grows: its servers read the first part.
        off_t size = static_cast<off_t>((kCredentialSlots + kMailboxSlots) * sizeof(uint64_t));
        if (::fstat(fd_, &st) != 0 || (st.st_size < size && ::posix_fallocate(fd_, 0, size) != 0)) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    ~GenerationFile() {
        if (fd_ >= 0) ::close(fd_);
    }
    GenerationFile(const GenerationFile&) = delete;
    GenerationFile& operator=(const GenerationFile&) = delete;

    std::optional<uint64_t> read(uint32_t slot) const {
        uint64_t value = 0;
        if (fd_ < 0 || ::pread(fd_, &value, sizeof value, static_cast<off_t>(slot) * sizeof value) != sizeof value)
            return std::nullopt;  // cut short by someone: no cached login is trusted on it
        return value;
    }

    void bump(uint32_t slot) {
        if (!bumpAll({slot}))
            throw StoreError("the change is stored, but " + path_ + " could not be updated: the servers may accept "
                             "the old password from their caches for up to auth.cacheTtlSeconds; restart them");
    }

    // The mailboxes' slots after a commit that changed their messages. Never throws: the messages are
    // stored (a delivery's 250 must follow); a slot that could not be bumped stops this process
    // trusting the file (every read goes to SQLite), and the next successful bump ends other
    // processes' stale totals (the -shm file's rule: nothing but maillab writes beside the database).
    void bumpMailboxes(const std::vector<uint32_t>& slots) noexcept {
        if (!bumpAll(slots)) disabled_ = true;
    }
    // The same, giving each slot's value before this bump (nullopt where it failed or the file is not kept).
    std::vector<std::optional<uint64_t>> bumpMailboxesFrom(const std::vector<uint32_t>& slots) noexcept {
        std::vector<std::optional<uint64_t>> before(slots.size());
        if (!bumpAll(slots, &before)) disabled_ = true;
        return before;
    }

    std::vector<uint32_t> everyMailboxSlot() const {
        std::vector<uint32_t> slots(kMailboxSlots);
        for (uint32_t i = 0; i < kMailboxSlots; ++i) slots[i] = kCredentialSlots + i;
        return slots;
    }

    bool trusted() const { return fd_ >= 0 && !disabled_; }

private:
    // Each slot + 1 under one flock (so no two processes lose a bump); false if any failed.
    bool bumpAll(const std::vector<uint32_t>& slots, std::vector<std::optional<uint64_t>>* before = nullptr) noexcept {
        if (fd_ < 0) return true;
        if (::flock(fd_, LOCK_EX) != 0) return false;
        bool ok = true;
        for (size_t i = 0; i < slots.size(); ++i) {
            uint64_t value = 0;
            off_t at = static_cast<off_t>(slots[i]) * sizeof value;
            if (::pread(fd_, &value, sizeof value, at) != sizeof value) {
                ok = false;
                continue;
            }
            uint64_t was = value++;
            bool wrote = ::pwrite(fd_, &value, sizeof value, at) == sizeof value;
            if (wrote && before) (*before)[i] = was;
            ok = wrote && ok;
        }
        ::flock(fd_, LOCK_UN);
        return ok;
    }

    std::string path_;
    int fd_ = -1;
    std::atomic<bool> disabled_{false};
};

class SqliteStore final : public Store {
public:
    explicit SqliteStore(const SqliteOptions& options) : options_(options), generations_(options.path) {
        try {
            Connection c(*this);
            migrate(c.db);
        } catch (...) {
            closeAll();  // the destructor does not run when the constructor throws
            throw;
        }
    }

    ~SqliteStore() override {
        groupCommit_.stop();  // what deliverAsync holds is committed while the connections are there
        closeAll();
    }

    // Every RCPT asks (does the mailbox exist?): an account found is kept in memory while its slot in
    // the generations file is unchanged (a deletion, a new password or role bumps it after its
    // commit; the slot is read before the row, as mailboxStats does). One not found is read each
    // time: a registration does not bump.
    std::optional<Account> findAccount(const std::string& email) override {
        std::optional<uint64_t> generation;
        if (generations_.trusted()) generation = generations_.read(credentialSlot(email));
        if (generation)
            if (std::optional<Account> kept = accounts_.find(email, *generation)) return kept;
        std::optional<Account> account;
        {
            Connection c(*this);
            Statement s(*c.handle,
                        "SELECT email, password_hash, created_at, role FROM accounts WHERE email = ?1");
            s.bind(1, email);
            if (s.step()) account = Account{s.text(0), s.text(1), s.integer(2), s.text(3)};
        }
        if (generation && account) accounts_.keep(email, *generation, *account);
        return account;
    }

    bool deleteAccount(const std::string& email) override {
        Connection c(*this);
        Transaction tx(c.db);
        Statement mail(*c.handle, "DELETE FROM messages WHERE mailbox = ?1");
        mail.bind(1, email);
        mail.step();
        Statement account(*c.handle, "DELETE FROM accounts WHERE email = ?1");
        account.bind(1, email);
        account.step();
        bool deleted = sqlite3_changes(c.db) == 1;
        tx.commit();
        generations_.bumpMailboxes({mailboxSlot(email)});
        generations_.bump(credentialSlot(email));
        return deleted;
    }

    std::vector<Account> listAccounts() override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT email, password_hash, created_at, role FROM accounts ORDER BY email");
        std::vector<Account> out;
        while (s.step()) out.push_back(Account{s.text(0), s.text(1), s.integer(2), s.text(3)});
        return out;
    }

    bool setRole(const std::string& email, const std::string& role) override {
        Connection c(*this);
        Statement s(*c.handle, "UPDATE accounts SET role = ?2 WHERE email = ?1");
        s.bind(1, email).bind(2, role);
        s.step();
        bool changed = sqlite3_changes(c.db) == 1;
        generations_.bump(credentialSlot(email));  // findAccount's memory holds the role too
        return changed;
    }

    bool createAccount(const std::string& email, const std::string& passwordHash, int64_t now) override {
        Connection c(*this);
        Statement s(*c.handle, "INSERT OR IGNORE INTO accounts(email, password_hash, created_at) VALUES(?1, ?2, ?3)");
        s.bind(1, email).bind(2, passwordHash).bind(3, now);
        s.step();
        return sqlite3_changes(c.db) == 1;
    }

    bool setPasswordHash(const std::string& email, const std::string& passwordHash) override {
        Connection c(*this);
        Statement s(*c.handle, "UPDATE accounts SET password_hash = ?2 WHERE email = ?1");
        s.bind(1, email).bind(2, passwordHash);
        s.step();
        bool changed = sqlite3_changes(c.db) == 1;
        generations_.bump(credentialSlot(email));  // after the commit (autocommit): see GenerationFile
        return changed;
    }

    double takeGuess(const std::string& key, double burst, double refillSeconds, int64_t now) override {
        Connection c(*this);
        // BEGIN IMMEDIATE: the read and the write below are one step for every process on the file.
        Transaction tx(c.db);
        double tokens = burst;
        int64_t updated = now;
        {
            Statement read(*c.handle, "SELECT tokens, updated FROM auth_budget WHERE key = ?1");
            read.bind(1, key);
            if (read.step()) {
                tokens = read.real(0);
                updated = read.integer(1);
            }
        }
        tokens = refilledTokens(tokens, updated, now, burst, refillSeconds);
        if (tokens < 1.0) {
            tx.commit();  // nothing written: no fsync for a refused guess
            return secondsUntilToken(tokens, refillSeconds);
        }
        Statement write(*c.handle,
                        "INSERT INTO auth_budget(key, email, tokens, updated) VALUES(?1, ?2, ?3, ?4) "
                        "ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated");
        write.bind(1, key).bind(2, key.substr(key.find(':') + 1, key.find('|') - key.find(':') - 1))
            .bind(3, tokens - 1.0).bind(4, std::max(now, updated));
        write.step();
        tx.commit();
        // A guess taken: a cached password must not be compared again before the budget is read.
        generations_.bump(credentialSlot(key.substr(key.find(':') + 1, key.find('|') - key.find(':') - 1)));
        return 0;
    }

    std::optional<uint64_t> credentialGeneration(const std::string& email) override {
        return generations_.read(credentialSlot(email));
    }

    std::optional<LoginState> loginState(const std::string& email, const std::string& source) override {
        Connection c(*this);
        // The budget key as Authenticator builds it: pair:<email>|<source> for a trusted source.
        // Three index searches and nothing materialized (EXPLAIN QUERY PLAN; the CTE this replaced
        // was built into a temporary table on every login).
        Statement s(*c.handle,
                    "SELECT a.password_hash, t.email IS NOT NULL, b.tokens, b.updated FROM accounts a "
                    "LEFT JOIN auth_trusted t ON t.email = ?1 AND t.source = ?2 AND ?2 <> '' "
                    "LEFT JOIN auth_budget b ON b.key = CASE WHEN t.email IS NOT NULL THEN 'pair:' || ?1 || '|' || ?2 "
                    "ELSE 'acct:' || ?1 END WHERE a.email = ?1");
        s.bind(1, email).bind(2, source);
        if (!s.step()) return std::nullopt;
        LoginState state;
        state.passwordHash = s.text(0);
        state.trusted = s.integer(1) != 0;
        state.hasBucket = !s.isNull(2);
        state.tokens = s.real(2);
        state.updated = s.integer(3);
        return state;
    }

    void clearGuessBudgets(const std::string& email) override {
        Connection c(*this);
        Statement s(*c.handle, "DELETE FROM auth_budget WHERE email = ?1");
        s.bind(1, email);
        s.step();
    }

    void returnGuess(const std::string& key, double burst) override {
        Connection c(*this);
        Statement s(*c.handle, "UPDATE auth_budget SET tokens = min(?2, tokens + 1) WHERE key = ?1");
        s.bind(1, key).bind(2, burst);
        s.step();
    }

    bool isTrustedSource(const std::string& email, const std::string& source) override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT 1 FROM auth_trusted WHERE email = ?1 AND source = ?2");
        s.bind(1, email).bind(2, source);
        return s.step();
    }

    bool recordTlsLogin(const TlsSessionRecord& r) override {
        Connection c(*this);
        return insertTlsLogin(*c.handle, r);
    }

    std::vector<TlsSessionRecord> findTlsSessions(const std::vector<std::string>& clientRandoms) override {
        Connection c(*this);
        std::vector<TlsSessionRecord> out;
        auto read = [&](Statement& s) {
            while (s.step()) out.push_back(TlsSessionRecord{s.text(0), s.text(1), s.text(2), s.text(3), s.integer(4), s.text(5)});
        };
        const std::string columns = "SELECT client_random, server_random, service, peer, started_at, account FROM tls_logins";
        if (clientRandoms.empty()) {
            Statement s(*c.handle, columns + " ORDER BY started_at");
            read(s);
            return out;
        }
        Statement s(*c.handle, columns + " WHERE client_random = ?1");
        for (const std::string& random : clientRandoms) {
            s.bind(1, random);
            read(s);
            s.reset();
        }
        return out;
    }

    int64_t forgetTlsSessionsBefore(int64_t cutoff) override {
        Connection c(*this);
        Statement s(*c.handle, "DELETE FROM tls_logins WHERE started_at < ?1");
        s.bind(1, cutoff);
        s.step();
        return sqlite3_changes(c.db);
    }

    void recordActivity(const std::vector<ActivityCount>& counts) override {
        if (counts.empty()) return;
        Connection c(*this);
        Transaction tx(c.db);
        addActivityCounts(*c.handle, counts);
        tx.commit();
    }

    std::vector<ActivityCount> listActivity() override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT account, kind, count, first_at, last_at FROM activity ORDER BY account, kind");
        std::vector<ActivityCount> out;
        while (s.step()) out.push_back(ActivityCount{s.text(0), s.text(1), s.integer(2), s.integer(3), s.integer(4)});
        return out;
    }

    void trustSource(const std::string& email, const std::string& source, int64_t now) override {
        Connection c(*this);
        Statement s(*c.handle,
                    "INSERT INTO auth_trusted(email, source, last_ok) VALUES(?1, ?2, ?3) "
                    "ON CONFLICT(email, source) DO UPDATE SET last_ok = excluded.last_ok");
        s.bind(1, email).bind(2, source).bind(3, now);
        s.step();
    }

    // Group commit (group_commit.h, the PostgreSQL store's too): one transaction and one fsync for
    // every delivery waiting; each caller returns after the commit that holds its rows.
    std::vector<int64_t> deliver(const NewMessage& message) override { return groupCommit_.deliver(message); }
    void deliverAsync(std::shared_ptr<const NewMessage> message, Delivered done) override {
        groupCommit_.deliverAsync(std::move(message), std::move(done));
    }

    std::vector<MessageSummary> listMessages(const std::string& mailbox, int64_t offset, int64_t limit) override {
        Connection c(*this);
        std::string sql = std::string("SELECT ") + kSummaryColumns +
                          " FROM messages WHERE mailbox = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3";
        Statement s(*c.handle, sql);
        s.bind(1, mailbox).bind(2, limit).bind(3, offset);
        std::vector<MessageSummary> result;
        while (s.step()) result.push_back(readSummary(s));
        return result;
    }

    std::vector<MessageStart> listMessageStarts(const std::string& mailbox, int64_t offset, int64_t limit,
                                                int64_t startBytes) override {
        Connection c(*this);
        // raw is a BLOB: substr counts bytes.
        std::string sql = std::string("SELECT ") + kSummaryColumns + ", substr(" + kMessageText +
                          ", 1, ?4) FROM messages WHERE mailbox = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3";
        Statement s(*c.handle, sql);
        s.bind(1, mailbox).bind(2, limit).bind(3, offset).bind(4, startBytes);
        std::vector<MessageStart> result;
        while (s.step()) result.push_back(MessageStart{readSummary(s), s.text(10)});
        return result;
    }

    std::optional<StoredMessage> getMessage(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        std::string sql =
            std::string("SELECT ") + kSummaryColumns + ", " + kMessageText + " FROM messages WHERE mailbox = ?1 AND id = ?2";
        Statement s(*c.handle, sql);
        s.bind(1, mailbox).bind(2, id);
        if (!s.step()) return std::nullopt;
        return StoredMessage{readSummary(s), s.text(10)};
    }

    std::optional<MessageSummary> findMessage(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        Statement s(*c.handle, std::string("SELECT ") + kSummaryColumns + " FROM messages WHERE mailbox = ?1 AND id = ?2");
        s.bind(1, mailbox).bind(2, id);
        if (!s.step()) return std::nullopt;
        return readSummary(s);
    }

    std::optional<std::string> messageStory(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT coalesce((SELECT b.story FROM bodies b WHERE b.id = messages.body_id), '') "
                               "FROM messages WHERE mailbox = ?1 AND id = ?2");
        s.bind(1, mailbox).bind(2, id);
        if (!s.step()) return std::nullopt;
        return s.text(0);
    }

    // Every listing asks (its validator) and every RCPT (the quota): answered from memory while the
    // mailbox's slot in the generations file is unchanged. The slot is read before the row: a commit
    // after that read bumps it after, so totals read too early are never trusted again.
    MailboxStats mailboxStats(const std::string& mailbox) override {
        std::optional<uint64_t> generation;
        if (generations_.trusted()) generation = generations_.read(mailboxSlot(mailbox));
        if (generation)
            if (std::optional<MailboxStats> kept = stats_.find(mailbox, *generation)) return *kept;
        MailboxStats stats;
        {
            Connection c(*this);
            Statement s(*c.handle,
                        "SELECT count, newest_id, newest_received_at, bytes, changed_at FROM mailbox_stats WHERE mailbox = ?1");
            s.bind(1, mailbox);
            if (s.step()) stats = MailboxStats{s.integer(0), s.integer(1), s.integer(2), s.integer(3), s.integer(4)};
        }
        if (generation) stats_.keep(mailbox, *generation, stats);
        return stats;
    }

    int64_t deleteMessages(const std::string& mailbox, const std::vector<int64_t>& ids) override {
        if (ids.empty()) return 0;
        Connection c(*this);
        Transaction tx(c.db);
        // The triggers of schema 6 (messages_uncount) keep mailbox_stats and bodies right.
        Statement s(*c.handle, "DELETE FROM messages WHERE mailbox = ?1 AND id = ?2");
        int64_t removed = 0;
        for (int64_t id : ids) {
            s.bind(1, mailbox).bind(2, id);
            s.step();
            removed += sqlite3_changes(c.db);
            s.reset();
        }
        tx.commit();
        generations_.bumpMailboxes({mailboxSlot(mailbox)});
        return removed;
    }

    std::vector<std::string> listMailboxes() override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT mailbox FROM mailbox_stats WHERE count > 0 ORDER BY mailbox");
        std::vector<std::string> out;
        while (s.step()) out.push_back(s.text(0));
        return out;
    }

    std::vector<TrustedSource> listTrustedSources() override {
        Connection c(*this);
        Statement s(*c.handle, "SELECT email, source, last_ok FROM auth_trusted ORDER BY email, source");
        std::vector<TrustedSource> out;
        while (s.step()) out.push_back(TrustedSource{s.text(0), s.text(1), s.integer(2)});
        return out;
    }

    std::unique_ptr<StoreImport> beginImport() override {
        return std::make_unique<TransactionImport<ImportWrites>>(*this);
    }

private:
    struct Connection;

    // A move into this store (store_import.h): the SQL of each kind of row, in one BEGIN IMMEDIATE
    // transaction on the import's one connection.
    struct ImportWrites {
        using Connection = SqliteStore::Connection;
        using Transaction = maillab::Transaction;
        static std::unique_ptr<Transaction> begin(Connection& c) { return std::make_unique<Transaction>(c.db); }
        static bool addAccount(Connection& c, const Account& a) {
            Statement s(*c.handle,
                        "INSERT OR IGNORE INTO accounts(email, password_hash, created_at, role) VALUES(?1, ?2, ?3, ?4)");
            s.bind(1, a.email).bind(2, a.passwordHash).bind(3, a.createdAt).bind(4, a.role);
            s.step();
            return sqlite3_changes(c.db) == 1;
        }
        static std::vector<int64_t> addMessage(Connection& c, const NewMessage& m, const std::vector<int64_t>& ids) {
            Statement body(*c.handle, "INSERT INTO bodies(raw, story) VALUES(?1, ?2)");
            body.bindBlob(1, m.raw).bind(2, m.story);
            body.step();
            int64_t bodyId = sqlite3_last_insert_rowid(c.db);
            // ?11 left unbound (NULL) numbers the row as deliver() does.
            Statement s(*c.handle,
                        "INSERT INTO messages(id, queue_id, mailbox, envelope_from, header_from, header_to, subject, date, "
                        "received_at, size, raw, body_id) VALUES(?11, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, x'', ?10)");
            std::vector<int64_t> out;
            for (size_t i = 0; i < m.recipients.size(); ++i) {
                s.bind(1, m.queueId).bind(2, m.recipients[i]).bind(3, m.envelopeFrom).bind(4, m.from).bind(5, m.to);
                s.bind(6, m.subject).bind(7, m.date).bind(8, m.receivedAt).bind(9, static_cast<int64_t>(m.raw.size()));
                s.bind(10, bodyId);
                if (!ids.empty()) s.bind(11, ids[i]);
                s.step();
                out.push_back(sqlite3_last_insert_rowid(c.db));
                s.reset();
            }
            return out;
        }
        static void addTrustedSource(Connection& c, const TrustedSource& t) {
            Statement s(*c.handle,
                        "INSERT INTO auth_trusted(email, source, last_ok) VALUES(?1, ?2, ?3) "
                        "ON CONFLICT(email, source) DO UPDATE SET last_ok = max(last_ok, excluded.last_ok)");
            s.bind(1, t.email).bind(2, t.source).bind(3, t.lastOk);
            s.step();
        }
        static bool addTlsLogin(Connection& c, const TlsSessionRecord& r) { return insertTlsLogin(*c.handle, r); }
        static void addActivity(Connection& c, const std::vector<ActivityCount>& counts) { addActivityCounts(*c.handle, counts); }
        // SQLite numbers a new row past the largest id there is: nothing to move.
        static void afterNumberedMessages(Connection&) {}
        // Any mailbox may have changed: every mailbox slot (a rare, whole-store move).
        static void afterCommit(Connection& c) {
            c.store.generations_.bumpMailboxes(c.store.generations_.everyMailboxSlot());
        }
    };

    void commitBatch(const std::vector<GroupCommit::Delivery*>& batch) {
        std::vector<CommittedTotals> totalsAfter;
        try {
            Connection c(*this);
            Transaction tx(*c.handle);
            Statement body(*c.handle, "INSERT INTO bodies(raw, story) VALUES(?1, ?2)");
            Statement s(*c.handle,
                        "INSERT INTO messages(queue_id, mailbox, envelope_from, header_from, header_to, subject, date, "
                        "received_at, size, raw, body_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, x'', ?10)");
            for (GroupCommit::Delivery* p : batch) {
                const NewMessage& m = *p->message;
                // The text once, however many mailboxes: 100 recipients of 10 MB are 10 MB on disk.
                body.bindBlob(1, m.raw).bind(2, m.story);
                body.step();
                int64_t bodyId = sqlite3_last_insert_rowid(c.db);
                body.reset();
                for (const std::string& mailbox : m.recipients) {
                    s.bind(1, m.queueId).bind(2, mailbox).bind(3, m.envelopeFrom).bind(4, m.from);
                    s.bind(5, m.to).bind(6, m.subject).bind(7, m.date).bind(8, m.receivedAt);
                    s.bind(9, static_cast<int64_t>(m.raw.size())).bind(10, bodyId);
                    s.step();
                    p->ids.push_back(sqlite3_last_insert_rowid(c.db));
                    s.reset();
                }
            }
            totalsAfter = totalsInTransaction(*c.handle, batch);
            tx.commit();
        } catch (...) {
            for (GroupCommit::Delivery* p : batch) {
                p->ids.clear();
                p->error = std::current_exception();
            }
            return;
        }
        // One bump per mailbox however many of the batch's messages it got (kept-open delivery to one
        // mailbox batches many): a changed counter is all a reader needs to see.
        std::vector<uint32_t> slots;
        for (const CommittedTotals& t : totalsAfter) slots.push_back(mailboxSlot(t.mailbox));
        std::sort(slots.begin(), slots.end());
        slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
        std::vector<std::optional<uint64_t>> before = generations_.bumpMailboxesFrom(slots);
        // The totals this commit left, kept for the bumped generation when no other change came between:
        // the slot held, at our bump, what it held inside our transaction (with the write lock, so every
        // commit before ours is in the totals). A commit after ours bumps again (after it), as for any
        // read. Without this, each RCPT's and each DATA's quota check read SQLite while messages kept
        // arriving for one mailbox (issue 22: its slot changed at every commit).
        for (const CommittedTotals& t : totalsAfter) {
            if (!t.generation) continue;
            size_t at = static_cast<size_t>(std::lower_bound(slots.begin(), slots.end(), mailboxSlot(t.mailbox)) - slots.begin());
            if (before[at] && *before[at] == *t.generation) stats_.keep(t.mailbox, *t.generation + 1, t.stats);
        }
    }

    // A mailbox's totals as the batch's transaction leaves them, with its slot's generation read inside it.
    struct CommittedTotals {
        std::string mailbox;
        std::optional<uint64_t> generation;
        MailboxStats stats;
    };
    std::vector<CommittedTotals> totalsInTransaction(Handle& handle, const std::vector<GroupCommit::Delivery*>& batch) {
        std::vector<std::string> mailboxes;
        for (GroupCommit::Delivery* p : batch)
            mailboxes.insert(mailboxes.end(), p->message->recipients.begin(), p->message->recipients.end());
        std::sort(mailboxes.begin(), mailboxes.end());
        mailboxes.erase(std::unique(mailboxes.begin(), mailboxes.end()), mailboxes.end());
        std::vector<CommittedTotals> out;
        out.reserve(mailboxes.size());
        bool trusted = generations_.trusted();
        Statement s(handle, "SELECT count, newest_id, newest_received_at, bytes, changed_at FROM mailbox_stats WHERE mailbox = ?1");
        for (std::string& mailbox : mailboxes) {
            CommittedTotals t;
            if (trusted) t.generation = generations_.read(mailboxSlot(mailbox));
            if (t.generation) {
                s.bind(1, mailbox);
                if (s.step()) t.stats = MailboxStats{s.integer(0), s.integer(1), s.integer(2), s.integer(3), s.integer(4)};
                s.reset();
            }
            t.mailbox = std::move(mailbox);
            out.push_back(std::move(t));
        }
        return out;
    }

    // Borrows a pooled connection for the duration of one call.
    struct Connection {
        explicit Connection(SqliteStore& store) : store(store), handle((store.checkSharedMemory(), store.acquire())), db(handle->db) {}
        ~Connection() { store.release(handle); }
        SqliteStore& store;
        Handle* handle;
        sqlite3* db;
    };

    // WAL mode maps <db>-shm into memory. If that file is truncated or replaced while in use (another
    // program, a student's clean-up), the next access to the mapping is a SIGBUS that no error code
    // can catch: so before each use, its size and inode are compared with what this process has seen,
    // and a damaged file is refused (451 / 503 and a log line) instead of touched.
    void checkSharedMemory() {
        struct stat st {};
        std::string shm = options_.path + "-shm";
        if (::stat(shm.c_str(), &st) != 0) {
            if (shmLargest_ == 0) return;  // not created yet (first open)
            throw StoreError("the database's shared-memory file " + shm + " was removed while in use; "
                             "stop every maillab server, then start them again");
        }
        std::lock_guard<std::mutex> lock(mutex_);
        if (shmLargest_ != 0 && (st.st_ino != shmInode_ || static_cast<uint64_t>(st.st_size) < shmLargest_))
            throw StoreError("the database's shared-memory file " + shm + " was truncated or replaced while in use; "
                             "stop every maillab server, then start them again");
        shmInode_ = st.st_ino;
        shmLargest_ = std::max<uint64_t>(shmLargest_, static_cast<uint64_t>(st.st_size));
    }

    void closeAll() {
        for (Handle* h : idle_) delete h;
        idle_.clear();
    }

    ino_t shmInode_ = 0;
    uint64_t shmLargest_ = 0;

    Handle* acquire() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (!idle_.empty()) {
                Handle* h = idle_.back();
                idle_.pop_back();
                return h;
            }
        }
        auto* h = new Handle;
        h->db = open();
        return h;
    }

    void release(Handle* h) {
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.push_back(h);
    }

    sqlite3* open() {
        sqlite3* db = nullptr;
        int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
        if (sqlite3_open_v2(options_.path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
            std::string message = db ? sqlite3_errmsg(db) : "out of memory";
            sqlite3_close(db);
            throw StoreError("cannot open database " + options_.path + ": " + message);
        }
        ::chmod(options_.path.c_str(), 0600);
        sqlite3_busy_timeout(db, options_.busyTimeoutMs);
        try {
            // Switching to WAL needs a moment alone with the file: when the sender and the retriever
            // start together on a new database, one waits for the other (SQLite's busy handler does
            // not cover this pragma).
            for (int waited = 0;; waited += 10) {
                try {
                    exec(db, "PRAGMA journal_mode=WAL");
                    break;
                } catch (const StoreError&) {
                    if (sqlite3_errcode(db) != SQLITE_BUSY && sqlite3_errcode(db) != SQLITE_LOCKED) throw;
                    if (waited >= options_.busyTimeoutMs) throw;
                    sqlite3_sleep(10);
                }
            }
            std::string sync = "PRAGMA synchronous=" + options_.synchronous;
            exec(db, sync.c_str());
            exec(db, "PRAGMA foreign_keys=ON");
        } catch (...) {
            sqlite3_close(db);
            throw;
        }
        return db;
    }

    static void migrate(sqlite3* db) {
        Transaction tx(db);
        int64_t current = 0;
        {
            Statement version(db, "PRAGMA user_version");
            version.step();
            current = version.integer(0);
        }
        if (current > kSqliteSchemaVersion)
            throw StoreError("database schema version " + std::to_string(current) + " is newer than this program");
        if (current == kSqliteSchemaVersion) {
            tx.commit();  // nothing to write: a server starts on a full disk
            return;
        }
        for (int version = static_cast<int>(current) + 1; version <= kSqliteSchemaVersion; ++version)
            exec(db, sqliteSchemaStep(version));
        exec(db, ("PRAGMA user_version=" + std::to_string(kSqliteSchemaVersion)).c_str());
        tx.commit();
    }

    SqliteOptions options_;
    GenerationFile generations_;
    GenerationMemo<MailboxStats> stats_;  // mailboxStats' memory, by mailbox slot
    GenerationMemo<Account> accounts_;    // findAccount's, by credential slot
    GroupCommit groupCommit_{[this](const std::vector<GroupCommit::Delivery*>& batch) { commitBatch(batch); },
                             options_.commitDelay};
    std::mutex mutex_;
    std::vector<Handle*> idle_;
};

}  // namespace

std::unique_ptr<Store> openSqliteStore(const SqliteOptions& options) {
    return std::make_unique<SqliteStore>(options);
}

}  // namespace maillab
