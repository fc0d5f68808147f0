// Test fixtures: a temporary SQLite store and an authenticator with a cheap scrypt cost.
#pragma once
#include "../../common/auth.h"
#include "../../common/store.h"

#include <sqlite3.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>

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

struct LabFixture {
    TempDir dir;
    std::unique_ptr<Store> store;
    int64_t now = 1795000000;
    std::unique_ptr<Authenticator> auth;

    explicit LabFixture(AuthPolicy policy = fastPolicy()) {
        SqliteOptions options;
        options.path = dir.path + "/test.db";
        options.synchronous = "NORMAL";
        store = openSqliteStore(options);
        auth = std::make_unique<Authenticator>(*store, policy, [this] { return now; });
    }

    void addUser(const std::string& email, const std::string& password) {
        store->createAccount(email, hashPassword(password, ScryptParams{1024, 8, 1}), now);
    }

    // Changes a stored password behind the Store's back, as another process or an admin would.
    // False when the database refused.
    bool setPasswordInDatabase(const std::string& email, const std::string& password) {
        std::string hash = hashPassword(password, ScryptParams{1024, 8, 1});
        sqlite3* db = nullptr;
        sqlite3_open((dir.path + "/test.db").c_str(), &db);
        std::string sql = "UPDATE accounts SET password_hash='" + hash + "' WHERE email='" + email + "'";
        bool ok = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
        sqlite3_close(db);
        return ok;
    }
    // As an instructor would with sqlite3: the account goes (and its budgets and trusted sources).
    bool deleteAccountInDatabase(const std::string& email) {
        sqlite3* db = nullptr;
        sqlite3_open((dir.path + "/test.db").c_str(), &db);
        std::string sql = "DELETE FROM accounts WHERE email='" + email + "'";
        bool ok = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK && sqlite3_changes(db) == 1;
        sqlite3_close(db);
        return ok;
    }
};

}  // namespace maillab::testing
