#!/usr/bin/python3
"""make classroom: a whole class on one machine, before the term. Network namespaces make the
machines: a switch (a bridge), the class server `lab.maillab.test` (198.18.0.1) running the real
senderserver on 465 and retrieverserver on 443 with common/class.properties, an instructor
(198.18.0.2) and eight students (198.18.0.11 ...), each with her own address, her own /etc/hosts
(`ip netns exec` bind-mounts /etc/netns/<name>/hosts) and her own capture of her own interface
(python3 -m captures.capture start --host lab.maillab.test, the code behind `make capture-start HOST=`).

The class: ana and bob do the lab honestly; carol registers and hands in ana's file renamed; dave
does the lab against servers on his own "laptop" (his namespace, his own database and CA); erin hands
in a capture of curl and Python's http.server; frank's file is cut short; gina mistypes her password
and hands in a text file; hal is on the roster and hands in nothing. Mid-class the instructor looks
at the board (maillab-admin class-status); then collects the files, grades them with `make grade`
and prints the board and the grades. Everything is torn down at the end, also on failure or Ctrl-C;
a run left behind by a killed run (namespaces mlc-<pid>-*, whose pid is gone) is removed first.

Addresses come from 198.18.0.0/15 (RFC 2544, for testing) and exist only inside the namespaces:
nothing is added to the machine's own network, and nothing outside it is ever contacted. Needs root.

  python3 -m tests.classroom [--build build] [--out build/classroom]

Used by tests/e2e/test_classroom.py: Network (namespaces on a bridge) and Classroom (the class)."""

import argparse
import csv
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
from captures.labprocess import ServerProcess, password_from

PREFIX = "mlc-"          # every namespace of ours: mlc-<pid of the run>-<role>
SUBNET = "198.18.0"      # RFC 2544 benchmarking addresses, /24, inside the namespaces only
SERVER_NAME = "lab.maillab.test"
DOMAIN = "maillab.test"
PY = "/usr/bin/python3"


def say(text):
    print(text, flush=True)


def available():
    """Why a class cannot run here, or "" when it can (root and `ip netns`)."""
    if os.geteuid() != 0:
        return "network namespaces need root (sudo make classroom)"
    if not shutil.which("ip"):
        return "the ip command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` is not available here: {probe.stderr.strip()}"
    return ""


def ip(*args, check=True):
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def is_python(pid):
    try:
        return b"python" in open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return False


