"""Several instances behind a balancer (issue 21, docs/balancer.md): network namespaces (the virtual
classroom's tests/classroom.py Network) hold one PostgreSQL cluster, two senders and two retrievers
on hosts of their own sharing it, HAProxy in `mode tcp` with send-proxy-v2 and health checks in front,
a student and a rogue host. The servers see the student's address, not the balancer's; a password
set on one machine is in force on every instance at once; kill -9 of one sender under load loses no
acknowledged message and the balancer's new sessions go to the other; a PROXY header forged by a
host that is not the balancer is not believed.

Needs root, `ip netns`, HAProxy (Debian haproxy) and PostgreSQL (Debian postgresql); skipped, saying
so, without them. Run as a script (`test_balancer.py load|smtp|http ...`) it is the student's client
inside its namespace."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
NAME = "mail.maillab.test"  # the balancer's name: what students connect to
USER = "ana@447.edu"


# ---- the student's side, run inside its namespace ------------------------------------------------------

def client_context(ca, check_hostname=True):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = check_hostname  # off only for probes of one instance by its address
    return ctx


def smtp_login(host, port, ca, password, keylog=None):
    """'ok' or the refusal, logging in once over SMTP_SSL."""
    import smtplib
    ctx = client_context(ca, host == NAME)
    if keylog:
        ctx.keylog_filename = keylog
    try:
        with smtplib.SMTP_SSL(host, port, context=ctx, timeout=20) as s:
            # AUTH PLAIN alone: login() would try LOGIN after a refusal, a second guess of the budget.
            s.user, s.password = USER, password
            s.ehlo()
            s.auth("PLAIN", s.auth_plain)
        return "ok"
    except smtplib.SMTPAuthenticationError as e:
        return f"refused {e.smtp_code}"


def http_get(host, port, ca, password, path):
    """(status, body) of one GET with Basic authentication."""
    import base64
    import http.client
    conn = http.client.HTTPSConnection(host, port, context=client_context(ca, host == NAME), timeout=20)
    token = base64.b64encode(f"{USER}:{password}".encode()).decode()
    conn.request("GET", path, headers={"Authorization": "Basic " + token, "Host": NAME})
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    conn.close()
    return response.status, body


def load(host, port, ca, password, threads):
    """Clients sending to themselves through the balancer until stdin closes: one line per message
    acknowledged with 250 ("ack SUBJECT"), one per failure ("fail ..."); a session sends a few
    messages, so that some are in flight when an instance dies."""
    import smtplib
    stop = threading.Event()
    out = threading.Lock()

    def say(line):
        with out:
            print(line, flush=True)

    def worker(index):
        n = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP_SSL(host, port, context=client_context(ca), timeout=20) as s:
                    s.login(USER, password)
                    for _ in range(4):
                        if stop.is_set():
                            break
                        n += 1
                        subject = f"load-{index}-{n}"
                        s.sendmail(USER, [USER], f"From: {USER}\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\nunder load\r\n")
                        say(f"ack {subject}")
            except (OSError, smtplib.SMTPException) as e:
                say(f"fail {index} {type(e).__name__} {str(e)[:80]!r}")
                time.sleep(0.05)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    sys.stdin.read()  # the test closes it to stop the load
    stop.set()
    for w in workers:
        w.join()
    say("done")


def main(argv):
    what = argv[1]
    if what == "load":
        load(argv[2], int(argv[3]), argv[4], argv[5], int(argv[6]))
    elif what == "smtp":
        print(smtp_login(argv[2], int(argv[3]), argv[4], argv[5], argv[6] if len(argv) > 6 else None))
    elif what == "http":
        status, body = http_get(argv[2], int(argv[3]), argv[4], argv[5], argv[6])
        print(json.dumps({"status": status, "body": body}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


# ---- the test ------------------------------------------------------------------------------------------

# Imported only here, below the script's own part, so that the student's client run by its path inside
# a namespace needs nothing of ours.
from tests import classroom, pg_cluster  # noqa: E402
from tests.classroom import Host, Network  # noqa: E402
from tests.e2e.harness import Skip, test  # noqa: E402

BALANCER, DB, STUDENT, ROGUE = "lb", "db", "student", "rogue"
SENDERS, RETRIEVERS = ("s1", "s2"), ("r1", "r2")

HAPROXY_CFG = """\
# HAProxy in front of two senders and two retrievers (docs/balancer.md): TCP only, the TLS is the
# servers' own; each connection starts with a PROXY v2 header naming the client; health checks
# (send a LOCAL header) take a dead instance out within a second, and a refused connect is retried
# on the other instance.
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend smtps
    bind {lb}:465
    default_backend senders
