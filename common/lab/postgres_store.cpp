// PostgreSQL backend of the Store (libpq), for several sender and retriever instances on several
// machines sharing one database: prepared statements on a small pool of connections, real
// transactions, synchronous_commit on (a 250 means on the server's disk), row locks for the guess
// budget, group commit of deliveries, and a schema version in a table of its own. Keeps every promise
// the SQLite store makes (store.h); a database that cannot be reached is a StoreError naming it (never
// its password), and the next call connects again.
#include "group_commit.h"
#include "postgres_schema.h"
#include "store.h"
#include "store_import.h"

#include <libpq-fe.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <locale>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

namespace maillab {

namespace {

// Serialises the creation of the tables when several servers start at once on a new database
// (pg_advisory_xact_lock: held until that transaction ends). Any number: this one reads "447 21".
constexpr int64_t kMigrationLock = 44721;

std::string trimmed(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
}

// Statement parameters: strings go as bytes (binary BYTEA), numbers as text, in the C locale.
class Params {
public:
    Params& add(const std::string& bytes) { return push(bytes, 1); }
    Params& add(int64_t value) { return push(std::to_string(value), 0); }
    Params& add(double value) {
        std::ostringstream out;
        out.imbue(std::locale::classic());
        out.precision(17);
        out << value;
        return push(out.str(), 0);
    }
    int count() const { return static_cast<int>(values_.size()); }
    const char* const* values() {
        pointers_.clear();
        for (const std::string& v : values_) pointers_.push_back(v.data());
        return pointers_.data();
    }
    const int* lengths() const { return lengths_.data(); }
    const int* formats() const { return formats_.data(); }

private:
    Params& push(std::string value, int format) {
        lengths_.push_back(static_cast<int>(value.size()));
        values_.push_back(std::move(value));
        formats_.push_back(format);
        return *this;
    }
    std::deque<std::string> values_;
    std::vector<const char*> pointers_;
    std::vector<int> lengths_, formats_;
};

int hexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c - 'A' + 10;
}

// A statement's rows, in libpq's text format (BYTEA as \x and hex digits: bytea_output is set).
class Result {
public:
    explicit Result(PGresult* result) : result_(result) {}
    ~Result() { PQclear(result_); }
    Result(Result&& other) noexcept : result_(other.result_) { other.result_ = nullptr; }
    Result(const Result&) = delete;
    Result& operator=(const Result&) = delete;

    PGresult* get() const { return result_; }
    int rows() const { return PQntuples(result_); }
    bool isNull(int row, int column) const { return PQgetisnull(result_, row, column) != 0; }
    std::string bytes(int row, int column) const {
        const char* p = PQgetvalue(result_, row, column);
        size_t n = static_cast<size_t>(PQgetlength(result_, row, column));
        if (n < 2 || p[0] != '\\' || p[1] != 'x') return std::string(p, n);  // a text column
        std::string out;
        out.resize((n - 2) / 2);
        for (size_t i = 0; i < out.size(); ++i)
            out[i] = static_cast<char>(hexDigit(p[2 + 2 * i]) << 4 | hexDigit(p[3 + 2 * i]));
        return out;
    }
    int64_t integer(int row, int column) const { return std::strtoll(PQgetvalue(result_, row, column), nullptr, 10); }
    double real(int row, int column) const {
        std::istringstream in(PQgetvalue(result_, row, column));
        in.imbue(std::locale::classic());
        double value = 0;
        in >> value;
        return value;
    }
    bool boolean(int row, int column) const { return PQgetvalue(result_, row, column)[0] == 't'; }
    // Rows an INSERT, UPDATE or DELETE touched.
    int64_t affected() const { return std::strtoll(PQcmdTuples(result_), nullptr, 10); }

private:
    PGresult* result_;
};

// A pooled connection and the statements prepared on it (by SQL text: the name is made here).
struct Handle {
    PGconn* conn = nullptr;
    std::unordered_map<std::string, std::string> prepared;
    bool broken = false;  // the connection failed: closed instead of going back to the pool
    ~Handle() { PQfinish(conn); }
};

const char* const kSummaryColumns =
    "m.id, m.queue_id, m.mailbox, m.envelope_from, m.header_from, m.header_to, m.subject, m.date, m.received_at, m.size";

MessageSummary readSummary(const Result& r, int row) {
    MessageSummary m;
    m.id = r.integer(row, 0);
    m.queueId = r.bytes(row, 1);
    m.mailbox = r.bytes(row, 2);
    m.envelopeFrom = r.bytes(row, 3);
    m.from = r.bytes(row, 4);
    m.to = r.bytes(row, 5);
    m.subject = r.bytes(row, 6);
    m.date = r.bytes(row, 7);
    m.receivedAt = r.integer(row, 8);
    m.size = r.integer(row, 9);
    return m;
}

bool validSchemaName(const std::string& name) {
    if (name.empty() || name.size() > 63 || (name[0] >= '0' && name[0] <= '9')) return false;
    for (char c : name)
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    return true;
}

class PostgresStore final : public Store {
public:
    explicit PostgresStore(const PostgresOptions& options) : options_(options) {
        name_ = describe(options.url);
        if (!options_.schema.empty() && !validSchemaName(options_.schema))
            throw StoreSettingError("store.schema '" + options_.schema + "': use lower-case letters, digits and _");
        if (options_.maxConnections < 1) throw StoreSettingError("store.maxConnections must be at least 1");
        try {
            Connection c(*this);
            migrate(c);
        } catch (...) {
            closeAll();  // the destructor does not run when the constructor throws
            throw;
        }
    }

