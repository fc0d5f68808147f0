// Test fixtures: a temporary store (SQLite, or PostgreSQL with MAILLAB_TEST_PG_URL) and an
// authenticator with a cheap scrypt cost.
#pragma once
#include "../../common/lab/auth.h"
#include "../../common/lab/store.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <atomic>

#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

namespace maillab::testing {

struct TempDir {
    std::string path;
    TempDir() {
        char pattern[] = "/tmp/maillab-unit-XXXXXX";
        path = ::mkdtemp(pattern);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

inline AuthPolicy fastPolicy() {
    AuthPolicy policy;
    policy.scrypt = ScryptParams{1024, 8, 1};  // cheap for tests; the server's default is 16384
    return policy;
}

// The PostgreSQL database the store tests run against too (tests/pg_cluster.py sets it; `make test`
// with STORE=postgresql), or nullptr: then every fixture is SQLite.
inline const char* testPostgresUrl() {
    const char* url = std::getenv("MAILLAB_TEST_PG_URL");
    return url && *url ? url : nullptr;
}

// Runs one statement on the test's PostgreSQL database, outside the store (a fixture's clean-up,
// sabotage, or a look at what is on disk); false when it failed. `value`: the first row's first field.
inline bool postgresStatement(const std::string& sql, std::string* value = nullptr) {
    PGconn* conn = PQconnectdb(testPostgresUrl());
    bool ok = PQstatus(conn) == CONNECTION_OK;
    PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);  // "drop cascades to ..."
    if (ok) {
        PGresult* r = PQexec(conn, sql.c_str());
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (ok && value) *value = PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
        PQclear(r);
    }
    PQfinish(conn);
    return ok;
}

// A fresh, empty store opened through openStore (as the servers open theirs): an SQLite file in a
// temporary directory, or, with MAILLAB_TEST_PG_URL, a PostgreSQL schema of its own, dropped after.
struct LabFixture {
    TempDir dir;
    StoreOptions options;
    std::unique_ptr<Store> store;
    int64_t now = 1795000000;
    std::unique_ptr<Authenticator> auth;

    explicit LabFixture(AuthPolicy policy = fastPolicy()) {
        if (testPostgresUrl()) {
            static std::atomic<int> counter{0};
            options.url = testPostgresUrl();
            options.postgres.schema = "unit_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
        } else {
            options.url = "sqlite:" + dir.path + "/test.db";
            options.sqlite.synchronous = "NORMAL";
        }
        store = openStore(options);
        auth = std::make_unique<Authenticator>(*store, policy, [this] { return now; });
    }
    ~LabFixture() {
        auth.reset();
        store.reset();
        if (isPostgres()) postgresStatement("DROP SCHEMA IF EXISTS " + options.postgres.schema + " CASCADE");
    }

    bool isPostgres() const { return !options.postgres.schema.empty(); }

    // Another program's store on the same database (another server, maillab-admin).
    std::unique_ptr<Store> anotherStore() const { return openStore(options); }

    void addUser(const std::string& email, const std::string& password) {
        store->createAccount(email, hashPassword(password, ScryptParams{1024, 8, 1}), now);
    }

    // Changes a stored password behind this Store's back, as another process or an admin would.
    // False when there is no such account.
    bool setPasswordInDatabase(const std::string& email, const std::string& password) {
        return anotherStore()->setPasswordHash(email, hashPassword(password, ScryptParams{1024, 8, 1}));
    }
    // As an instructor would with maillab-admin: the account goes (and its budgets and trusted sources).
    bool deleteAccountInDatabase(const std::string& email) { return anotherStore()->deleteAccount(email); }

    // A value the database holds behind the store's back (the Store interface does not say): the
    // first column of the first row of `SELECT what FROM table`, in this fixture's database;
    // nullopt when the query failed or found no row.
    std::optional<std::string> selectValue(const std::string& what, const std::string& table) const {
        if (isPostgres()) {
            std::string value;
            if (!postgresStatement("SELECT " + what + " FROM " + options.postgres.schema + "." + table, &value))
                return std::nullopt;
            return value;
        }
        sqlite3* db = nullptr;
        sqlite3_open((dir.path + "/test.db").c_str(), &db);
        sqlite3_stmt* st = nullptr;
        std::optional<std::string> value;
        if (sqlite3_prepare_v2(db, ("SELECT " + what + " FROM " + table).c_str(), -1, &st, nullptr) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            const unsigned char* text = sqlite3_column_text(st, 0);
            value = text ? reinterpret_cast<const char*>(text) : "";
        }
        sqlite3_finalize(st);
        sqlite3_close(db);
        return value;
    }

    // Breaks the store under a running server: its messages table disappears. False when it could not.
    bool dropMessagesTable() {
        if (isPostgres()) return postgresStatement("DROP TABLE " + options.postgres.schema + ".messages CASCADE");
        sqlite3* db = nullptr;
        sqlite3_open((dir.path + "/test.db").c_str(), &db);
        bool ok = sqlite3_exec(db, "DROP TABLE messages", nullptr, nullptr, nullptr) == SQLITE_OK;
        sqlite3_close(db);
        return ok;
    }
};

// A message from ana to the given mailboxes, as the SMTP session would hand it to Store::deliver.
inline NewMessage sampleMessage(const std::string& subject, std::vector<std::string> rcpts) {
    NewMessage m;
    m.queueId = "Q" + subject;
    m.envelopeFrom = "ana@447.edu";
    m.recipients = std::move(rcpts);
    m.from = "ana@447.edu";
    m.to = "bob@447.edu";
    m.subject = subject;
    m.date = "Mon, 23 Nov 2026 10:00:00 +0000";
    m.receivedAt = 1000;
    m.raw = "Subject: " + subject + "\r\n\r\nbody\r\n";
    return m;
}

}  // namespace maillab::testing