def pids_in(namespace):
    out = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def end_processes(pids, grace=5.0):
    """SIGTERM to each pid (processes of our own namespaces), then SIGKILL to those still there."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    left = [p for p in pids if pid_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if pid_alive(p)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove_namespace(name):
    pids = pids_in(name)
    if pids:
        end_processes(pids)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    shutil.rmtree(os.path.join("/etc/netns", name), ignore_errors=True)


def clean_stale():
    """Namespaces (and /etc/netns folders) of a run that is gone: its pid, in the name, no longer
    runs Python. Another run that is still going is left alone."""
    names = set()
    for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
        if line.split():
            names.add(line.split()[0])
    if os.path.isdir("/etc/netns"):
        names.update(os.listdir("/etc/netns"))
    removed = []
    for name in sorted(names):
        found = re.match(re.escape(PREFIX) + r"(\d+)-", name)
        if not found:
            continue
        owner = int(found.group(1))
        if owner == os.getpid() or (pid_alive(owner) and is_python(owner)):
            continue
        remove_namespace(name)
        removed.append(name)
    if removed:
        say(f"note: removed {len(removed)} namespaces left by an earlier run that was killed ({', '.join(removed)})")
    return removed


class Host:
    def __init__(self, role, octet, names=()):
        self.role, self.address, self.names = role, f"{SUBNET}.{octet}", list(names)


class Network:
    """Namespaces on one bridge: `<tag>-sw` holds the bridge, every host a veth to it (eth0 inside)
    with its address from 198.18.0.0/24, loopback up, IPv6 off on eth0 (no link-local addresses), and
    an /etc/hosts naming every host. Use as a context manager: down() runs whatever happens."""

    def __init__(self, hosts, tag=None):
        self.tag = tag or f"{PREFIX}{os.getpid()}"
        self.hosts = {h.role: h for h in hosts}
        self.made = []  # namespaces created, for down()
        self.procs = []  # processes started with popen(), for down()
        self._old_handlers = {}

    def ns(self, role):
        return f"{self.tag}-{role}"

    def address(self, role):
        return self.hosts[role].address

    def hosts_file(self):
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for h in self.hosts.values():
            lines.append(f"{h.address}\t{' '.join(h.names + [self.ns(h.role)])}")
        return "\n".join(lines) + "\n"

    def _add_ns(self, name):
        ip("netns", "add", name)
        self.made.append(name)
        # Interfaces made in this namespace from now on get no IPv6 (no fe80:: addresses); lo keeps ::1.
        self.run_in_ns(name, ["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"], check=False)
        ip("-n", name, "link", "set", "lo", "up")

    def run_in_ns(self, name, argv, check=True):
        out = subprocess.run(["ip", "netns", "exec", name] + argv, capture_output=True, text=True, timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"in {name}: {' '.join(argv)}: {out.stderr.strip()}")
        return out

    def up(self):
        self._install_handlers()
        clean_stale()
        switch = self.ns("sw")
        self._add_ns(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        hosts_text = self.hosts_file()
        for h in self.hosts.values():
            name = self.ns(h.role)
            os.makedirs(os.path.join("/etc/netns", name), exist_ok=True)
            with open(os.path.join("/etc/netns", name, "hosts"), "w") as f:
                f.write(hosts_text)
            self._add_ns(name)
            port = f"p-{h.role}"[:15]
            # Made in the switch's namespace with its peer straight in the host's: nothing ever
            # appears in the machine's own namespace.
            ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("-n", switch, "link", "set", port, "master", "br0")
            ip("-n", switch, "link", "set", port, "up")
            ip("-n", name, "addr", "add", f"{h.address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
        return self

    def cmd(self, role, argv):
        """argv run on that host: its network namespace and /etc/hosts, and its own host name (a UTS
        namespace: the EHLO our client sends names the student's machine, not this one)."""
        name = (self.hosts[role].names or [role])[0] if role in self.hosts else role
        return ["ip", "netns", "exec", self.ns(role), "unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                name] + list(argv)

    def run(self, role, argv, timeout=120, **kw):
        return subprocess.run(self.cmd(role, argv), capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, role, argv, **kw):
        proc = subprocess.Popen(self.cmd(role, argv), **kw)
        self.procs.append(proc)
        return proc

    def down(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # Whatever still runs in our namespaces (a server a failed step left), then the namespaces:
        # the veths and the bridge go with them.
        for name in reversed(self.made):
            remove_namespace(name)
        self.made = []
        try:
            os.rmdir("/etc/netns")  # when nothing else is in it (ip netns exec needs it only for us)
        except OSError:
            pass
        self._restore_handlers()

    def _install_handlers(self):
        """SIGTERM and SIGHUP end the run through the same clean-up as Ctrl-C (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, stop)

    def _restore_handlers(self):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    def __enter__(self):
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc):
        self.down()


class Capture:
    """A student's `make capture-start HOST=... PORT=... RPORT=...` (captures.capture start) in her
    namespace, ended by Ctrl-C to its process group as a terminal does."""

    def __init__(self, net, role, host, ports, name, out_dir):
        self.net, self.final = net, os.path.join(out_dir, f"{name}.pcapng")
        self.keylog = os.path.join(out_dir, f"{name}.keys.log")
        self.proc = net.popen(role, [PY, "-m", "captures.capture", "start", "--host", host,
                                     "--ports", ",".join(map(str, ports)), "--name", name, "--out", out_dir,
                                     "--mode", "implicit"],  # as make capture-start passes it
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=ROOT)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.output = self._until("capture running")

    def _read(self):
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)
        self.lines.put("")

    def _until(self, marker, timeout=60):
        text = ""
        deadline = time.monotonic() + timeout
        while marker not in text:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"capture: no {marker!r} within {timeout} s:\n{text}")
            if not line:
                raise RuntimeError(f"capture stopped before {marker!r}:\n{text}")
            text += line
        return text

    def stop(self):
        """Ctrl-C; returns what it printed after it (the file written, with its secrets or not)."""
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=120)
        rest = ""
        while True:
            line = self.lines.get(timeout=30)
            if not line:
                break
            rest += line
        if self.proc.returncode != 0 or not os.path.exists(self.final):
            raise RuntimeError(f"capture ended with {self.proc.returncode}:\n{self.output}{rest}")
        self.output += rest
        return rest


# The class: (student id, address's last octet, what she does).
STUDENTS = [
    ("ana", 11, "honest"),       # our clients with --keylog
    ("bob", 12, "honest"),       # our clients with SSLKEYLOGFILE
    ("carol", 13, "copier"),     # registers; hands in ana's file renamed
    ("dave", 14, "own-server"),  # the lab against servers on his own laptop
    ("erin", 15, "unrelated"),   # curl and python3 -m http.server
    ("frank", 16, "truncated"),  # an honest session, handed in cut short
    ("gina", 17, "text"),        # a wrong password, then a text file
    ("hal", 18, "absent"),       # on the roster, nothing handed in
]


class Classroom:
    """One class, start to finish: run() returns what the test asserts (the boards, the grades)."""

    def __init__(self, build="build", out=None, secret="classroom secret", quiet=False):
        self.build = os.path.abspath(os.path.join(ROOT, build))
        self.bin = os.path.join(self.build, "bin")
        self.out = os.path.abspath(out or os.path.join(self.build, "classroom"))
        self.secret = secret
        self.say = (lambda text: None) if quiet else say
        self.timings = {}
        self.servers = []

    def exe(self, name):
        path = os.path.join(self.bin, name)
        # A binary being rebuilt is briefly missing: wait for it rather than fail.
        deadline = time.monotonic() + 300
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} is missing: build first (make)")
            time.sleep(1)
        return path

    def tool(self, net, role, argv, **kw):
        """net.run() for a program of ours: one being rebuilt is briefly missing (exec fails, or `make
        grade` says so), then it is waited for and the step is run again."""
        for attempt in range(3):
            out = net.run(role, argv, **kw)
            text = out.stdout + out.stderr
            missing = (out.returncode in (126, 127, 255) and ("not found" in text or "No such file" in text)) or \
                ("build it with `make`" in text)
            if not missing or attempt == 2:
                return out
            for program in ("senderclient", "retrieverclient", "maillab-admin", "maillab-certs"):
                self.exe(program)
        return out

    def hosts(self):
        hosts = [Host("lab", 1, [SERVER_NAME, "lab"]), Host("teacher", 2, [f"teacher.{DOMAIN}"])]
        hosts += [Host(s, octet, [f"{s}.{DOMAIN}"]) for s, octet, _ in STUDENTS]
        return hosts

    # ---- the class server ----------------------------------------------------------------------
    def server(self, net, role, program, args, log, cwd):
        try:
            server = ServerProcess(net.cmd(role, [self.exe(program)] + args), log, timeout=60, cwd=cwd)
        except RuntimeError as e:
            raise RuntimeError(f"{program} in {role}: {e}\n{open(log, errors='replace').read()[-3000:]}")
        net.procs.append(server.proc)
        self.servers.append(server)
        return server

    def start_class_server(self, net):
        """As the instructor does on the class machine: a certificate for the host name from the lab
        CA, the two servers with common/class.properties (its users/instructor.secret, relative to
        where they run, is this class's secret)."""
        lab = self.labdir = os.path.join(self.out, "lab")
        os.makedirs(os.path.join(lab, "users"))
        secret_file = os.path.join(lab, "users", "instructor.secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.secret + "\n")
        self.secret_file = secret_file
        certs = os.path.join(lab, "certs")
        made = self.tool(net, "lab", [self.exe("maillab-certs"), "--host", SERVER_NAME, certs])
        if made.returncode != 0:
            raise RuntimeError(f"maillab-certs: {made.stdout}{made.stderr}")
        self.db = os.path.join(lab, "users", "maillab.db")
        common = [f"--config={ROOT}/common/class.properties", f"--db={self.db}", f"--certs={certs}"]
        self.server(net, "lab", "senderserver", common + [f"--hostname={SERVER_NAME}", "--port=465"],
                    os.path.join(lab, "senderserver.log"), lab)
        self.server(net, "lab", "retrieverserver", common + ["--port=443"], os.path.join(lab, "retrieverserver.log"), lab)
        # What the instructor hands out: the host name, the CA and each student's token.
        handout = os.path.join(self.out, "handout")
        os.makedirs(handout)
        shutil.copy(os.path.join(certs, "ca.pem"), os.path.join(handout, "ca.pem"))
        self.ca = os.path.join(handout, "ca.pem")
        self.roster = os.path.join(self.out, "roster.csv")
        with open(self.roster, "w") as f:
            f.write("student,account\n")
            for s, _, _ in STUDENTS:
                f.write(f"{s},{s}@447.edu\n")
        tokens = net.run("teacher", [PY, "-m", "captures.labtoken", "tokens", "--roster", self.roster,
                                     "--secret", self.secret], cwd=ROOT)
        if tokens.returncode != 0:
            raise RuntimeError(f"captures.labtoken tokens: {tokens.stderr}")
        self.tokens = dict(line.split(",", 1) for line in tokens.stdout.split())

    # ---- the board -----------------------------------------------------------------------------
    def board(self, net, as_json=True):
        """maillab-admin class-status on the class server's database; None when this build has no
        class-status yet (said once in self.board_note)."""
        argv = [self.exe("maillab-admin"), "--db", self.db, "class-status", "--roster", self.roster,
                "--secret-file", self.secret_file] + (["--json"] if as_json else [])
        out = self.tool(net, "lab", argv, timeout=60)
        if out.returncode != 0:
            self.board_note = f"maillab-admin class-status is not available here (exit {out.returncode}: " \
                              f"{(out.stderr or out.stdout).strip()[:300]})"
            return None
        if not as_json:
            return out.stdout
        return json.loads(out.stdout)

    def board_when(self, net, ready, timeout=20):
        """The board once `ready(board)` holds (the servers write their counts about once a second),
        or the last one read after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            board = self.board(net)
            if board is None or ready(board) or time.monotonic() > deadline:
                return board
            time.sleep(0.25)

    # ---- the students --------------------------------------------------------------------------
    def client(self, net, student, program, args, env=None, host=SERVER_NAME, port=None, ca=None):
        port = port or (465 if program == "senderclient" else 443)
        argv = [self.exe(program), "--host", host, "--port", str(port), "--ca", ca or self.ca] + list(args)
        out = self.tool(net, student, argv, env=env, timeout=120)
        return out

    def must(self, out, what):
        if out.returncode != 0:
            raise RuntimeError(f"{what}: exit {out.returncode}\n{out.stdout}{out.stderr}")
        return out

    def lab_session(self, net, student, home, keylog_by="option", host=SERVER_NAME, ports=(465, 443), ca=None):
        """The lab as docs/student.md says: capture, register, the lab message with the token in its
        Subject, read the mailbox, a conditional GET (304), stop the capture."""
        cap = Capture(net, student, host, ports, student, home)
        try:
            env, extra = None, []
            if keylog_by == "option":
                extra = ["--keylog", cap.keylog]
            else:
                env = dict(os.environ, SSLKEYLOGFILE=cap.keylog)
            kw = dict(env=env, host=host, ca=ca)
            account = f"{student}@447.edu"
            reg = self.must(self.client(net, student, "senderclient", ["--user", account] + extra, port=ports[0], **kw),
                            f"{student} registers")
            password = password_from(reg.stdout)
            if not password:
                raise RuntimeError(f"{student}: no password in {reg.stdout!r}")
            self.must(self.client(net, student, "senderclient",
                                  ["--user", account, "--password", password, "--to", account, "--subject",
                                   f"TLS lab {self.tokens[student]}"] + extra, port=ports[0], **kw),
                      f"{student} sends the lab message")
            shown = self.must(self.client(net, student, "retrieverclient",
                                          ["--user", account, "--password", password, "--verbose"] + extra,
                                          port=ports[1], **kw), f"{student} reads her mailbox")
            etag = re.search(r"(?im)^S: etag: *(.+?)\s*$", shown.stderr)
            if not etag:
                raise RuntimeError(f"{student}: no ETag in\n{shown.stderr[-2000:]}")
            again = self.must(self.client(net, student, "retrieverclient",
                                          ["--user", account, "--password", password, "--verbose", "--header",
                                           f"If-None-Match: {etag.group(1)}"] + extra, port=ports[1], **kw),
                              f"{student} asks again with If-None-Match")
            if not re.search(r"(?m)^S: HTTP/1\.1 304", again.stderr):
                raise RuntimeError(f"{student}: the conditional GET was not answered 304:\n{again.stderr[-2000:]}")
            cap.stop()
        except BaseException:
            if cap.proc.poll() is None:
                os.killpg(cap.proc.pid, signal.SIGINT)
            raise
        return cap.final, password

    def student(self, net, student, kind):
        home = os.path.join(self.out, "students", student)
        os.makedirs(home)
        started = time.monotonic()
        result = {"kind": kind}
        if kind in ("honest", "truncated"):
            result["file"], _ = self.lab_session(net, student, home, "env" if student == "bob" else "option")
        elif kind == "copier":
            reg = self.must(self.client(net, student, "senderclient", ["--user", f"{student}@447.edu"]),
                            f"{student} registers")
            result["password"] = password_from(reg.stdout)
        elif kind == "text":
            reg = self.must(self.client(net, student, "senderclient", ["--user", f"{student}@447.edu"]),
                            f"{student} registers")
            password = password_from(reg.stdout)
            wrong = "00000447" if password != "00000447" else "11111447"
            typo = self.client(net, student, "senderclient", ["--user", f"{student}@447.edu", "--password", wrong,
                                                              "--to", f"{student}@447.edu", "--subject", "hello"])
            if typo.returncode == 0:
                raise RuntimeError(f"{student}: a wrong password was accepted:\n{typo.stdout}{typo.stderr}")
            result["file"] = os.path.join(home, "gina-notes.pcapng")
            with open(result["file"], "w") as f:
                f.write("I could not get Wireshark to work on my laptop, sorry. -- gina\n")
        elif kind == "own-server":
            result["file"] = self.own_server_session(net, student, home)
        elif kind == "unrelated":
            result["file"] = self.unrelated_session(net, student, home)
        self.timings[f"student {student}"] = time.monotonic() - started
        return result

    def own_server_session(self, net, student, home):
        """The lab against a senderserver and a retrieverserver on the student's own machine (her own
        database, her own lab CA from `make certs`), reached by her machine's name."""
        name = f"{student}.{DOMAIN}"
        certs = os.path.join(home, "certs")
        self.must(self.tool(net, student, [self.exe("maillab-certs"), "--host", name, certs]), f"{student}'s certificates")
        address = net.address(student)
        common = [f"--db={home}/users/maillab.db", f"--certs={certs}", f"--bind={address}"]
        os.makedirs(os.path.join(home, "users"))
        self.server(net, student, "senderserver", common + ["--port=9000"], os.path.join(home, "senderserver.log"), home)
        self.server(net, student, "retrieverserver", common + ["--port=9100"], os.path.join(home, "retrieverserver.log"),
                    home)
        final, _ = self.lab_session(net, student, home, "option", host=name, ports=(9000, 9100),
                                    ca=os.path.join(certs, "ca.pem"))
        return final

    def unrelated_session(self, net, student, home):
        """Traffic of other programs: curl and Python's http.server on her own machine."""
        www = os.path.join(home, "www")
        os.makedirs(www)
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write("<p>my homepage</p>\n")
        web = net.popen(student, [PY, "-u", "-m", "http.server", "8000", "--bind", net.address(student), "--directory",
                                  www], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            line = web.stdout.readline()  # its ready line (-u: unbuffered)
            if not line.startswith("Serving HTTP"):
                raise RuntimeError(f"http.server did not start: {line!r}")
            cap = Capture(net, student, f"{student}.{DOMAIN}", [8000], student, home)
            for path in ("/", "/index.html"):
                got = net.run(student, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                        f"http://{student}.{DOMAIN}:8000{path}"], timeout=30)
                if got.stdout != "200":
                    raise RuntimeError(f"curl {path}: {got.stdout}{got.stderr}")
            cap.stop()
        finally:
            web.terminate()
            web.wait(timeout=10)
        return cap.final

    # ---- the instructor ------------------------------------------------------------------------
    def collect(self, results):
        """The files handed in, as the students named them."""
        sub = self.submissions = os.path.join(self.out, "submissions")
        os.makedirs(sub)
        shutil.copy(results["ana"]["file"], os.path.join(sub, "ana.pcapng"))
        shutil.copy(results["bob"]["file"], os.path.join(sub, "lab3-bob.pcapng"))
        shutil.copy(results["ana"]["file"], os.path.join(sub, "carol.pcapng"))  # a renamed copy
        shutil.copy(results["dave"]["file"], os.path.join(sub, "dave.pcapng"))
        shutil.copy(results["erin"]["file"], os.path.join(sub, "erin.pcapng"))
        size = os.path.getsize(results["frank"]["file"])
        with open(os.path.join(sub, "frank.pcapng"), "wb") as f:  # head -c: cut short mid-session
            subprocess.run(["head", "-c", str(size // 2), results["frank"]["file"]], stdout=f, check=True)
        shutil.copy(results["gina"]["file"], os.path.join(sub, "gina.pcapng"))  # text, named like a capture
        # hal: nothing.

    def grade(self, net):
        """`make grade`, as docs/instructors.md says, on the instructor's machine."""
        # A make of its own (under `make classroom`, not a sub-make of it: no jobserver to share).
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        # BUILD: the grader reads the record with this build's maillab-admin (build/asan under test-asan).
        argv = ["make", "-s", "-C", ROOT, "grade", f"BUILD={self.build}", f"DIR={self.submissions}", f"ROSTER={self.roster}",
                f"SECRET={self.secret}", f"DB={self.db}",
                # The class server's certificate (the grader checks the sessions were with it).
                f"CERT={os.path.join(self.labdir, 'certs', 'server.pem')}"]
        out = self.tool(net, "teacher", argv, timeout=600, env=env)
        self.grade_output = out.stdout + out.stderr
        if out.returncode != 0 or "Traceback" in out.stderr:
            raise RuntimeError(f"make grade failed (exit {out.returncode}):\n{self.grade_output[-4000:]}")
        with open(os.path.join(self.submissions, "grades.csv"), newline="") as f:
            return {row["student"]: row for row in csv.DictReader(f)}

    # ---- the whole class -----------------------------------------------------------------------
    def run(self):
        why = available()
        if why:
            raise RuntimeError(why)
        shutil.rmtree(self.out, ignore_errors=True)
        os.makedirs(self.out)
        self.board_note = ""
        result = {"out": self.out, "timings": self.timings}
        t0 = time.monotonic()
        net = Network(self.hosts())
        with net:
            self.net = net
            self.timings["network"] = time.monotonic() - t0
            self.say(f"classroom: {len(net.hosts)} machines on a bridge ({SUBNET}.0/24, namespaces {net.tag}-*), "
                f"the class server {SERVER_NAME} at {net.address('lab')}")
            t = time.monotonic()
            self.start_class_server(net)
            self.timings["class server"] = time.monotonic() - t
            self.say(f"classroom: senderserver on {SERVER_NAME}:465 and retrieverserver on {SERVER_NAME}:443 "
                f"(common/class.properties); tokens and ca.pem handed out")
            result["board_before"] = self.board(net)
            t = time.monotonic()
            # Four at a time on this machine's two cores (each student's steps are mostly waiting).
            pool = ThreadPoolExecutor(max_workers=4)
            try:
                futures = {s: pool.submit(self.student, net, s, kind) for s, _, kind in STUDENTS if kind != "absent"}
                results = {s: f.result() for s, f in futures.items()}
            finally:
                # On a failure or Ctrl-C, the network's clean-up ends what the others still run.
                pool.shutdown(wait=False, cancel_futures=True)
            self.timings["students"] = time.monotonic() - t
            self.say(f"classroom: the students are done ({self.timings['students']:.1f} s): "
                + ", ".join(f"{s} {kind}" for s, _, kind in STUDENTS))

            def caught_up(board):
                by = {row.get("student") or row.get("account", "").split("@")[0]: row for row in board["students"]}
                return all(by.get(s, {}).get("not_modified_at") for s in ("ana", "bob", "frank")) and \
                    by.get("gina", {}).get("failed_logins", 0) >= 1
            result["board_mid"] = self.board_when(net, caught_up)
            result["board_table"] = self.board(net, as_json=False) if result["board_mid"] is not None else None
            result["board_note"] = self.board_note
            if result["board_table"]:
                self.say("classroom: the board mid-class (make class-status):\n" + result["board_table"].rstrip())
            elif self.board_note:
                self.say(f"classroom: no board: {self.board_note}")
            t = time.monotonic()
            self.collect(results)
            result["grades"] = self.grade(net)
            self.timings["grading"] = time.monotonic() - t
            result["grade_output"] = self.grade_output
            result["submissions"] = self.submissions
            for server in self.servers:
                server.stop()
        self.timings["total"] = time.monotonic() - t0
        return result


def shown(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def print_grades(rows):
    say("classroom: grades (submissions/grades.csv):")
    for student, row in rows.items():
        total = row.get("total", row.get("score", "?"))
        files = row.get("files", row.get("file", "")) or "(nothing handed in)"
        why = (row.get("verdict") or row.get("reasons") or "").strip()
        say(f"  {student:6} {total:>4} of {row.get('max', '?'):<4} {files:18} {why[:110]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--out", default=None, help="where the class's files go (default BUILD/classroom)")
    parser.add_argument("--secret", default="classroom secret")
    args = parser.parse_args()
    why = available()
    if why:
        say(f"classroom: {why}")
        return 2
    started = time.monotonic()
    try:
        result = Classroom(args.build, args.out, args.secret).run()
    except KeyboardInterrupt:
        say("\nclassroom: interrupted; everything torn down")
        return 130
    except RuntimeError as e:
        say(f"classroom: FAILED: {e}\nclassroom: everything torn down")
        return 1
    print_grades(result["grades"])
    t = result["timings"]
    say(f"classroom: done in {time.monotonic() - started:.0f} s (network {t['network']:.1f} s, students "
        f"{t['students']:.1f} s, grading {t['grading']:.1f} s); namespaces, servers and captures gone. "
        f"Open {shown(os.path.join(result['submissions'], 'grades.html'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
