// The one door to a backend: store.url names SQLite (sqlite:FILE or a bare FILE) or PostgreSQL (a
// libpq URI), and openStore() opens it for the servers and maillab-admin alike.
#include "store.h"

namespace maillab {

namespace {
bool startsWith(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }
}  // namespace

bool isPostgresUrl(const std::string& url) {
    // The two URI schemes libpq accepts (PostgreSQL docs, "Connection URIs").
    return startsWith(url, "postgresql://") || startsWith(url, "postgres://");
}

std::string sqlitePathOf(const std::string& url) {
    if (isPostgresUrl(url)) return "";
    return startsWith(url, "sqlite:") ? url.substr(7) : url;
}

std::string describeStoreUrl(const std::string& url) {
    if (!isPostgresUrl(url)) return url;
    std::string shown = url;
    // postgresql://user:secret@host/db: the userinfo's password.
    size_t authority = shown.find("://") + 3;
    size_t at = shown.find('@', authority);
    size_t slash = shown.find('/', authority);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
        size_t colon = shown.find(':', authority);
        if (colon != std::string::npos && colon < at) shown.replace(colon + 1, at - colon - 1, "***");
    }
    // ...?password=secret&...: the parameter.
    for (size_t p = shown.find("password="); p != std::string::npos; p = shown.find("password=", p + 1)) {
        if (p == 0 || (shown[p - 1] != '?' && shown[p - 1] != '&')) continue;
        size_t end = shown.find('&', p);
        shown.replace(p + 9, (end == std::string::npos ? shown.size() : end) - p - 9, "***");
    }
    return shown;
}

std::unique_ptr<Store> openStore(const StoreOptions& options) {
    if (isPostgresUrl(options.url)) {
        PostgresOptions postgres = options.postgres;
        postgres.url = options.url;
        return openPostgresStore(postgres);
    }
    if (startsWith(options.url, "sqlite:") || options.url.find("://") == std::string::npos) {
        SqliteOptions sqlite = options.sqlite;
        sqlite.path = sqlitePathOf(options.url);
        if (sqlite.path.empty()) throw StoreSettingError("store.url names no SQLite file (sqlite:users/maillab.db)");
        return openSqliteStore(sqlite);
    }
    throw StoreSettingError("store.url " + describeStoreUrl(options.url) +
                     ": unknown kind of database (use sqlite:FILE or postgresql://user@host:port/dbname)");
}

}  // namespace maillab
