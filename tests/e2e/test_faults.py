"""A database that fails under the running servers: cut-short shared memory, a lock held by another
program, a full disk (a file size limit). Each is answered with a refusal (451 / 454 / 503) and a log
line that names the cause, never a signal death and never a 250 for mail that was not stored."""

import base64
import os
import resource
import sqlite3

from harness import Conversation, Server, messages, register, test


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
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        assert send(lab, server.port, ana, "before").startswith("250")
        os.truncate(server.db + "-shm", 0)
        c = Conversation(lab, server.port)
        c.cmd("EHLO faults")
        reply = c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana))
        assert reply.startswith("454 4.7.0"), reply
        c.close()
        assert server.proc.poll() is None, "the server died"
        assert "was truncated or replaced while in use" in server.log_text()


@test
def a_database_locked_by_another_program_gets_451_never_250(lab):
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
