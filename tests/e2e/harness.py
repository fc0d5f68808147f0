"""End-to-end test harness: starts the real servers on ephemeral ports (port 0, then the "ready
port=N" line they print; no sleeps), gives tests a lab directory with certificates, and counts
results. Standard library only, run with Debian's /usr/bin/python3."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

from captures.labprocess import ServerProcess, password_from

TESTS = []


class Skip(Exception):
    """A test that cannot run on this machine (said why); counted apart, never as passed."""


def test(fn):
    TESTS.append(fn)
    return fn


class Lab:
    """A scratch directory with the lab CA and server certificate, shared by all tests."""

    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.bin = os.path.join(self.build, "bin")
        # `make test-asan`'s build: AddressSanitizer keeps freed memory in quarantine (256 MB by
        # default), so a process's RSS says nothing about whether it bounds its own memory there.
        self.sanitized = os.path.basename(self.build) == "asan"
        self.dir = tempfile.mkdtemp(prefix="maillab-e2e-")
        self.certs = os.path.join(self.dir, "certs")
        subprocess.run([self.exe("maillab-certs"), self.certs], check=True, stdout=subprocess.DEVNULL)
        self.ca = os.path.join(self.certs, "ca.pem")
        global ADMIN
        ADMIN = self.exe("maillab-admin")
        self.counter = 0
        self.postgres = None  # a pg_cluster.Cluster when the suite runs on PostgreSQL (run_tests.py --store)
        self.databases = {}   # on PostgreSQL: the database each SQLite path a test named stands for

    def store(self, path):
        """The store a test's `path` names: the SQLite file itself, or on PostgreSQL a database of its
        own made the first time the path is named (so servers given the same path share it).
        sqlite:FILE is SQLite on either backend."""
        if not self.postgres or path.startswith("postgresql://") or path.startswith("sqlite:"):
            return path  # sqlite:FILE: a test that needs SQLite whatever the suite's backend
        if path not in self.databases:
            self.databases[path] = self.postgres.new_database()
        return self.databases[path]

    def require_sqlite(self, why):
        """For a test of SQLite itself (its file, WAL, locks): skipped on PostgreSQL, saying why."""
        if self.postgres:
            raise Skip(f"SQLite only: {why}")

    def exe(self, name):
        return os.path.join(self.bin, name)

    def path(self, name):
        self.counter += 1
        return os.path.join(self.dir, f"{self.counter:03d}-{name}")

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=self.ca)  # hostname checked
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# Every server a test started and has not stopped: run() stops them after each test, whatever the
# test did (an assertion between start and stop must not leave a server running).
RUNNING = []


class Server:
    """One server process on a free port. `settings` become a --config properties file."""

    def __init__(self, lab, program, settings=None, args=(), db=None, env=None, preexec_fn=None, certs=None):
        self.lab = lab
        self.db = lab.store(db or lab.path("maillab.db"))
        self.log_path = lab.path(program + ".log")
        cmd = [lab.exe(program), "--port=0", f"--db={self.db}", f"--certs={certs or lab.certs}"]
        # Log lines written at once (the console channel, not the default asynchronous one), so that
        # a test reading the log while the server runs sees every event that has happened.
        settings = {"logging.loggers.root.channel": "console", **(settings or {})}
        # MAILLAB_RETRIEVER_CORE=threads|events runs every retriever a test starts on that core
        # (unless the test chose one itself); the default is retrieverserver.properties' (events).
        core = os.environ.get("MAILLAB_RETRIEVER_CORE")
        if program == "retrieverserver" and core and "retriever.core" not in settings:
            settings["retriever.core"] = core
        # MAILLAB_SENDER_CORE the same for every sender (sender.core in senderserver.properties).
        sender_core = os.environ.get("MAILLAB_SENDER_CORE")
        if program == "senderserver" and sender_core and "sender.core" not in settings:
            settings["sender.core"] = sender_core
        # MAILLAB_POP3_CORE the same for every retriever's POP3 ports (pop3.core in retrieverserver.properties).
        pop3_core = os.environ.get("MAILLAB_POP3_CORE")
        if program == "retrieverserver" and pop3_core and "pop3.core" not in settings:
            settings["pop3.core"] = pop3_core
        if settings:
            config = lab.path(program + ".properties")
            with open(config, "w") as f:
                for key, value in settings.items():
                    f.write(f"{key} = {value}\n")
            cmd.append(f"--config={config}")
        cmd += list(args)
        try:
            self.process = ServerProcess(cmd, self.log_path, env=env or os.environ.copy(), preexec_fn=preexec_fn)
        except RuntimeError as e:
            raise AssertionError(f"{program} did not start: {e}\n{self.log_text()}")
        self.proc, self.log, self.port = self.process.proc, self.process.log, self.process.port
        # The retriever's POP3 ports from its ready line (None when not served).
        self.pop3_port = self.process.ports.get("pop3")
        self.pop3_plain_port = self.process.ports.get("pop3-plain")
        RUNNING.append(self)

    def log_text(self):
        if hasattr(self, "log") and not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_after_stop(self):
        """The whole log once the server has stopped: every connection's last line is written (a
        test that just saw its connection close may otherwise read the log before that line)."""
        self.stop()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self in RUNNING:
            RUNNING.remove(self)
        return self.process.stop(sig)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.check_sanitizers()

    def check_sanitizers(self):
        """Under `make test-asan`, a sanitizer report in the server's log fails the test."""
        text = self.log_text() if not self.log.closed else open(self.log_path, errors="replace").read()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                raise AssertionError(f"sanitizer report in {self.log_path}:\n{text[text.index(marker) - 200:][:4000]}")


