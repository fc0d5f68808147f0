// Test fixtures: a temporary SQLite store and an authenticator with a cheap scrypt cost.
#pragma once
#include "../../common/auth.h"
#include "../../common/store.h"

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
};

}  // namespace maillab::testing
