"""A database that fails under the running servers: cut-short shared memory, a lock held by another
program, a full disk (a file size limit). Each is answered with a refusal (451 / 454 / 503) and a log
line that names the cause, never a signal death and never a 250 for mail that was not stored."""

import base64
import os
import resource
import sqlite3

from tests.e2e.harness import Conversation, Server, Skip, messages, register, test


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def send(lab, port, password, body):
    """One message from ana to ana; the reply to the end of DATA."""
    c = Conversation(lab, port)
    c.cmd("EHLO faults")
    assert c.cmd("AUTH PLAIN " + plain("ana@447.edu", password)).startswith("235")
    c.cmd("MAIL FROM:<ana@447.edu>")
    c.cmd("RCPT TO:<ana@447.edu>")
    c.cmd("DATA")
    reply = c.cmd("Subject: fault\r\n\r\n" + body + "\r\n.")
    c.close()
    return reply


@test
def a_shared_memory_file_cut_short_is_refused_not_a_crash(lab):
    lab.require_sqlite("the WAL's shared-memory file (<db>-shm) is SQLite's")
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        assert send(lab, server.port, ana, "before").startswith("250")
        os.truncate(server.db + "-shm", 0)
        c = Conversation(lab, server.port)
        c.cmd("EHLO faults")
        reply = c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana))
        if reply.startswith("235"):
            # A fresh cached login reads no database (docs/design.md, "Credential cache"): the damaged
            # file is met, and refused, at the mailbox's first use instead.
            replies = [c.cmd("MAIL FROM:<ana@447.edu>"), c.cmd("RCPT TO:<ana@447.edu>")]
            if replies[-1].startswith("250"):
                c.cmd("DATA")
                replies.append(c.cmd("Subject: fault\r\n\r\nafter\r\n."))
            reply = replies[-1]
            assert reply.startswith("4"), replies
        else:
            assert reply.startswith("454 4.7.0"), reply
        c.close()
        assert server.proc.poll() is None, "the server died"
        assert "was truncated or replaced while in use" in server.log_text()


@test
def a_database_locked_by_another_program_gets_451_never_250(lab):
    lab.require_sqlite("an SQLite write lock held by another program (PostgreSQL writers wait on row locks; "
                       "its unreachable case is a_postgresql_database_that_goes_away_...)")
    with Server(lab, "senderserver", {"store.busyTimeoutMs": 300}) as server:
        ana = register(lab, server.port, "ana")
        # A first message from this address (127.0.0.1; the client may have registered over ::1): the
        # login then needs no write (docs/design.md, trusted sources), only the delivery does.
        assert send(lab, server.port, ana, "before").startswith("250")
        holder = sqlite3.connect(server.db, timeout=1, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
        try:
            reply = send(lab, server.port, ana, "while locked")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert reply.startswith("451 4.3.0"), reply
        assert server.proc.poll() is None
        assert send(lab, server.port, ana, "after").startswith("250")
        stored = [bytes(raw) for _, raw in messages(server.db, "ana@447.edu")]
        assert len(stored) == 2 and b"before" in stored[0] and b"after" in stored[1], stored


@test
def a_full_disk_gets_451_and_the_server_serves_on(lab):
    lab.require_sqlite("the file size limit stands in for a full disk under the server's own SQLite file; "
                       "a PostgreSQL server writes to its own disk")
    # A file size limit (ulimit -f) stands in for a full file system: writes past it fail with EFBIG.
    limit = 4 * 1024 * 1024

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with Server(lab, "senderserver", preexec_fn=small_disk) as server:
        ana = register(lab, server.port, "ana")
        reply = send(lab, server.port, ana, "x" * 998 + "\r\n" + ("y" * 998 + "\r\n") * 6000)  # 6 MB
        assert reply.startswith("451 4.3.0"), reply
        assert server.proc.poll() is None, "the server died"
        assert send(lab, server.port, ana, "small").startswith("250")
        stored = [bytes(raw) for _, raw in messages(server.db, "ana@447.edu")]
        assert len(stored) == 1 and b"small" in stored[0]  # the refused message is not half-stored


@test
def a_postgresql_database_that_goes_away_gets_451_and_is_used_again_when_back(lab):
    if not lab.postgres:
        raise Skip("PostgreSQL only (run_tests.py --store postgresql): its server stopped and started again")
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        assert send(lab, server.port, ana, "before").startswith("250")
        lab.postgres.stop_server()
        try:
            c = Conversation(lab, server.port)
            c.cmd("EHLO faults")
            # The login may be answered from the cache (auth.cacheTtlSeconds) or need the database.
            reply = c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana))
            if reply.startswith("235"):
                c.cmd("MAIL FROM:<ana@447.edu>")
                c.cmd("RCPT TO:<ana@447.edu>")
                c.cmd("DATA")
                reply = c.cmd("Subject: fault\r\n\r\nwhile away\r\n.")
                assert reply.startswith("451 4.3.0"), reply
            else:
                assert reply.startswith("454 4.7.0"), reply
            c.close()
        finally:
            lab.postgres.start()
        assert server.proc.poll() is None, "the server died"
        assert "PostgreSQL database" in server.log_text(), server.log_text()[-2000:]
        # Back: the next sessions are served on new connections.
        assert send(lab, server.port, ana, "after").startswith("250")
        stored = [bytes(raw) for _, raw in messages(server.db, "ana@447.edu")]
        assert len(stored) == 2 and b"before" in stored[0] and b"after" in stored[1], stored