    ~PostgresStore() override { closeAll(); }

    std::optional<Account> findAccount(const std::string& email) override {
        Connection c(*this);
        Result r = c.run("SELECT email, password_hash, created_at, role FROM accounts WHERE email = $1", Params().add(email));
        if (r.rows() == 0) return std::nullopt;
        return Account{r.bytes(0, 0), r.bytes(0, 1), r.integer(0, 2), r.bytes(0, 3)};
    }

    bool createAccount(const std::string& email, const std::string& passwordHash, int64_t now) override {
        Connection c(*this);
        return c.run("INSERT INTO accounts(email, password_hash, created_at) VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
                     Params().add(email).add(passwordHash).add(now))
                   .affected() == 1;
    }

    bool setPasswordHash(const std::string& email, const std::string& passwordHash) override {
        Connection c(*this);
        Transaction tx(c);
        bool changed = c.run("UPDATE accounts SET password_hash = $2 WHERE email = $1", Params().add(email).add(passwordHash))
                           .affected() == 1;
        bumpGeneration(c, email);
        tx.commit();
        return changed;
    }

    bool deleteAccount(const std::string& email) override {
        Connection c(*this);
        Transaction tx(c);
        c.run("DELETE FROM messages WHERE mailbox = $1", Params().add(email));
        bool deleted = c.run("DELETE FROM accounts WHERE email = $1", Params().add(email)).affected() == 1;
        bumpGeneration(c, email);
        tx.commit();
        return deleted;
    }

    int64_t deleteMessages(const std::string& mailbox, const std::vector<int64_t>& ids) override {
        // POP3's UPDATE state: all or none, in one transaction; the triggers keep the mailbox's
        // totals and free a body with its last copy, as in SQLite.
        Connection c(*this);
        Transaction tx(c);
        int64_t removed = 0;
        for (int64_t id : ids)
            removed += c.run("DELETE FROM messages WHERE mailbox = $1 AND id = $2", Params().add(mailbox).add(id)).affected();
        tx.commit();
        return removed;
    }

    std::vector<Account> listAccounts() override {
        Connection c(*this);
        Result r = c.run("SELECT email, password_hash, created_at, role FROM accounts ORDER BY email");
        std::vector<Account> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(Account{r.bytes(i, 0), r.bytes(i, 1), r.integer(i, 2), r.bytes(i, 3)});
        return out;
    }

    bool setRole(const std::string& email, const std::string& role) override {
        Connection c(*this);
        return c.run("UPDATE accounts SET role = $2 WHERE email = $1", Params().add(email).add(role)).affected() == 1;
    }

