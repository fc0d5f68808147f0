"""Moving a class's database into PostgreSQL (issue 21, maillab-admin migrate): an SQLite store
filled by real SMTP deliveries is moved into a throwaway PostgreSQL cluster (tests/pg_cluster.py, or
the suite's own under --store postgresql); the retriever on PostgreSQL then shows the same messages
under the same ids, the old passwords log in, and a second move is refused."""

import base64
import json
import os
import smtplib
import subprocess
import sys

from tests.e2e.harness import Server, Skip, register, test

from tests import pg_cluster


def admin(lab, *args):
    return subprocess.run([lab.exe("maillab-admin")] + list(args), capture_output=True, text=True, timeout=120)


def mailbox(lab, db, user):
    done = admin(lab, "--db", db, "mailbox", user, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def listing(lab, port, user, password):
    done = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "-u", f"{user}:{password}", "-H", "Accept: application/json",
                           "-w", "\n%{http_code}", f"https://localhost:{port}/mailboxes/{user}/messages"],
                          capture_output=True, text=True, timeout=30)
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body


def send(lab, port, user, password, rcpts, subject, body="hello\r\n"):
    with smtplib.SMTP_SSL("localhost", port, context=lab.ssl_context()) as smtp:
        smtp.login(user, password)
        smtp.sendmail(user, rcpts, f"Subject: {subject}\r\n\r\n{body}".encode())


@test
def a_class_sqlite_database_moves_into_postgresql_with_its_mail_ids_and_passwords(lab):
    own = None
    cluster = lab.postgres
    if not cluster:
        try:
            cluster = own = pg_cluster.Cluster()
        except pg_cluster.Unavailable as e:
            raise Skip(str(e))
    try:
        source = "sqlite:" + lab.path("class.db")
        settings = {"store.provenance": "true", "store.activity": "true"}
        with Server(lab, "senderserver", settings, db=source) as sender:
            ana, bob, carol = (register(lab, sender.port, u) for u in ("ana", "bob", "carol"))
            send(lab, sender.port, "ana@447.edu", ana, ["bob@447.edu", "carol@447.edu"], "to both")
            send(lab, sender.port, "ana@447.edu", ana, ["bob@447.edu"], "8-bit \xe9t\xe9", "caf\xe9\r\n")
            send(lab, sender.port, "carol@447.edu", carol, ["bob@447.edu"], "from carol")
        before = {u: mailbox(lab, source, u) for u in ("bob@447.edu", "carol@447.edu")}
        assert [m["subject"] for m in before["bob@447.edu"]][0] == "to both", before
        sessions = admin(lab, "--db", source, "tls-sessions", "--json")
        assert sessions.returncode == 0 and len(json.loads(sessions.stdout)) >= 4, sessions

        target = cluster.new_database("migrate")
        moved = admin(lab, "migrate", "--from", source, "--to", target)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        for line in ["accounts 4\n",  # postmaster@447.edu too "mailboxes 2\n", "messages 4\n", "stored texts 3\n",
                     f"TLS sessions {len(json.loads(sessions.stdout))}\n", "next: set store.url = " + target]:
            assert line in moved.stdout, (line, moved.stdout)
        # The same mail through the store's own tool: ids, fields, bytes.
        for user, messages in before.items():
            assert mailbox(lab, target, user) == messages, user
        assert json.loads(admin(lab, "--db", target, "tls-sessions", "--json").stdout) == json.loads(sessions.stdout)
        accounts = admin(lab, "--db", target, "accounts", "--json")
        assert accounts.stdout == admin(lab, "--db", source, "accounts", "--json").stdout

        # Again: the target is not empty any more, and nothing is added.
        again = admin(lab, "migrate", "--from", source, "--to", target)
        assert again.returncode == 4 and "--into-nonempty" in again.stderr and "nothing was moved" in again.stderr, again
        assert len(mailbox(lab, target, "bob@447.edu")) == 3

        # The servers on PostgreSQL: the retriever shows bob the same messages under the same ids, the
        # old passwords log in, and a new message is numbered after the moved ones.
        with Server(lab, "senderserver", db=target) as sender, Server(lab, "retrieverserver", db=target) as retriever:
            status, body = listing(lab, retriever.port, "bob@447.edu", bob)
            assert status == 200, body
            shown = json.loads(body)["messages"]
            assert sorted(m["id"] for m in shown) == sorted(m["id"] for m in before["bob@447.edu"]), (shown, before)
            newest = max(m["id"] for m in shown)
            raw = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "-u", f"bob@447.edu:{bob}",
                                  f"https://localhost:{retriever.port}/mailboxes/bob@447.edu/messages/{newest}/raw"],
                                 capture_output=True, timeout=30).stdout
            assert raw == base64.b64decode(before["bob@447.edu"][-1]["raw_base64"]), raw[:200]
            send(lab, sender.port, "carol@447.edu", carol, ["bob@447.edu"], "after the move")
            after = mailbox(lab, target, "bob@447.edu")
            assert after[-1]["subject"] == "after the move" and after[-1]["id"] > newest, after
    finally:
        if own:
            own.stop()


@test
def a_move_that_cannot_reach_its_target_says_so_and_leaves_the_source_alone(lab):
    source = "sqlite:" + lab.path("class.db")
    with Server(lab, "senderserver", db=source) as sender:
        register(lab, sender.port, "ana")
    unreachable = f"postgresql://maillab@127.0.0.1:{pg_cluster.free_port()}/nowhere"
    done = admin(lab, "migrate", "--from", source, "--to", unreachable)
    assert done.returncode == 3 and "cannot use" in done.stderr and "nowhere" in done.stderr, done
    done = admin(lab, "migrate", "--from", "sqlite:" + lab.path("missing.db"), "--to", unreachable)
    assert done.returncode == 3 and "no database" in done.stderr, done
    done = admin(lab, "migrate", "--from", source)
    assert done.returncode == 2 and "--to" in done.stderr, done
    assert "ana@447.edu" in admin(lab, "--db", source, "list").stdout
