"""The benchmark's MailDev comparison (make bench, part 6): MailDev 3 from npm, the mail catcher
people install instead of a lab mail system, measured beside maillab with the same generator
(maillab-load), the same 4096-octet messages and the same TLS 1.3 + AUTH PLAIN, in interleaved
rounds (maillab, MailDev, MailDev, maillab, ...) so that a noisy neighbour hurts both alike:

  sessions    a new connection per message, c=20 (implicit TLS, AUTH PLAIN, one message, QUIT)
  kept open   c=20 connections, message after message (RSET between)
  listing     keep-alive HTTPS GETs with Basic auth of 50 messages of a 200-message mailbox:
              maillab's /mailboxes/bob@447.edu/messages (its default page), MailDev's
              /api/email?limit=50 (its REST API; version 3 serves it under /api)

MailDev is installed once into BUILD/peers/maildev (`npm install maildev@3`) and reused; when node
or npm is missing, node is older than MailDev 3 needs, or npm cannot install it, the comparison says
so in one Skip line and the rest of the bench goes on. QUICK=1 runs it only when it is already
installed (the install takes npm about 20 s of the minute QUICK has).

smtp-server, under MailDev, looks up the reverse DNS name of every new connection; MailDev offers
no setting to stop it, so maildev_no_reverse_dns.cjs, preloaded with NODE_OPTIONS, answers it at
once with no name: no query leaves loopback, and no resolver's latency is in MailDev's figures."""

import json
import os
import shutil
import socket
import subprocess
import time

from captures.labprocess import free_port
from tests.bench import rounds as rounds_of
from tests.bench.rounds import median

HERE = os.path.dirname(os.path.abspath(__file__))

PACKAGE = "maildev@3"
NODE_MAJOR_NEEDED = 20   # MailDev 3.0's package.json: "engines": {"node": ">=20.0.0"}
LISTED = 200             # messages in the mailbox that the listing GETs read
PAGE = 50                # maillab's http.defaultPageSize; MailDev is asked for the same number
PRELOAD = os.path.join(HERE, "maildev_no_reverse_dns.cjs")