    double takeGuess(const std::string& key, double burst, double refillSeconds, int64_t now) override {
        Connection c(*this);
        Transaction tx(c);
        // A bucket that was never used is full. Then the row is locked (FOR UPDATE) until COMMIT:
        // every instance of both servers that takes from this budget waits its turn, none can race.
        std::string email = key.substr(key.find(':') + 1, key.find('|') - key.find(':') - 1);
        c.run("INSERT INTO auth_budget(key, email, tokens, updated) VALUES($1, $2, $3, $4) ON CONFLICT DO NOTHING",
              Params().add(key).add(email).add(burst).add(now));
        Result read = c.run("SELECT tokens, updated FROM auth_budget WHERE key = $1 FOR UPDATE", Params().add(key));
        if (read.rows() != 1) throw StoreError(name_ + ": the guess budget " + key + " vanished");
        int64_t updated = read.integer(0, 1);
        double tokens = refilledTokens(read.real(0, 0), updated, now, burst, refillSeconds);
        if (tokens < 1.0) {
            tx.commit();
            return secondsUntilToken(tokens, refillSeconds);
        }
        c.run("UPDATE auth_budget SET tokens = $2, updated = $3 WHERE key = $1",
              Params().add(key).add(tokens - 1.0).add(std::max(now, updated)));
        // A guess taken: a cached password must not be compared again before the budget is read.
        bumpGeneration(c, email);
        tx.commit();
        return 0;
    }

    // One primary-key read: every instance sees another's change as soon as it is committed (the
    // bump is in the same transaction as the change, so the counter and the row move together).
    std::optional<uint64_t> credentialGeneration(const std::string& email) override {
        Connection c(*this);
        Result r = c.run("SELECT generation FROM auth_generation WHERE slot = $1",
                         Params().add(static_cast<int64_t>(credentialSlot(email))));
        return r.rows() == 0 ? 0 : static_cast<uint64_t>(r.integer(0, 0));
    }

    std::optional<LoginState> loginState(const std::string& email, const std::string& source) override {
        Connection c(*this);
        // The budget key as Authenticator builds it: pair:<email>|<source> for a trusted source.
        Result r = c.run(
            "SELECT a.password_hash, t.email IS NOT NULL, b.tokens, b.updated FROM accounts a "
            "LEFT JOIN auth_trusted t ON t.email = $1 AND t.source = $2 AND $2 <> ''::bytea "
            "LEFT JOIN auth_budget b ON b.key = CASE WHEN t.email IS NOT NULL THEN 'pair:'::bytea || $1 || '|'::bytea "
            "|| $2 ELSE 'acct:'::bytea || $1 END WHERE a.email = $1",
            Params().add(email).add(source));
        if (r.rows() == 0) return std::nullopt;
        LoginState state;
        state.passwordHash = r.bytes(0, 0);
        state.trusted = r.boolean(0, 1);
        state.hasBucket = !r.isNull(0, 2);
        state.tokens = state.hasBucket ? r.real(0, 2) : 0;
        state.updated = state.hasBucket ? r.integer(0, 3) : 0;
        return state;
    }

    void clearGuessBudgets(const std::string& email) override {
        Connection c(*this);
        c.run("DELETE FROM auth_budget WHERE email = $1", Params().add(email));
    }

    void returnGuess(const std::string& key, double burst) override {
        Connection c(*this);
        c.run("UPDATE auth_budget SET tokens = least($2::double precision, tokens + 1) WHERE key = $1",
              Params().add(key).add(burst));
    }

    bool isTrustedSource(const std::string& email, const std::string& source) override {
        Connection c(*this);
        return c.run("SELECT 1 FROM auth_trusted WHERE email = $1 AND source = $2", Params().add(email).add(source))
                   .rows() > 0;
    }

    void trustSource(const std::string& email, const std::string& source, int64_t now) override {
        Connection c(*this);
        c.run("INSERT INTO auth_trusted(email, source, last_ok) VALUES($1, $2, $3) "
              "ON CONFLICT(email, source) DO UPDATE SET last_ok = excluded.last_ok",
              Params().add(email).add(source).add(now));
    }

    // Group commit (group_commit.h, the SQLite store's too): every caller returns only after the
    // COMMIT that holds its rows (synchronous_commit on: in the server's WAL on disk). Each instance
    // groups its own deliveries.
    std::vector<int64_t> deliver(const NewMessage& message) override { return groupCommit_.deliver(message); }