backend senders
    balance roundrobin
    default-server send-proxy-v2 check inter 300ms fall 1 rise 2
    server s1 {s1}:465
    server s2 {s2}:465
frontend https
    bind {lb}:443
    default_backend retrievers
backend retrievers
    balance roundrobin
    default-server send-proxy-v2 check inter 300ms fall 1 rise 2
    server r1 {r1}:443
    server r2 {r2}:443
frontend pop3s
    bind {lb}:995
    default_backend pop3
backend pop3
    default-server send-proxy-v2 check inter 300ms fall 1 rise 2
    server r1 {r1}:995
    server r2 {r2}:995
"""


def needs_balancer_tools():
    why = classroom.available()
    if why:
        raise Skip(why)
    if not shutil.which("haproxy") and not os.path.exists("/usr/sbin/haproxy"):
        raise Skip("HAProxy is not installed (Debian package haproxy, in the Makefile's TEST_PACKAGES)")
    if not pg_cluster.postgres_bin():
        raise Skip("no PostgreSQL server here (Debian package postgresql)")


def wait_for(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def accepts(net, role, address, port):
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
    return net.run(role, [PY, "-c", probe], timeout=10).returncode == 0


class Site:
    """The namespaced hosts and what runs on them; stop() tears everything down."""

    def __init__(self, lab):
        self.lab = lab
        self.dir = lab.path("balancer")
        os.makedirs(self.dir)
        hosts = [Host(BALANCER, 2, [NAME]), Host(DB, 5, ["db.maillab.test"]), Host("s1", 11), Host("s2", 12),
                 Host("r1", 21), Host("r2", 22), Host(STUDENT, 31), Host(ROGUE, 32)]
        self.net = Network(hosts, tag=f"{classroom.PREFIX}{os.getpid()}-bal")
        self.pg = None
        self.servers = {}
        self.room = classroom.Classroom(build=os.path.relpath(lab.build, ROOT), out=self.dir, quiet=True)

    def up(self):
        net = self.net
        net.up()
        self.pg = pg_cluster.Cluster(listen=net.address(DB), wrap=lambda argv: net.cmd(DB, argv))
        self.url = self.pg.new_database("bal")
        self.certs = os.path.join(self.dir, "certs")
        made = subprocess.run([self.lab.exe("maillab-certs"), "--host", NAME, self.certs], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        self.ca = os.path.join(self.certs, "ca.pem")
        config = os.path.join(self.dir, "instances.properties")
        with open(config, "w") as f:
            f.write("sender.bind = 0.0.0.0\nretriever.bind = 0.0.0.0\n"
                    f"proxy.trustedAddresses = {net.address(BALANCER)}\n"
                    "store.provenance = true\npop3.port = 995\nauth.guessBurst = 10\n"
                    "logging.loggers.root.channel = console\n")
        common = [f"--config={config}", f"--db={self.url}", f"--certs={self.certs}"]
        for role in SENDERS:
            self.start(role, "senderserver", common + [f"--hostname={NAME}", "--port=465"])
        for role in RETRIEVERS:
            self.start(role, "retrieverserver", common + ["--port=443", "--verbose"])
        cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(lb=net.address(BALANCER), **{r: net.address(r) for r in SENDERS + RETRIEVERS}))
        check = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.haproxy_log = os.path.join(self.dir, "haproxy.log")
        with open(self.haproxy_log, "w") as log:
            net.popen(BALANCER, ["haproxy", "-db", "-f", cfg], stdout=log, stderr=subprocess.STDOUT)
        for port in (465, 443, 995):
            wait_for(lambda: accepts(net, STUDENT, net.address(BALANCER), port), f"HAProxy on port {port}")
        return self

    def start(self, role, program, args):
        server = self.room.server(self.net, role, program, args, os.path.join(self.dir, f"{role}.log"), self.dir)
        self.servers[role] = server

    def log(self, role):
        with open(os.path.join(self.dir, f"{role}.log"), errors="replace") as f:
            return f.read()

    def as_student(self, *args, role=STUDENT, timeout=60):
        out = self.net.run(role, [PY, os.path.abspath(__file__)] + [str(a) for a in args], timeout=timeout)
        assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
        return out.stdout.strip()

    def admin(self, *args, role=DB):
        out = self.net.run(role, [self.lab.exe("maillab-admin"), "--db", self.url] + list(args), timeout=60)
        assert out.returncode == 0, f"maillab-admin {args}: {out.stdout}{out.stderr}"
        return out.stdout

    def stop(self):
        try:
            for server in self.servers.values():
                server.stop()
            if self.pg:
                self.pg.stop()
        finally:
            self.net.down()


@test
def several_instances_behind_haproxy_share_one_store_and_see_the_students_address(lab):
    """Two senders and two retrievers on their own hosts, one PostgreSQL, HAProxy with PROXY v2:
    the student's address (not the balancer's) in the logs, the guess budget's provenance and the
    message's story; a password set once is in force on all four at once; kill -9 of a sender under
    load loses no acknowledged message and the survivor takes the new sessions; a forged PROXY
    header from another host is not believed; nothing is left behind."""
    needs_balancer_tools()
    site = Site(lab)
    tag = site.net.tag
    try:
        site.up()
        net = site.net
        student, balancer = net.address(STUDENT), net.address(BALANCER)

        # Registration through the balancer, with the student's key log: the TLS session on record
        # (provenance) names the student's address.
        out = net.run(STUDENT, [site.lab.exe("senderclient"), "--host", NAME, "--port", "465", "--ca", site.ca,
                                "--user", "ana"], timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        password = classroom.password_from(out.stdout)
        assert password, out.stdout
        keylog = os.path.join(site.dir, "student.keys")
        assert site.as_student("smtp", NAME, 465, site.ca, password, keylog) == "ok"
        randoms = [line.split()[1] for line in open(keylog) if line.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET")]
        sessions = json.loads(site.admin("tls-sessions", "--json", *randoms))
        assert sessions and all(s["peer"].startswith(student + ":") for s in sessions), sessions
        senders_log = site.log("s1") + site.log("s2")
        assert f"peer={student}:" in senders_log and f"via={balancer}:" in senders_log, senders_log[-3000:]

        listing = json.loads(site.as_student("http", NAME, 443, site.ca, password, f"/mailboxes/{USER}/messages"))
        assert listing["status"] == 200, listing
        # POP3 through the balancer: the retriever logs the student with the balancer beside.
        import_pop3 = ("import poplib,ssl,sys; c=ssl.create_default_context(cafile=sys.argv[1]); "
                       "p=poplib.POP3_SSL(sys.argv[2], 995, context=c, timeout=20); p.user(sys.argv[3]); "
                       "p.pass_(sys.argv[4]); print(p.stat()); p.quit()")
        pop = net.run(STUDENT, [PY, "-c", import_pop3, site.ca, NAME, USER, password], timeout=60)
        assert pop.returncode == 0, pop.stdout + pop.stderr
        retrievers_log = site.log("r1") + site.log("r2")  # with --verbose: a line per request
        assert f"event=request peer={student}:" in retrievers_log and f"via={balancer}:" in retrievers_log, retrievers_log[-3000:]
        assert "service=pop3 peer=" + student in retrievers_log, retrievers_log[-3000:]

        # A password set on one machine (the instructor on s1) is in force on every instance at once,
        # though each had just verified (and cached) the old one. Each instance is asked directly:
        # the student is not a trusted balancer, so it is taken as a direct client.
        for role in SENDERS:
            assert site.as_student("smtp", net.address(role), 465, site.ca, password) == "ok"
        for role in RETRIEVERS:
            assert json.loads(site.as_student("http", net.address(role), 443, site.ca, password, "/mailboxes/" + USER + "/messages"))["status"] == 200
        new_password = classroom.password_from(site.admin("set-password", USER, role="s1"))
        assert new_password and new_password != password
        for role in SENDERS:
            assert site.as_student("smtp", net.address(role), 465, site.ca, password).startswith("refused"), role
            assert site.as_student("smtp", net.address(role), 465, site.ca, new_password) == "ok", role
        for role in RETRIEVERS:
            old = json.loads(site.as_student("http", net.address(role), 443, site.ca, password, f"/mailboxes/{USER}/messages"))
            new = json.loads(site.as_student("http", net.address(role), 443, site.ca, new_password, f"/mailboxes/{USER}/messages"))
            assert old["status"] == 401 and new["status"] == 200, (role, old["status"], new["status"])
        password = new_password

        # A host that is not the balancer sends a PROXY header naming someone else: not believed
        # (the header is just bytes of a failed handshake), logged under its own address.
        forged = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + socket.inet_aton("198.19.0.99") +
                  socket.inet_aton(net.address("s2")) + (40000).to_bytes(2, "big") + (465).to_bytes(2, "big"))
        rogue = ("import socket,ssl,sys; s=socket.create_connection((sys.argv[1], 465), timeout=10); "
                 "s.sendall(bytes.fromhex(sys.argv[2])); c=ssl.create_default_context(cafile=sys.argv[3]); "
                 "c.check_hostname=False\ntry:\n c.wrap_socket(s); print('believed')\n"
                 "except (ssl.SSLError, OSError) as e: print('refused', e)")
        out = net.run(ROGUE, [PY, "-c", rogue, net.address("s2"), forged.hex(), site.ca], timeout=60)
        assert out.stdout.startswith("refused"), out.stdout + out.stderr
        wait_for(lambda: f"peer={net.address(ROGUE)}:" in site.log("s2"), "the rogue's connection in s2's log")
        assert "198.19.0.99" not in site.log("s2") + site.log("s1")

        # kill -9 of one sender under load: every message acknowledged with 250 is in the store,
        # and the new sessions go to the survivor.
        load = net.popen(STUDENT, [PY, os.path.abspath(__file__), "load", NAME, "465", site.ca, password, "6"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        s1_connects_before = site.log("s1").count(f"event=connect peer={student}:")
        lines = []
        def read_load():
            for line in load.stdout:
                lines.append(line)
        reader = threading.Thread(target=read_load, daemon=True)
        reader.start()
        wait_for(lambda: sum(l.startswith("ack ") for l in lines) >= 40, "40 messages acknowledged before the kill", 120)
        s2_connects_before = site.log("s2").count(f"event=connect peer={student}:")
        # The kill lands under load: s1 has been taking the balancer's sessions until now.
        assert site.log("s1").count(f"event=connect peer={student}:") > s1_connects_before + 2, site.log("s1")[-2000:]
        site.servers["s1"].proc.send_signal(signal.SIGKILL)
        killed_at = len(lines)
        site.servers["s1"].proc.wait()
        wait_for(lambda: sum(l.startswith("ack ") for l in lines[killed_at:]) >= 60,
                 "60 messages acknowledged after the kill", 120)
        load.stdin.close()
        load.wait(timeout=60)
        reader.join(timeout=10)
        acked = [l.split()[1] for l in lines if l.startswith("ack ")]
        failures = [l for l in lines if l.startswith("fail ")]
        stored = {m["subject"] for m in json.loads(site.admin("mailbox", USER, "--json"))}
        lost = [s for s in acked if s not in stored]
        assert not lost, f"acknowledged but not stored: {lost[:10]} ({len(lost)} of {len(acked)}); failures: {failures[:5]}"
        # The clients carried on through the balancer on s2. (Whether the kill cut a session in the
        # middle depends on the moment: a session between two messages ends with its QUIT unanswered,
        # which smtplib does not report; those cut mid-message were never acknowledged.)
        assert site.log("s2").count(f"event=connect peer={student}:") > s2_connects_before + 5
        # What the balancer saw: s1 went down on its health check.
        # The story of a message sent through the balancer (read through it too) names the student.
        some = json.loads(site.admin("mailbox", USER, "--json"))[0]["id"]
        story = json.loads(site.as_student("http", NAME, 443, site.ca, password, f"/mailboxes/{USER}/messages/{some}/story"))
        assert story["status"] == 200 and student in story["body"], story
        assert balancer not in story["body"], story
    finally:
        site.stop()
    left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
            if n.startswith(tag)]
    assert not left, f"namespaces left: {left}"