def wait_port(port, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return True
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                return False
            time.sleep(0.05)


def install(build_dir, quick):
    """((node, MailDev's script, MailDev's version, node's version), None), installing MailDev when
    needed, or (None, why it cannot run)."""
    node, npm = shutil.which("node") or shutil.which("nodejs"), shutil.which("npm")
    if not node or not npm:
        return None, "node and npm are not installed (Debian: apt-get install nodejs npm)"
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return None, f"cannot read node's version ({version!r})"
    if major < NODE_MAJOR_NEEDED:
        return None, f"node {version} is older than MailDev 3 needs (node {NODE_MAJOR_NEEDED} or later)"
    prefix = os.path.join(build_dir, "peers", "maildev")
    package = os.path.join(prefix, "node_modules", "maildev", "package.json")
    if not os.path.exists(package):
        if quick:
            return None, (f"in QUICK mode, MailDev is run only when already installed ({os.path.relpath(prefix)}); "
                          "a full make bench installs it from npm (about 20 s)")
        print(f"installing {PACKAGE} from npm into {prefix} ...", flush=True)
        os.makedirs(prefix, exist_ok=True)
        out = subprocess.run([npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "--loglevel=error",
                              PACKAGE], capture_output=True, text=True)
        if out.returncode != 0 or not os.path.exists(package):
            last = (out.stderr.strip().splitlines() or ["no message"])[-1]
            return None, f"npm install {PACKAGE} failed: {last}"
    with open(package) as f:
        meta = json.load(f)
    return (node, os.path.join(prefix, "node_modules", "maildev", meta["bin"]["maildev"]), meta["version"], version), None


class MailDev:
    """One MailDev: SMTP over implicit TLS with AUTH (--incoming-secure, --incoming-user/-pass) and its
    web API over HTTPS with Basic auth (--https, --web-user/-pass), the lab's certificate for both;
    its mail in a folder of the bench's working directory (TMPDIR: MailDev's default in-memory store
    writes each message's .eml under the temporary folder)."""

    def __init__(self, found, work, name, cert, key, user, password):
        node, script, _, _ = found
        self.smtp_port, self.web_port = free_port(), free_port()
        tmp = os.path.join(work, f"maildev-{name}")
        os.makedirs(tmp)
        self.log = os.path.join(work, f"maildev-{name}.log")
        env = dict(os.environ, TMPDIR=tmp, NODE_OPTIONS=f"--require {PRELOAD}", NO_COLOR="1")
        self.cmd = [node, script, "--smtp", str(self.smtp_port), "--web", str(self.web_port), "--ip", "127.0.0.1",
                    "--web-ip", "127.0.0.1", "--incoming-user", user, "--incoming-pass", password, "--incoming-secure",
                    "--incoming-cert", cert, "--incoming-key", key, "--https", "--https-cert", cert, "--https-key", key,
                    "--web-user", user, "--web-pass", password]
        # MailDev prints a line for every message it receives: to a file, never to an unread pipe.
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        if not (wait_port(self.smtp_port, self.proc) and wait_port(self.web_port, self.proc)):
            self.stop()
            raise RuntimeError(f"MailDev did not listen on {self.smtp_port} and {self.web_port}; see {self.log}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def response_bytes(url, user, password, ca):
    out = subprocess.run(["curl", "-sS", "--cacert", ca, "-u", f"{user}:{password}", url], capture_output=True)
    return len(out.stdout) if out.returncode == 0 else None


def compare(b):
    """Runs the comparison on Bench b (tests/bench/bench.py); returns what report_lines shows."""
    found, why = install(os.path.dirname(b.bin), b.quick)
    if not found:
        print(f"Skip: MailDev: {why}", flush=True)
        return {"skipped": why}
    _, _, maildev_version, node_version = found
    print(f"MailDev {maildev_version} on node {node_version}", flush=True)
    rounds, d = (1, 1) if b.quick else (3, 5)
    load_before = os.getloadavg()[0]
    # Bench.maillab's 4 GiB quota: three rounds of kept-open delivery to ana pass the default 256 MiB.
    sender, retriever, password = b.maillab("maildev-compare.db")
    ca = os.path.join(b.work, "certs", "ca.pem")
    servers = []
    try:
        try:
            smtp_peer = MailDev(found, b.work, "smtp", b.cert, b.key, "ana@447.edu", password)
            servers.append(smtp_peer)
            list_peer = MailDev(found, b.work, "list", b.cert, b.key, "ana@447.edu", password)
            servers.append(list_peer)
        except RuntimeError as e:  # the rest of the bench's report is still written
            print(f"Skip: MailDev: {e}", flush=True)
            return {"skipped": str(e)}
        user = ["--user", "ana@447.edu", "--password", password, "--size", str(b.size)]
        # The listings' mailboxes: 200 messages each, bob's at maillab (ana's password), MailDev's one inbox.
        for port, to in ((sender.port, "bob@447.edu"), (list_peer.smtp_port, "ana@447.edu")):
            b.load("fill the mailbox", "smtp", port, user + ["--to", to, "--connections", "20", "--keep-open"], LISTED, 30)
            b.results.pop()
        # Bob's password, new and known, through the store's one door (maillab-admin prints it once).
        reset = subprocess.run([b.exe("maillab-admin"), "--db", os.path.join(b.work, "maildev-compare.db"),
                                "set-password", "bob@447.edu"], capture_output=True, text=True, check=True)
        bob_password = reset.stdout.split("password: ")[1].strip()
        maillab_path = "/mailboxes/bob@447.edu/messages"
        maildev_path = f"/api/email?limit={PAGE}"
        sizes = {"maillab": response_bytes(f"https://localhost:{retriever.port}{maillab_path}", "bob@447.edu",
                                           bob_password, ca),
                 "MailDev": response_bytes(f"https://localhost:{list_peer.web_port}{maildev_path}", "ana@447.edu",
                                           password, ca)}
        figures = [
            ("sessions", "new SMTP sessions/s, c=20", "smtp", {
                "maillab": (sender.port, user + ["--connections", "20"], [sender.proc.pid]),
                "MailDev": (smtp_peer.smtp_port, user + ["--connections", "20"], [smtp_peer.proc.pid])}, 100000),
            ("kept_open", "kept-open messages/s, c=20", "smtp", {
                "maillab": (sender.port, user + ["--connections", "20", "--keep-open"], [sender.proc.pid]),
                "MailDev": (smtp_peer.smtp_port, user + ["--connections", "20", "--keep-open"], [smtp_peer.proc.pid])},
             1000000),
            ("listing", f"listing GETs/s ({PAGE} of {LISTED} messages), c=20", "https", {
                "maillab": (retriever.port, ["--user", "bob@447.edu", "--password", bob_password, "--path", maillab_path,
                                             "--connections", "20"], [retriever.proc.pid]),
                "MailDev": (list_peer.web_port, ["--user", "ana@447.edu", "--password", password, "--path",
                                                 maildev_path, "--connections", "20"], [list_peer.proc.pid])}, 10000000),
        ]
        runs = rounds_of.interleave(b, figures, rounds, d, ("maillab", "MailDev"))
        commands = [r["command"] for key, *_ in figures for who in ("maillab", "MailDev") for r in runs[key][who][:1]]
        return {"rounds": rounds, "seconds": d, "load": (load_before, os.getloadavg()[0]), "maildev": maildev_version,
                "node": node_version, "figures": [(key, what) for key, what, *_ in figures], "runs": runs, "bytes": sizes,
                "commands": commands}
    finally:
        for s in servers:
            s.stop()
        sender.stop()
        retriever.stop()


def errors_of(results):
    total = {}
    for r in results:
        for k, v in r.get("errors", {}).items():
            if not k.startswith("(info)"):
                total[k] = total.get(k, 0) + v
    return ", ".join(f"{k}: {v}" for k, v in total.items()) or "none"


def cost_text(costs):
    """The server's cost per message or request, the median of the rounds: CPU µs, system calls
    (when perf counted them), context switches."""
    if not costs:
        return "–"
    calls = [c["syscalls"] for c in costs if c.get("syscalls") is not None]
    return (f"{median([c['cpu_us'] for c in costs]):,.0f} µs CPU, "
            + (f"{median(calls):.1f} system calls, " if calls else "")
            + f"{median([c['ctxsw'] for c in costs]):.1f} context switches")


def targets(m):
    """Issue 22: ahead of MailDev on every figure (median rounds); none when MailDev was not run."""
    if not m or m.get("skipped"):
        return []
    rows = []
    for key, what in m["figures"]:
        ours = median([r["per_second"] for r in m["runs"][key]["maillab"]])
        theirs = median([r["per_second"] for r in m["runs"][key]["MailDev"]])
        rows.append((f"{what} vs MailDev", ours / theirs if theirs else float("inf"), 1.0))
    return rows


def report_lines(m, size):
    """docs/benchmarks.md's MailDev section."""
    if not m:
        return []
    lines = ["", "## MailDev, the mail catcher people install instead", ""]
    if m.get("skipped"):
        return lines + [f"Not measured in this run: {m['skipped']}."]
    lines += [f"MailDev {m['maildev']} (npm, on node {m['node']}) beside maillab, {m['rounds']} interleaved round"
              f"{'s' if m['rounds'] > 1 else ''} of {m['seconds']} s per figure (maillab first in odd rounds, "
              "MailDev first in even ones): the median round, every round, and each server's cost per "
              "message or request (medians; measured as in the section above). Same generator, same "
              f"{size}-octet messages, same AUTH PLAIN."
              + (f" Load average (1 min, this benchmark's own processes included) at the start and end: "
                 f"{m['load'][0]:.1f} and {m['load'][1]:.1f} on {os.cpu_count()} cores; the interleaving spreads "
                 "other work over both servers alike." if m.get("load") else ""), "",
              "| figure | maillab | MailDev | maillab / MailDev | maillab's cost | MailDev's cost "
              "| rounds (maillab; MailDev) | errors (maillab; MailDev) |",
              "|---|---|---|---|---|---|---|---|"]
    for key, what in m["figures"]:
        ours, theirs = m["runs"][key]["maillab"], m["runs"][key]["MailDev"]
        a, b = median([r["per_second"] for r in ours]), median([r["per_second"] for r in theirs])
        cost = lambda rs: cost_text([r["cost"] for r in rs if r.get("cost")])  # noqa: E731
        each = lambda rs: ", ".join(f"{r['per_second']:,.0f}" for r in rs)  # noqa: E731
        lines.append(f"| {what} | {a:,.0f} | {b:,.0f} | {a / b if b else float('inf'):.1f}× | "
                     f"{cost(ours)} | {cost(theirs)} | {each(ours)}; {each(theirs)} | "
                     f"{errors_of(ours)}; {errors_of(theirs)} |")
    sizes = m.get("bytes") or {}
    lines += ["",
              "- **Transport**: both over TLS 1.3 on every connection: maillab's SMTP is implicit TLS (it offers no "
              "plain SMTP) and its API HTTPS; MailDev's SMTP runs with `--incoming-secure` (implicit TLS, node's "
              "OpenSSL, TLS 1.3 negotiated) and `--incoming-user/--incoming-pass` (AUTH PLAIN), its API with "
              "`--https` and `--web-user/--web-pass` (Basic auth), the same lab certificate. MailDev's own default is "
              "plain SMTP without AUTH and plain HTTP.",
              "- **Durability**: maillab's 250 means the message is on disk: committed to SQLite (WAL, "
              "synchronous=FULL, group commit, an fdatasync per commit) before the reply. MailDev keeps its mailbox "
              "in memory and writes each message's .eml file under the temporary folder without fsync: its 250 means "
              "\"in the page cache\"; a crash or power cut loses what the kernel had not written yet, and a restart "
              "of its default in-memory store forgets the mailbox.",
              "- **Why MailDev's sessions are slow**: smtp-server waits 100 ms before every banner (its early-talker "
              "check), so a connection lasts at least 100 ms whatever the CPU and 20 connections can never pass "
              "200 sessions/s; below that, its CPU per session (the cost column) bounds it. Its SMTP, TLS and "
              "message parsing (mailparser, every message as it arrives) share node's one event-loop thread.",
              f"- **The listing**: maillab's page of {PAGE} summaries "
              f"({sizes.get('maillab') or '?'} bytes) against MailDev's `/api/email?limit={PAGE}`, which returns "
              f"{PAGE} whole messages with their text and headers ({sizes.get('MailDev') or '?'} bytes): MailDev's "
              "web UI lists from `/api/email/summary`, but the REST API a test reads is `/api/email`.",
              "- **No traffic leaves loopback**: smtp-server looks up the reverse DNS name of every new connection "
              "and MailDev has no setting to stop it; `tests/bench/maildev_no_reverse_dns.cjs`, preloaded with "
              "`NODE_OPTIONS=--require`, answers the lookup at once with no name (strace of MailDev under load: no "
              "connect or sendto at all).",
              "",
              "To reproduce: `make bench` (it installs MailDev from npm into `build/peers/maildev` once; node 20 or "
              "later and npm are needed, the Makefile installs Debian's when they are missing; `QUICK=1` runs one "
              "short round when MailDev is already installed). By hand: start MailDev as `tests/bench/maildev_peer.py` "
              "does (`NODE_OPTIONS=--require tests/bench/maildev_no_reverse_dns.cjs node "
              "build/peers/maildev/node_modules/maildev/dist/bin/maildev.js --smtp P --web W --ip 127.0.0.1 "
              "--web-ip 127.0.0.1 --incoming-secure --incoming-cert server.pem --incoming-key server.key "
              "--incoming-user U --incoming-pass PW --https --https-cert server.pem --https-key server.key "
              "--web-user U --web-pass PW`), then:", "", "```"]
    lines += m["commands"]
    lines += ["```"]
    return lines
