// The PostgreSQL store's schema text (postgres_schema.h).
#include "postgres_schema.h"

namespace maillab {

// Version 7, created whole. Every string is BYTEA: the store keeps bytes as SQLite does, so an 8-bit
// Subject or a NUL is stored as it came instead of turning a delivery into a 451 (TEXT must be valid
// in the database's encoding), and addresses sort and compare byte by byte as in SQLite.
// Later versions go in postgresMigrations(), applied in order from the version on record (a new
// database too: each change is written once).
const char* const kPostgresSchema = R"SQL(
CREATE TABLE accounts (
    email          BYTEA PRIMARY KEY,
    password_hash  BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    role           BYTEA NOT NULL DEFAULT ''
);
-- A message's text once however many mailboxes it goes to, with the story of the session that
-- delivered it; it goes with the last message that uses it.
CREATE TABLE bodies (
    id     BIGSERIAL PRIMARY KEY,
    raw    BYTEA NOT NULL,
    story  BYTEA NOT NULL DEFAULT ''
);
CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    queue_id       BYTEA NOT NULL,
    mailbox        BYTEA NOT NULL,
    envelope_from  BYTEA NOT NULL,
    header_from    BYTEA NOT NULL,
    header_to      BYTEA NOT NULL,
    subject        BYTEA NOT NULL,
    date           BYTEA NOT NULL,
    received_at    BIGINT NOT NULL,
    size           BIGINT NOT NULL,
    body_id        BIGINT NOT NULL REFERENCES bodies(id)
);
CREATE INDEX messages_by_mailbox ON messages(mailbox, id);
CREATE INDEX messages_by_body ON messages(body_id);
-- Per-mailbox totals kept by triggers: a listing's count, validators and the quota's bytes cost one
-- row lookup, not a scan of the mailbox.
CREATE TABLE mailbox_stats (
    mailbox             BYTEA PRIMARY KEY,
    count               BIGINT NOT NULL,
    newest_id           BIGINT NOT NULL,
    newest_received_at  BIGINT NOT NULL,
    bytes               BIGINT NOT NULL
);
CREATE FUNCTION maillab_messages_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox_stats AS s (mailbox, count, newest_id, newest_received_at, bytes)
        VALUES (NEW.mailbox, 1, NEW.id, NEW.received_at, NEW.size)
    ON CONFLICT (mailbox) DO UPDATE SET count = s.count + 1, bytes = s.bytes + excluded.bytes,
        newest_id = greatest(s.newest_id, excluded.newest_id),
        newest_received_at = greatest(s.newest_received_at, excluded.newest_received_at);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_count AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION maillab_messages_count();
CREATE FUNCTION maillab_messages_uncount() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailbox_stats SET count = count - 1, bytes = bytes - OLD.size WHERE mailbox = OLD.mailbox;
    DELETE FROM bodies WHERE id = OLD.body_id AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_uncount AFTER DELETE ON messages FOR EACH ROW EXECUTE FUNCTION maillab_messages_uncount();
-- The guess budgets (token buckets) and the sources trusted per account; both go with the account.
CREATE TABLE auth_budget (
    key      BYTEA PRIMARY KEY,
    email    BYTEA NOT NULL,
    tokens   DOUBLE PRECISION NOT NULL,
    updated  BIGINT NOT NULL
);
CREATE INDEX auth_budget_by_email ON auth_budget(email);
CREATE TABLE auth_trusted (
    email    BYTEA NOT NULL,
    source   BYTEA NOT NULL,
    last_ok  BIGINT NOT NULL,
    PRIMARY KEY (email, source)
);
CREATE FUNCTION maillab_accounts_forget_auth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM auth_budget WHERE email = OLD.email;
    DELETE FROM auth_trusted WHERE email = OLD.email;
    RETURN NULL;
END $$;
CREATE TRIGGER accounts_forget_auth AFTER DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION maillab_accounts_forget_auth();
-- Provenance: authenticated TLS sessions by both randoms, inserted once, never replaced.
CREATE TABLE tls_logins (
    client_random  BYTEA NOT NULL,
    server_random  BYTEA NOT NULL,
    service        BYTEA NOT NULL,
    peer           BYTEA NOT NULL,
    started_at     BIGINT NOT NULL,
    account        BYTEA NOT NULL,
    PRIMARY KEY (client_random, server_random)
);
CREATE INDEX tls_logins_by_time ON tls_logins(started_at);
-- The class board's counts.
CREATE TABLE activity (
    account   BYTEA NOT NULL,
    kind      BYTEA NOT NULL,
    count     BIGINT NOT NULL,
    first_at  BIGINT NOT NULL,
    last_at   BIGINT NOT NULL,
    PRIMARY KEY (account, kind)
);
CREATE TABLE schema_version (version INTEGER NOT NULL);
)SQL";

// Version 8 (as SQLite's): when each mailbox last changed, moved by an arrival and by a deletion
// (MailboxStats::changedAt, a listing's Last-Modified).
const char* const kPostgresV8 = R"SQL(
ALTER TABLE mailbox_stats ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;
UPDATE mailbox_stats SET changed_at = newest_received_at;
CREATE OR REPLACE FUNCTION maillab_messages_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailbox_stats AS s (mailbox, count, newest_id, newest_received_at, bytes, changed_at)
        VALUES (NEW.mailbox, 1, NEW.id, NEW.received_at, NEW.size, NEW.received_at)
    ON CONFLICT (mailbox) DO UPDATE SET count = s.count + 1, bytes = s.bytes + excluded.bytes,
        newest_id = greatest(s.newest_id, excluded.newest_id),
        newest_received_at = greatest(s.newest_received_at, excluded.newest_received_at),
        changed_at = greatest(s.changed_at, excluded.changed_at);
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION maillab_messages_uncount() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailbox_stats SET count = count - 1, bytes = bytes - OLD.size,
        changed_at = greatest(changed_at, floor(extract(epoch FROM now()))::BIGINT) WHERE mailbox = OLD.mailbox;
    DELETE FROM bodies WHERE id = OLD.body_id AND NOT EXISTS (SELECT 1 FROM messages WHERE body_id = OLD.body_id);
    RETURN NULL;
END $$;
)SQL";

// Migrations from version 7 on: {the version it makes, its SQL}. A new database is made at version 7
// (kPostgresSchema) and then takes these, so each change is written once.
const std::vector<PostgresMigration>& postgresMigrations() {
    static const std::vector<PostgresMigration> migrations = {{8, kPostgresV8}};
    return migrations;
}

}  // namespace maillab
