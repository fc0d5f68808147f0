#!/usr/bin/env python3
"""A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl (Debian's postgresql package) in a
temporary directory, as an unprivileged user (`nobody` when run as root: PostgreSQL refuses root),
listening on 127.0.0.1 at a free port and on a unix socket in that directory; no system service.
Another address and a wrapper for its commands put it on a namespaced host (tests/e2e/test_balancer.py:
Cluster(listen="198.18.0.5", wrap=lambda argv: net.cmd("db", argv))).
stop() stops it and removes the directory: nothing is left running or on disk.

    with Cluster() as pg:            # or: pg = Cluster(); ...; pg.stop()
        url = pg.new_database()      # postgresql://maillab@127.0.0.1:PORT/t001, empty

As a command, for a shell or another tool:
    /usr/bin/python3 -m tests.pg_cluster run -- COMMAND...   the command with MAILLAB_TEST_PG_URL set
Standard library only."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile

USER = "maillab"  # the cluster's superuser (trust authentication: a throwaway on loopback)


def postgres_bin():
    """The newest installed server's binaries (/usr/lib/postgresql/<version>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unavailable(Exception):
    """PostgreSQL is not installed (the reason says which package to install)."""


class Cluster:
    def __init__(self, max_connections=300, listen="127.0.0.1", wrap=None):
        self.bin = postgres_bin()
        if not self.bin:
            raise Unavailable("no PostgreSQL server here (install the Debian package postgresql)")
        self.dir = tempfile.mkdtemp(prefix="maillab-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgresql.log")
        self.listen = listen
        self.wrap = wrap or (lambda argv: argv)  # where pg_ctl and psql run (a network namespace)
        self.port = free_port()
        self.counter = 0
        self.running = False
        self.run_as = None
        if os.geteuid() == 0:  # the server refuses to run as root
            self.run_as = "nobody"
            owner = pwd.getpwnam(self.run_as)
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        try:
            self._as_owner([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", USER, "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync"])
            if listen != "127.0.0.1":
                # initdb trusts loopback only; a namespaced host's clients are on its own subnet.
                with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
                    f.write("host all all samenet trust\n")
            self.options = (f"-c listen_addresses={listen} -p {self.port} -k {self.dir} "
                            f"-c max_connections={max_connections}")
            self.start()
        except BaseException:
            self.stop()
            raise

    def _as_owner(self, argv, check=True):
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--"] + argv
        done = subprocess.run(self.wrap(argv), capture_output=True, text=True, cwd=self.dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}{self.log_text()}")
        return done

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def start(self):
        """Starts the server (again, after stop_server: the same data and port)."""
        self._as_owner([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", self.options,
                        "-w", "-t", "60", "start"])
        self.running = True

    def stop_server(self, mode="fast"):
        """Stops the server, keeping its data (start() brings it back)."""
        if self.running:
            self._as_owner([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], check=False)
            self.running = False

    def stop(self):
        """Stops the server and removes everything it had."""
        if os.path.isdir(self.data):
            self.stop_server("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database):
        return f"postgresql://{USER}@{self.listen}:{self.port}/{database}"

    def new_database(self, prefix="t"):
        """A new empty database; its URL."""
        self.counter += 1
        name = f"{prefix}{self.counter:03d}"
        self.sql("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def sql(self, database, statement):
        """Runs one statement with psql (the tests' own back door, never the servers')."""
        done = subprocess.run(self.wrap([os.path.join(self.bin, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                                         "-d", self.url(database), "-c", statement]), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql {statement!r}: {done.stderr}")
        return done.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv):
    if len(argv) < 3 or argv[1] != "run" or "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1:]
    try:
        cluster = Cluster()
    except Unavailable as e:
        print(f"pg_cluster: {e}", file=sys.stderr)
        return 3
    try:
        env = dict(os.environ, MAILLAB_TEST_PG_URL=cluster.new_database("unit"))
        return subprocess.run(command, env=env).returncode
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