    std::vector<MessageSummary> listMessages(const std::string& mailbox, int64_t offset, int64_t limit) override {
        Connection c(*this);
        Result r = c.run(std::string("SELECT ") + kSummaryColumns +
                             " FROM messages m WHERE m.mailbox = $1 ORDER BY m.id DESC LIMIT $2 OFFSET $3",
                         Params().add(mailbox).add(limit).add(offset));
        std::vector<MessageSummary> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(readSummary(r, i));
        return out;
    }

    std::vector<MessageStart> listMessageStarts(const std::string& mailbox, int64_t offset, int64_t limit,
                                                int64_t startBytes) override {
        Connection c(*this);
        Result r = c.run(std::string("SELECT ") + kSummaryColumns +
                             ", substring(b.raw FROM 1 FOR least($4::bigint, 2147483647)::integer) FROM messages m "
                             "JOIN bodies b ON b.id = m.body_id WHERE m.mailbox = $1 ORDER BY m.id DESC LIMIT $2 OFFSET $3",
                         Params().add(mailbox).add(limit).add(offset).add(std::max<int64_t>(startBytes, 0)));
        std::vector<MessageStart> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(MessageStart{readSummary(r, i), r.bytes(i, 10)});
        return out;
    }

    std::optional<StoredMessage> getMessage(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        Result r = c.run(std::string("SELECT ") + kSummaryColumns +
                             ", b.raw FROM messages m JOIN bodies b ON b.id = m.body_id WHERE m.mailbox = $1 AND m.id = $2",
                         Params().add(mailbox).add(id));
        if (r.rows() == 0) return std::nullopt;
        return StoredMessage{readSummary(r, 0), r.bytes(0, 10)};
    }

    std::optional<MessageSummary> findMessage(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        Result r = c.run(std::string("SELECT ") + kSummaryColumns + " FROM messages m WHERE m.mailbox = $1 AND m.id = $2",
                         Params().add(mailbox).add(id));
        if (r.rows() == 0) return std::nullopt;
        return readSummary(r, 0);
    }

    MailboxStats mailboxStats(const std::string& mailbox) override {
        Connection c(*this);
        Result r = c.run("SELECT count, newest_id, newest_received_at, bytes, changed_at FROM mailbox_stats WHERE mailbox = $1",
                         Params().add(mailbox));
        if (r.rows() == 0) return MailboxStats{};
        return MailboxStats{r.integer(0, 0), r.integer(0, 1), r.integer(0, 2), r.integer(0, 3), r.integer(0, 4)};
    }

    std::optional<std::string> messageStory(const std::string& mailbox, int64_t id) override {
        Connection c(*this);
        Result r = c.run("SELECT b.story FROM messages m JOIN bodies b ON b.id = m.body_id WHERE m.mailbox = $1 AND m.id = $2",
                         Params().add(mailbox).add(id));
        if (r.rows() == 0) return std::nullopt;
        return r.bytes(0, 0);
    }

    bool recordTlsLogin(const TlsSessionRecord& s) override {
        Connection c(*this);
        return insertTlsLogin(c, s);
    }

    std::vector<TlsSessionRecord> findTlsSessions(const std::vector<std::string>& clientRandoms) override {
        Connection c(*this);
        std::vector<TlsSessionRecord> out;
        auto read = [&](const Result& r) {
            for (int i = 0; i < r.rows(); ++i)
                out.push_back(TlsSessionRecord{r.bytes(i, 0), r.bytes(i, 1), r.bytes(i, 2), r.bytes(i, 3), r.integer(i, 4),
                                               r.bytes(i, 5)});
        };
        const std::string columns = "SELECT client_random, server_random, service, peer, started_at, account FROM tls_logins";
        if (clientRandoms.empty()) {
            read(c.run(columns + " ORDER BY started_at"));
            return out;
        }
        for (const std::string& random : clientRandoms) read(c.run(columns + " WHERE client_random = $1", Params().add(random)));
        return out;
    }

    int64_t forgetTlsSessionsBefore(int64_t cutoff) override {
        Connection c(*this);
        return c.run("DELETE FROM tls_logins WHERE started_at < $1", Params().add(cutoff)).affected();
    }

