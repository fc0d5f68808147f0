// What the store-backed fuzz targets share: a real SQLite store in a temporary directory, an
// authenticator whose password hash and guess budget cost a run nothing, the accounts ana
// (11111447) and bob (22222447), and messages from ana to bob built the way the SMTP session hands
// them to Store::deliver.
#pragma once
#include "../../common/lab/auth.h"
#include "../../common/lab/password.h"
#include "../../common/lab/store.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>

namespace maillab::fuzzing {

// The fixed clock of every fuzz run: no answer may depend on when the fuzzer runs.
constexpr int64_t kFuzzNow = 1795000000;

struct FuzzWorld {
    std::string dir;
    std::unique_ptr<Store> store;
    std::unique_ptr<Authenticator> auth;

    FuzzWorld() {
        char pattern[] = "/tmp/maillab-fuzz-XXXXXX";
        dir = ::mkdtemp(pattern);
        SqliteOptions options;
        options.path = dir + "/fuzz.db";
        options.synchronous = "OFF";
        store = openSqliteStore(options);
        AuthPolicy policy;
        policy.scrypt = ScryptParams{16, 1, 1};  // the fuzzer wants speed, not strength
        policy.guessBurst = 1000000;
        auth = std::make_unique<Authenticator>(*store, policy, [] { return kFuzzNow; });
        store->createAccount("ana@447.edu", hashPassword("11111447", policy.scrypt), 0);
        store->createAccount("bob@447.edu", hashPassword("22222447", policy.scrypt), 0);
    }

    // A message from ana to bob, not yet delivered (a target adds the headers it wants parsed).
    static NewMessage toBob(const std::string& queueId, const std::string& subject, const std::string& raw) {
        NewMessage m;
        m.queueId = queueId;
        m.envelopeFrom = "ana@447.edu";
        m.recipients = {"bob@447.edu"};
        m.subject = subject;
        m.raw = raw;
        return m;
    }
};

}  // namespace maillab::fuzzing