def tls_connect(lab, port, timeout=10, source=None):
    """A TLS connection to 127.0.0.1; `source`: another loopback address to come from (127.0.0.0/8
    is all this machine), as a guesser with many addresses would."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                   source_address=(source, 0) if source else None)
    return lab.ssl_context().wrap_socket(raw, server_hostname="localhost")


class Conversation:
    """A raw SMTP conversation over TLS, for exact replies and bad input."""

    def __init__(self, lab, port, source=None):
        self.sock = tls_connect(lab, port, source=source)
        self.buffer = b""
        self.banner = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r").decode()

    def reply(self):
        """All lines of one reply, e.g. ['250-a', '250 b']."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()[-1]

    def closed(self):
        """True when the server has closed (EOF or close_notify)."""
        try:
            return self.sock.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def says_no_application_protocol(text):
    """True when a stock tool's error is the TLS alert no_application_protocol (RFC 7301 3.2): by
    name, or, from OpenSSL before 3.0.14 (Ubuntu 24.04's 3.0.13), which has no text for it, by its
    packed code (ERR_LIB_SSL, reason 1120)."""
    return "NO APPLICATION PROTOCOL" in text.upper().replace("_", " ") or ":0A000460:" in text \
        or "reason(1120)" in text


def register(lab, port, user):
    """Registers `user` with our client; returns the password it printed."""
    out = run_client(lab, port, ["--user", user])
    assert out.returncode == 0, out.stderr
    password = password_from(out.stdout)
    assert password, "no password printed: " + out.stdout
    return password


def run_client(lab, port, args, input=None, program="senderclient", timeout=60):
    return subprocess.run([lab.exe(program), "--port", str(port), "--ca", lab.ca] + list(args),
                          input=input, capture_output=True, text=True, timeout=timeout)


ADMIN = None  # build/bin/maillab-admin, set by Lab: tests read the store only through it


def messages(db, mailbox):
    """(subject, stored text) of each message in the mailbox, oldest first, read through the store's
    own tool (maillab-admin mailbox --json), never by SQL."""
    import json
    done = subprocess.run([ADMIN, "--db", db, "mailbox", mailbox, "--json"], capture_output=True, text=True)
    if done.returncode == 3 and "no such database" in done.stderr:
        return []
    assert done.returncode == 0, done.stderr
    import base64
    return [(m["subject"], base64.b64decode(m["raw_base64"])) for m in json.loads(done.stdout)]


def run(lab, selected=None):
    passed = failed = skipped = 0
    for fn in TESTS:
        if selected and not any(s in fn.__name__ for s in selected):
            continue
        start = time.monotonic()
        try:
            fn(lab)
            passed += 1
            print(f"PASS {fn.__name__} ({time.monotonic() - start:.1f}s)", flush=True)
        except Skip as why:
            skipped += 1
            print(f"SKIP {fn.__name__}: {why}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
        finally:
            for server in list(RUNNING):
                server.stop(signal.SIGKILL)
    return passed, failed, skipped