    void recordActivity(const std::vector<ActivityCount>& counts) override {
        if (counts.empty()) return;
        Connection c(*this);
        Transaction tx(c);
        addActivityCounts(c, counts);
        tx.commit();
    }

    std::vector<ActivityCount> listActivity() override {
        Connection c(*this);
        Result r = c.run("SELECT account, kind, count, first_at, last_at FROM activity ORDER BY account, kind");
        std::vector<ActivityCount> out;
        for (int i = 0; i < r.rows(); ++i)
            out.push_back(ActivityCount{r.bytes(i, 0), r.bytes(i, 1), r.integer(i, 2), r.integer(i, 3), r.integer(i, 4)});
        return out;
    }

    std::vector<std::string> listMailboxes() override {
        Connection c(*this);
        Result r = c.run("SELECT mailbox FROM mailbox_stats WHERE count > 0 ORDER BY mailbox");
        std::vector<std::string> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(r.bytes(i, 0));
        return out;
    }

    std::vector<TrustedSource> listTrustedSources() override {
        Connection c(*this);
        Result r = c.run("SELECT email, source, last_ok FROM auth_trusted ORDER BY email, source");
        std::vector<TrustedSource> out;
        for (int i = 0; i < r.rows(); ++i) out.push_back(TrustedSource{r.bytes(i, 0), r.bytes(i, 1), r.integer(i, 2)});
        return out;
    }

    std::unique_ptr<StoreImport> beginImport() override {
        return std::make_unique<TransactionImport<ImportWrites>>(*this);
    }

private:
    class Connection;
    class Transaction;

    // A move into this store (store_import.h): the SQL of each kind of row, on the import's one
    // connection and transaction.
    struct ImportWrites {
        using Connection = PostgresStore::Connection;
        using Transaction = PostgresStore::Transaction;
        static std::unique_ptr<Transaction> begin(Connection& c) { return std::make_unique<Transaction>(c); }
        static bool addAccount(Connection& c, const Account& a) {
            return c.run("INSERT INTO accounts(email, password_hash, created_at, role) VALUES($1, $2, $3, $4) "
                         "ON CONFLICT DO NOTHING",
                         Params().add(a.email).add(a.passwordHash).add(a.createdAt).add(a.role))
                       .affected() == 1;
        }
        static std::vector<int64_t> addMessage(Connection& c, const NewMessage& m, const std::vector<int64_t>& ids) {
            int64_t bodyId =
                c.run("INSERT INTO bodies(raw, story) VALUES($1, $2) RETURNING id", Params().add(m.raw).add(m.story))
                    .integer(0, 0);
            std::vector<int64_t> out;
            for (size_t i = 0; i < m.recipients.size(); ++i) {
                Params p;
                p.add(m.queueId).add(m.recipients[i]).add(m.envelopeFrom).add(m.from).add(m.to).add(m.subject)
                    .add(m.date).add(m.receivedAt).add(static_cast<int64_t>(m.raw.size())).add(bodyId);
                const char* numbered =
                    "INSERT INTO messages(queue_id, mailbox, envelope_from, header_from, header_to, subject, date, "
                    "received_at, size, body_id, id) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id";
                const char* fresh =
                    "INSERT INTO messages(queue_id, mailbox, envelope_from, header_from, header_to, subject, date, "
                    "received_at, size, body_id) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
                if (!ids.empty()) p.add(ids[i]);
                out.push_back(c.run(ids.empty() ? fresh : numbered, std::move(p)).integer(0, 0));
            }
            return out;
        }
        static void addTrustedSource(Connection& c, const TrustedSource& t) {
            c.run("INSERT INTO auth_trusted AS t (email, source, last_ok) VALUES($1, $2, $3) "
                  "ON CONFLICT(email, source) DO UPDATE SET last_ok = greatest(t.last_ok, excluded.last_ok)",
                  Params().add(t.email).add(t.source).add(t.lastOk));
        }
        static bool addTlsLogin(Connection& c, const TlsSessionRecord& r) { return insertTlsLogin(c, r); }
        static void addActivity(Connection& c, const std::vector<ActivityCount>& counts) { addActivityCounts(c, counts); }
        static void afterNumberedMessages(Connection& c) {
            // Rows given their ids do not advance the id sequence: the next delivery is numbered past them.
            c.run("SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages))");
        }
        static void afterCommit(Connection&) {}  // no totals are kept in memory here: nothing to end
    };

