// The SQLite store's schema steps (sqlite_schema.h): each version's SQL as it was first written, so
// a database made by any earlier maillab is brought forward one step at a time.
#include "sqlite_schema.h"

#include <stdexcept>
#include <string>

namespace maillab {

namespace {

const char* const kSchemaV1 = R"SQL(
CREATE TABLE IF NOT EXISTS accounts (
    email          TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    failed_logins  INTEGER NOT NULL DEFAULT 0,
    locked_until   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id       TEXT NOT NULL,
    mailbox        TEXT NOT NULL,
    envelope_from  TEXT NOT NULL,
    header_from    TEXT NOT NULL,
    header_to      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    date           TEXT NOT NULL,
    received_at    INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    raw            BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_mailbox ON messages(mailbox, id);
)SQL";

// Version 2: per-mailbox totals kept by a trigger, so a listing's count and validators cost one
// row lookup instead of a scan of the mailbox (which grew with it: see docs/benchmarks.md).
const char* const kSchemaV2 = R"SQL(
CREATE TABLE IF NOT EXISTS mailbox_stats (
    mailbox             TEXT PRIMARY KEY,
    count               INTEGER NOT NULL,
    newest_id           INTEGER NOT NULL,
    newest_received_at  INTEGER NOT NULL
);
INSERT OR REPLACE INTO mailbox_stats
    SELECT mailbox, count(*), max(id), max(received_at) FROM messages GROUP BY mailbox;
CREATE TRIGGER IF NOT EXISTS messages_count AFTER INSERT ON messages BEGIN
    INSERT INTO mailbox_stats(mailbox, count, newest_id, newest_received_at)
        VALUES (NEW.mailbox, 1, NEW.id, NEW.received_at)
    ON CONFLICT(mailbox) DO UPDATE SET count = count + 1,
        newest_id = max(newest_id, excluded.newest_id),
        newest_received_at = max(newest_received_at, excluded.newest_received_at);
END;
)SQL";

// Version 3: the guess budgets and the sources trusted per account (replacing the failure count and
// lock time of v1, which raced: read before the slow hash, written back as an absolute value).
// Deleting an account deletes both, so a re-registered address starts afresh.
const char* const kSchemaV3 = R"SQL(
CREATE TABLE IF NOT EXISTS auth_budget (
    key      TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    tokens   REAL NOT NULL,
    updated  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_trusted (
    email    TEXT NOT NULL,
    source   TEXT NOT NULL,
    last_ok  INTEGER NOT NULL,
    PRIMARY KEY (email, source)
);
CREATE TRIGGER IF NOT EXISTS accounts_forget_auth AFTER DELETE ON accounts BEGIN
    DELETE FROM auth_budget WHERE email = OLD.email;
    DELETE FROM auth_trusted WHERE email = OLD.email;
END;
)SQL";

// Version 4: the TLS sessions a class server saw (store.provenance), for the grader.
const char* const kSchemaV4 = R"SQL(
CREATE TABLE IF NOT EXISTS tls_sessions (
    client_random  TEXT PRIMARY KEY,
    service        TEXT NOT NULL,
    peer           TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    account        TEXT NOT NULL DEFAULT ''
);
)SQL";

// Version 5: provenance keyed by both randoms (the server's is its own choice: a replayed client
// random cannot take over a classmate's record), inserted once at login and never replaced; the
// class board's activity counts; account roles (instructor).
const char* const kSchemaV5 = R"SQL(
CREATE TABLE IF NOT EXISTS tls_logins (
    client_random  TEXT NOT NULL,
    server_random  TEXT NOT NULL,
    service        TEXT NOT NULL,
    peer           TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    account        TEXT NOT NULL,
    PRIMARY KEY (client_random, server_random)
);
CREATE INDEX IF NOT EXISTS tls_logins_by_time ON tls_logins(started_at);
INSERT OR IGNORE INTO tls_logins
    SELECT client_random, '', service, peer, started_at, account FROM tls_sessions WHERE account <> '';
