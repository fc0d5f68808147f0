// The SQLite store's schema, one step per version (PRAGMA user_version): the SQL that makes version
// n from version n-1. Kept apart from sqlite_store.cpp so the store reads as behaviour, and so a new
// version is one new step here and the number below.
#pragma once

namespace maillab {

constexpr int kSqliteSchemaVersion = 8;

// The SQL that takes a database from `version - 1` to `version` (1..kSqliteSchemaVersion).
const char* sqliteSchemaStep(int version);

}  // namespace maillab