    // The writes the store's own methods share with an import.
    static bool insertTlsLogin(Connection& c, const TlsSessionRecord& s);
    static void addActivityCounts(Connection& c, const std::vector<ActivityCount>& counts);

    // Borrows a pooled connection for one call; runs prepared statements on it.
    class Connection {
    public:
        explicit Connection(PostgresStore& store) : store_(store), handle_(store.acquire()) {}
        ~Connection() { store_.release(handle_); }
        Connection(const Connection&) = delete;
        Connection& operator=(const Connection&) = delete;

        // Prepared once per connection (PQprepare), then PQexecPrepared with the parameters.
        Result run(const std::string& sql, Params params = Params()) {
            auto it = handle_->prepared.find(sql);
            if (it == handle_->prepared.end()) {
                std::string name = "maillab_" + std::to_string(handle_->prepared.size() + 1);
                Result prepared(PQprepare(handle_->conn, name.c_str(), sql.c_str(), 0, nullptr));
                check(prepared, PGRES_COMMAND_OK, "prepare");
                it = handle_->prepared.emplace(sql, name).first;
            }
            Result r(PQexecPrepared(handle_->conn, it->second.c_str(), params.count(), params.values(), params.lengths(),
                                    params.formats(), 0));
            if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) check(r, PGRES_COMMAND_OK, "query");
            return r;
        }
        // A statement without parameters or rows (BEGIN, COMMIT, SET): returns its command tag.
        std::string exec(const char* sql) {
            Result r(PQexec(handle_->conn, sql));
            check(r, PGRES_COMMAND_OK, sql);
            return PQcmdStatus(r.get());
        }
        Handle& handle() { return *handle_; }

    private:
        void check(const Result& r, ExecStatusType expected, const std::string& what) {
            if (r.get() && PQresultStatus(r.get()) == expected) return;
            std::string message = r.get() ? PQresultErrorMessage(r.get()) : "";
            if (message.empty()) message = PQerrorMessage(handle_->conn);
            if (PQstatus(handle_->conn) != CONNECTION_OK) handle_->broken = true;
            throw StoreError("PostgreSQL database " + store_.name_ + ": " + what + ": " + trimmed(message));
        }
        PostgresStore& store_;
        Handle* handle_;
    };
    friend class Connection;

    // BEGIN ... COMMIT, rolled back unless committed (an exception between leaves nothing behind).
    class Transaction {
    public:
        explicit Transaction(Connection& c) : c_(c) { c_.exec("BEGIN"); }
        ~Transaction() {
            if (done_) return;
            PGresult* r = PQexec(c_.handle().conn, "ROLLBACK");
            if (PQresultStatus(r) != PGRES_COMMAND_OK) c_.handle().broken = true;
            PQclear(r);
        }
        void commit() {
            done_ = true;
            // A transaction that failed answers COMMIT with ROLLBACK: that is no commit.
            std::string tag = c_.exec("COMMIT");
            if (tag != "COMMIT") throw StoreError("the transaction was rolled back (" + tag + ")");
        }

    private:
        Connection& c_;
        bool done_ = false;
    };

    void commitBatch(const std::vector<GroupCommit::Delivery*>& batch) {
        try {
            Connection c(*this);
            Transaction tx(c);
            for (GroupCommit::Delivery* p : batch) {
                const NewMessage& m = *p->message;
                // The text once, however many mailboxes: 100 recipients of 10 MB are 10 MB on disk.
                Result body = c.run("INSERT INTO bodies(raw, story) VALUES($1, $2) RETURNING id",
                                    Params().add(m.raw).add(m.story));
                int64_t bodyId = body.integer(0, 0);
                for (const std::string& mailbox : m.recipients) {
                    Result row = c.run(
                        "INSERT INTO messages(queue_id, mailbox, envelope_from, header_from, header_to, subject, date, "
                        "received_at, size, body_id) VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                        Params().add(m.queueId).add(mailbox).add(m.envelopeFrom).add(m.from).add(m.to).add(m.subject)
                            .add(m.date).add(m.receivedAt).add(static_cast<int64_t>(m.raw.size())).add(bodyId));
                    p->ids.push_back(row.integer(0, 0));
                }
            }
            tx.commit();
        } catch (...) {
            for (GroupCommit::Delivery* p : batch) {
                p->ids.clear();
                p->error = std::current_exception();
            }
        }
    }