DROP TABLE IF EXISTS tls_sessions;
CREATE TABLE IF NOT EXISTS activity (
    account   TEXT NOT NULL,
    kind      TEXT NOT NULL,
    count     INTEGER NOT NULL,
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL,
    PRIMARY KEY (account, kind)
);
ALTER TABLE accounts ADD COLUMN role TEXT NOT NULL DEFAULT '';
)SQL";

// Version 6: a message's text stored once however many mailboxes it goes to (bodies; a body goes
// with the last message that uses it), and each mailbox's bytes beside its count, for the quota.
const char* const kSchemaV6 = R"SQL(
CREATE TABLE IF NOT EXISTS bodies (
    id   INTEGER PRIMARY KEY,
    raw  BLOB NOT NULL
);
ALTER TABLE messages ADD COLUMN body_id INTEGER;
CREATE INDEX IF NOT EXISTS messages_by_body ON messages(body_id) WHERE body_id IS NOT NULL;
ALTER TABLE mailbox_stats ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE mailbox_stats SET bytes = (SELECT coalesce(sum(size), 0) FROM messages m WHERE m.mailbox = mailbox_stats.mailbox);
DROP TRIGGER IF EXISTS messages_count;
CREATE TRIGGER messages_count AFTER INSERT ON messages BEGIN
    INSERT INTO mailbox_stats(mailbox, count, newest_id, newest_received_at, bytes)
        VALUES (NEW.mailbox, 1, NEW.id, NEW.received_at, NEW.size)
    ON CONFLICT(mailbox) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes,
        newest_id = max(newest_id, excluded.newest_id),
        newest_received_at = max(newest_received_at, excluded.newest_received_at);
END;
CREATE TRIGGER IF NOT EXISTS messages_uncount AFTER DELETE ON messages BEGIN
    UPDATE mailbox_stats SET count = count - 1, bytes = bytes - OLD.size WHERE mailbox = OLD.mailbox;
    DELETE FROM bodies WHERE id = OLD.body_id AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id);
END;
)SQL";

// Version 7: the story of the session that delivered a message (NewMessage::story), kept with its
// text: one per delivery, gone with the last copy.
const char* const kSchemaV7 = R"SQL(
ALTER TABLE bodies ADD COLUMN story TEXT NOT NULL DEFAULT '';
)SQL";

// Version 8: when each mailbox last changed (MailboxStats::changedAt), moved by an arrival and by a
// deletion: a listing's Last-Modified, which a POP3 DELE must move too (RFC 9110 8.8.2).
const char* const kSchemaV8 = R"SQL(
ALTER TABLE mailbox_stats ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0;
UPDATE mailbox_stats SET changed_at = newest_received_at;
DROP TRIGGER IF EXISTS messages_count;
CREATE TRIGGER messages_count AFTER INSERT ON messages BEGIN
    INSERT INTO mailbox_stats(mailbox, count, newest_id, newest_received_at, bytes, changed_at)
        VALUES (NEW.mailbox, 1, NEW.id, NEW.received_at, NEW.size, NEW.received_at)
    ON CONFLICT(mailbox) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes,
        newest_id = max(newest_id, excluded.newest_id),
        newest_received_at = max(newest_received_at, excluded.newest_received_at),
        changed_at = max(changed_at, excluded.changed_at);
END;
DROP TRIGGER IF EXISTS messages_uncount;
CREATE TRIGGER messages_uncount AFTER DELETE ON messages BEGIN
    UPDATE mailbox_stats SET count = count - 1, bytes = bytes - OLD.size,
        changed_at = max(changed_at, CAST(strftime('%s', 'now') AS INTEGER)) WHERE mailbox = OLD.mailbox;
    DELETE FROM bodies WHERE id = OLD.body_id AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id);
END;
)SQL";

}  // namespace

const char* sqliteSchemaStep(int version) {
    static const char* const steps[] = {kSchemaV1, kSchemaV2, kSchemaV3, kSchemaV4, kSchemaV5, kSchemaV6, kSchemaV7,
                                        kSchemaV8};
    static_assert(sizeof steps / sizeof steps[0] == kSqliteSchemaVersion, "one step per schema version");
    if (version < 1 || version > kSqliteSchemaVersion)
        throw std::logic_error("no SQLite schema step to version " + std::to_string(version));
    return steps[version - 1];
}

}  // namespace maillab
