// The PostgreSQL store's schema: the current version created whole on an empty database, and the
// migrations from there on, applied in order from the version on record (postgres_store.cpp).
#pragma once
#include <vector>

namespace maillab {

// The same numbering as the SQLite store's (sqlite_schema.h): a version names what the store holds,
// whichever engine.
constexpr int kPostgresSchemaVersion = 8;

// kPostgresSchema makes this version whole on an empty database; postgresMigrations() go on from it.
constexpr int kPostgresSchemaBase = 7;
extern const char* const kPostgresSchema;

// {the version it makes, its SQL}, in order; the last one's version is kPostgresSchemaVersion.
struct PostgresMigration {
    int version;
    const char* sql;
};
const std::vector<PostgresMigration>& postgresMigrations();

}  // namespace maillab