    // "dbname on host:port as user", from the URI (never its password).
    static std::string describe(const std::string& url) {
        char* error = nullptr;
        PQconninfoOption* options = PQconninfoParse(url.c_str(), &error);
        if (!options) {
            std::string why = error ? trimmed(error) : "out of memory";
            PQfreemem(error);
            throw StoreSettingError("store.url is not a PostgreSQL connection URI (" + why + ")");
        }
        std::string db, host, port, user;
        for (PQconninfoOption* o = options; o->keyword; ++o) {
            std::string keyword = o->keyword, value = o->val ? o->val : "";
            if (keyword == "dbname") db = value;
            if (keyword == "host") host = value;
            if (keyword == "hostaddr" && host.empty()) host = value;
            if (keyword == "port") port = value;
            if (keyword == "user") user = value;
        }
        PQconninfoFree(options);
        std::string name = "'" + (db.empty() ? user : db) + "' on " + (host.empty() ? "the default socket" : host);
        if (!port.empty()) name += " port " + port;
        if (!user.empty()) name += " as " + user;
        return name;
    }

    PGconn* connect() {
        std::string timeout = std::to_string(options_.connectTimeoutSeconds);
        // The URI is expanded in place of dbname: what it says overrides the defaults before it.
        const char* keywords[] = {"connect_timeout", "application_name", "dbname", nullptr};
        const char* values[] = {timeout.c_str(), "maillab", options_.url.c_str(), nullptr};
        PGconn* conn = PQconnectdbParams(keywords, values, 1);
        if (!conn) throw StoreError("cannot reach PostgreSQL database " + name_ + ": out of memory");
        if (PQstatus(conn) != CONNECTION_OK) {
            std::string why = trimmed(PQerrorMessage(conn));
            PQfinish(conn);
            throw StoreError("cannot reach PostgreSQL database " + name_ + ": " + why);
        }
        // A 250 only after the commit is on the database server's disk, whatever its default; bytes
        // come back as hex (Result::bytes); the tables in store.schema when one is given.
        // Notices ("schema already exists, skipping") are not errors: not written to stderr.
        PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
        std::string setup = "SET synchronous_commit TO on; SET bytea_output TO hex; SET client_encoding TO 'UTF8'";
        if (!options_.schema.empty()) setup += "; SET search_path TO " + options_.schema;
        PGresult* r = PQexec(conn, setup.c_str());
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        std::string why = ok ? "" : trimmed(PQresultErrorMessage(r));
        PQclear(r);
        if (!ok) {
            PQfinish(conn);
            throw StoreError("PostgreSQL database " + name_ + ": " + why);
        }
        return conn;
    }

