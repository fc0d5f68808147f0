#!/usr/bin/python3
"""The benchmark's peer SMTP server: Debian's aiosmtpd with implicit TLS and AUTH PLAIN/LOGIN, storing
each message durably in SQLite (WAL, synchronous=FULL, one copy per recipient) before its 250, the
same promise maillab's sender makes. Prints "ready port=N" like the lab's servers. Its SQLite file is
the peer's own (a table of its own, written as an aiosmtpd handler would): it is not maillab's store,
which only maillab's servers and maillab-admin read and write.

  aiosmtpd_peer.py --cert server.pem --key server.key --db peer.db --user ana@447.edu --password PW"""

import argparse
import asyncio
import socket
import sqlite3
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class SqliteHandler:
    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, mailbox TEXT, sender TEXT, "
                        "received_at INTEGER, raw BLOB)")

    async def handle_DATA(self, server, session, envelope):
        now = int(time.time())
        self.db.execute("BEGIN IMMEDIATE")
        for rcpt in envelope.rcpt_tos:
            self.db.execute("INSERT INTO messages(mailbox, sender, received_at, raw) VALUES (?, ?, ?, ?)",
                            (rcpt, envelope.mail_from, now, envelope.original_content))
        self.db.execute("COMMIT")
        return "250 2.0.0 Ok: queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user \
            and auth_data.password.decode() == args.password
        return AuthResult(success=ok)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(args.cert, args.key)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    controller = Controller(SqliteHandler(args.db), hostname="127.0.0.1", port=port, ssl_context=context,
                            authenticator=authenticator, auth_require_tls=False, auth_required=True,
                            data_size_limit=10 * 1024 * 1024, server_hostname="peer.localhost")
    controller.start()
    print(f"ready port={port}", flush=True)
    try:
        asyncio.get_event_loop().run_until_complete(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
