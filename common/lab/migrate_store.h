// Moving a class's database from one store into another (maillab-admin migrate): typically its
// SQLite file into the department's PostgreSQL (docs/deploy.md). Everything goes through the Store
// interface on both sides, so any backend moves into any other.
#pragma once
#include "store.h"

#include <cstdint>
#include <string>

namespace maillab {

struct MigrationOptions {
    // A target that holds anything already is refused unless this is set; then its own accounts are
    // kept (a moved account with the same address is skipped, its mail added to the mailbox there)
    // and the moved messages are numbered by the target instead of keeping their ids.
    bool intoNonEmpty = false;
};

// What was moved: shown by maillab-admin, checked by the tests.
struct MigrationCounts {
    int64_t accounts = 0;
    int64_t accountsKept = 0;  // already in the target (intoNonEmpty): left as they were there
    int64_t mailboxes = 0;
    int64_t messages = 0;      // stored copies, one per mailbox
    int64_t bodies = 0;        // stored texts (a message to several mailboxes is stored once)
    int64_t bytes = 0;         // the texts' bytes, each counted once
    int64_t trustedSources = 0;
    int64_t tlsSessions = 0;
    int64_t activityCounts = 0;
};

// Refused before anything was written (a non-empty target without intoNonEmpty).
struct MigrationRefused : StoreError {
    using StoreError::StoreError;
};

// The move was committed, but the target does not answer as the source does (a server was still
// delivering to the source or the target while it ran).
struct MigrationMismatch : StoreError {
    using StoreError::StoreError;
};

// Copies every account (password hash, creation time, role), every mailbox's messages with their
// stories (one text for the copies one delivery made), the trusted sources, the TLS sessions on
// record and the class board's counts from `from` into `to`, in one transaction on `to`: on any
// failure nothing is left there and the move can simply be run again. Guess budgets are not moved:
// they refill in minutes (auth.guessRefillSeconds) and start full in the target, as after a reset.
// Throws MigrationRefused, MigrationMismatch, or StoreError (the target rolled back). When the target was empty it then
// checks that every mailbox holds as many messages and bytes as in the source.
MigrationCounts migrateStore(Store& from, Store& to, const MigrationOptions& options = {});

// One line per kind, for people: "accounts 12\nmailboxes 9\n...".
std::string describeMigration(const MigrationCounts& counts);

}  // namespace maillab