    Handle* acquire() {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            // At most maxConnections: a server with more threads than that waits for a free one.
            poolFree_.wait(lock, [this] { return !idle_.empty() || open_ < options_.maxConnections; });
            if (!idle_.empty()) {
                Handle* h = idle_.back();
                idle_.pop_back();
                return h;
            }
            ++open_;
        }
        auto* h = new Handle;
        try {
            h->conn = connect();
        } catch (...) {
            delete h;
            std::lock_guard<std::mutex> lock(mutex_);
            --open_;
            poolFree_.notify_one();
            throw;
        }
        return h;
    }

    // A connection that failed, or is left inside a transaction, is closed; and so are the idle
    // ones, which most likely lost the same server (a restart): the next call connects afresh.
    void release(Handle* h) {
        std::vector<Handle*> closing;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (h->broken || PQstatus(h->conn) != CONNECTION_OK || PQtransactionStatus(h->conn) != PQTRANS_IDLE) {
                closing.push_back(h);
                closing.insert(closing.end(), idle_.begin(), idle_.end());
                idle_.clear();
                open_ -= static_cast<int>(closing.size());
            } else {
                idle_.push_back(h);
            }
            poolFree_.notify_all();
        }
        for (Handle* c : closing) delete c;
    }

    void closeAll() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (Handle* h : idle_) delete h;
        open_ -= static_cast<int>(idle_.size());
        idle_.clear();
    }

    // Inside the caller's transaction, after the change itself: the slot's row is always the last lock
    // taken (after the budget's or the account's), so two changes never wait on each other in a cycle.
    void bumpGeneration(Connection& c, const std::string& email) {
        c.run("INSERT INTO auth_generation(slot, generation) VALUES($1, 1) "
              "ON CONFLICT (slot) DO UPDATE SET generation = auth_generation.generation + 1",
              Params().add(static_cast<int64_t>(credentialSlot(email))));
    }

    void migrate(Connection& c) {
        Transaction tx(c);
        c.run("SELECT pg_advisory_xact_lock($1)", Params().add(kMigrationLock));
        if (!options_.schema.empty()) c.exec(("CREATE SCHEMA IF NOT EXISTS " + options_.schema).c_str());
        bool exists = c.run("SELECT to_regclass('schema_version') IS NOT NULL").boolean(0, 0);
        int64_t current = kPostgresSchemaBase;
        if (!exists) {
            // Made whole at the base version, then brought up by the same migrations an older one takes.
            c.exec(kPostgresSchema);
            c.run("INSERT INTO schema_version(version) VALUES($1)", Params().add(current));
        } else {
            Result version = c.run("SELECT max(version) FROM schema_version");
            current = version.isNull(0, 0) ? 0 : version.integer(0, 0);
        }
        if (current > kPostgresSchemaVersion)
            throw StoreError("PostgreSQL database " + name_ + ": schema version " + std::to_string(current) +
                             " is newer than this program");
        if (current < kPostgresSchemaBase)
            throw StoreError("PostgreSQL database " + name_ + ": schema version " + std::to_string(current) +
                             " was not made by maillab");
        for (const PostgresMigration& m : postgresMigrations()) {
            if (!m.sql || m.version <= current) continue;
            c.exec(m.sql);
        }
        if (current < kPostgresSchemaVersion)
            c.run("UPDATE schema_version SET version = $1", Params().add(static_cast<int64_t>(kPostgresSchemaVersion)));
        createGenerations(c);
        tx.commit();
    }

    // The credential generations (Store::credentialGeneration): not part of the numbered schema (SQLite
    // keeps them in a file beside the database), created by whichever instance opens the database
    // first. A missing row is generation 0.
    static void createGenerations(Connection& c) {
        if (!c.run("SELECT to_regclass('auth_generation') IS NULL").boolean(0, 0)) return;
        c.exec("CREATE TABLE auth_generation (slot INTEGER PRIMARY KEY, generation BIGINT NOT NULL)");
    }

    PostgresOptions options_;
    std::string name_;
    GroupCommit groupCommit_{[this](const std::vector<GroupCommit::Delivery*>& batch) { commitBatch(batch); },
                             options_.commitDelay};
    std::mutex mutex_;
    std::condition_variable poolFree_;
    std::vector<Handle*> idle_;
    int open_ = 0;
};

bool PostgresStore::insertTlsLogin(Connection& c, const TlsSessionRecord& s) {
    return c.run("INSERT INTO tls_logins(client_random, server_random, service, peer, started_at, account) "
                 "VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                 Params().add(s.clientRandom).add(s.serverRandom).add(s.service).add(s.peer).add(s.startedAt).add(s.account))
               .affected() == 1;
}

void PostgresStore::addActivityCounts(Connection& c, const std::vector<ActivityCount>& counts) {
    for (const ActivityCount& a : counts)
        c.run("INSERT INTO activity AS t (account, kind, count, first_at, last_at) VALUES($1, $2, $3, $4, $5) "
              "ON CONFLICT(account, kind) DO UPDATE SET count = t.count + excluded.count, "
              "first_at = least(t.first_at, excluded.first_at), last_at = greatest(t.last_at, excluded.last_at)",
              Params().add(a.account).add(a.kind).add(a.count).add(a.firstAt).add(a.lastAt));
}

}  // namespace

std::unique_ptr<Store> openPostgresStore(const PostgresOptions& options) {
    return std::make_unique<PostgresStore>(options);
}

}  // namespace maillab
