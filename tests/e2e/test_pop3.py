"""End-to-end tests of the retriever's POP3 with clients nobody here wrote: Python's poplib (POP3_SSL
and stls()), curl's pop3s://, fetchmail with an MDA, neomutt reading a pops:// mailbox; the
mail-client autoconfig document; and POP3 hostile input. A sender on the same database delivers
the mail (test_retriever.Lab2)."""

import json
import os
import poplib
import pty
import select
import shutil
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

from tests.e2e.harness import Skip, test, tls_connect
from tests.e2e.test_retriever import Lab2

# A body whose lines start with '.', which POP3 must byte-stuff (RFC 1939 3) and clients unstuff.
DOTTED = "first line\n.a line starting with a dot\n..two dots\n.\nlast line\n"


def pop3s(lab, l2):
    return poplib.POP3_SSL("localhost", l2.retriever.pop3_port, context=lab.ssl_context(), timeout=30)


def https_listing(l2):
    code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
    assert code == 200, body
    return json.loads(body)


def https_raw(l2, mid):
    out = subprocess.run(["curl", "-sS", "--fail", "--cacert", l2.lab.ca, "-u", f"bob@447.edu:{l2.bob}",
                          l2.url(f"/mailboxes/bob@447.edu/messages/{mid}/raw")], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


@test
def pop3_poplib_over_tls_lists_retrieves_and_dele_quit_removes_from_the_https_view(lab):
    with Lab2(lab) as l2:
        assert l2.retriever.pop3_port, "the ready line names no pop3 port"
        l2.send("ana", l2.ana, "bob", "Dots", DOTTED)
        listing = https_listing(l2)
        ids = sorted(m["id"] for m in listing["messages"])  # oldest first, as POP3 numbers them
        p = pop3s(lab, l2)
        assert p.getwelcome().startswith(b"+OK ")
        capa = p.capa()
        for want in ("USER", "UIDL", "TOP", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "IMPLEMENTATION"):
            assert want in capa, capa
        assert "STLS" not in capa  # implicit TLS: already encrypted
        p.user("bob@447.edu")
        p.pass_(l2.bob)
        count, size = p.stat()
        assert count == 2 and size == sum(m["size"] for m in listing["messages"]), (count, size)
        _, lines, _ = p.list()
        assert [int(line.split()[0]) for line in lines] == [1, 2]
        _, uidls, _ = p.uidl()
        first_uidls = [line.decode() for line in uidls]
        assert first_uidls == [f"1 {ids[0]}", f"2 {ids[1]}"], first_uidls
        # RETR gives the stored text exactly, once poplib has undone the byte-stuffing.
        _, message, octets = p.retr(2)
        raw = https_raw(l2, ids[1])
        assert b"\r\n".join(message) + b"\r\n" == raw, (message, raw)
        assert b".a line starting with a dot" in message and b"..two dots" in message and b"." in message
        _, top, _ = p.top(2, 1)
        assert top[-1] == b"first line" and b"Subject: Dots" in top
        p.dele(1)
        try:
            p.retr(1)
            raise AssertionError("a deleted message was sent")
        except poplib.error_proto as e:
            assert "already deleted" in str(e)
        assert p.quit().startswith(b"+OK")
        # The UPDATE state removed it: the HTTPS API no longer lists it.
        after = https_listing(l2)
        assert after["total"] == 1 and [m["id"] for m in after["messages"]] == [ids[1]], after
        # The UIDL of what is left is the same in a new session ("leave messages on server").
        p = pop3s(lab, l2)
        p.user("bob@447.edu")
        p.pass_(l2.bob)
        assert [line.decode() for line in p.uidl()[1]] == [f"1 {ids[1]}"]
        p.quit()
        log = l2.retriever.log_text()
        assert "service=pop3" in log and "event=update user=bob@447.edu deleted=1" in log, log
        assert l2.bob not in log


@test
def pop3_one_session_per_maildrop_and_wrong_passwords_say_auth(lab):
    with Lab2(lab) as l2:
        first = pop3s(lab, l2)
        first.user("bob@447.edu")
        first.pass_(l2.bob)
        second = pop3s(lab, l2)
        second.user("bob@447.edu")
        try:
            second.pass_(l2.bob)
            raise AssertionError("a second session got the maildrop")
        except poplib.error_proto as e:
            assert "[IN-USE]" in str(e), e
        first.quit()
        second.user("bob@447.edu")
        assert second.pass_(l2.bob).startswith(b"+OK")
        second.quit()
        # Unknown user and wrong password: one answer, [AUTH], saying how to register.
        for user, password in (("bob@447.edu", "00000447"), ("nobody@447.edu", "12345447")):
            p = pop3s(lab, l2)
            p.user(user)
            try:
                p.pass_(password)
                raise AssertionError("a wrong password was accepted")
            except poplib.error_proto as e:
                assert "[AUTH]" in str(e) and "sender" in str(e), e
            p.close()


@test
def pop3_stls_on_the_plaintext_port_refuses_credentials_before_tls(lab):
    with Lab2(lab, {"pop3.plainPort": 0}) as l2:
        assert l2.retriever.pop3_plain_port, "the ready line names no pop3-plain port"
        p = poplib.POP3("localhost", l2.retriever.pop3_plain_port, timeout=30)
        capa = p.capa()
        assert "STLS" in capa and "USER" not in capa and "SASL" not in capa, capa
        try:
            p.user("bob@447.edu")
            raise AssertionError("USER accepted before TLS")
        except poplib.error_proto as e:
            assert "STLS" in str(e) and str(l2.retriever.pop3_port) in str(e), e
        p.stls(context=lab.ssl_context())
        assert "USER" in p.capa()
        p.user("bob@447.edu")
        p.pass_(l2.bob)
        assert p.stat()[0] == 1
        _, message, _ = p.retr(1)
        assert b"Subject: First <note>" in message
        p.quit()
        log = l2.retriever.log_text()
        assert "stls=yes" in log, log


@test
def pop3_curl_pop3s_lists_and_retrieves(lab):
    with Lab2(lab) as l2:
        base = f"pop3s://localhost:{l2.retriever.pop3_port}/"
        curl = ["curl", "-sS", "--cacert", lab.ca, "-u", f"bob@447.edu:{l2.bob}"]
        listing = subprocess.run(curl + [base], capture_output=True, text=True, timeout=30)
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.strip().startswith("1 "), listing.stdout
        one = subprocess.run(curl + [base + "1"], capture_output=True, text=True, timeout=30)
        assert one.returncode == 0 and "Subject: First <note>" in one.stdout and "Hello Bob & friends" in one.stdout, \
            one.stdout + one.stderr
        # Without the lab CA the certificate is not trusted.
        untrusted = subprocess.run(["curl", "-sS", "-u", f"bob@447.edu:{l2.bob}", base], capture_output=True,
                                   text=True, timeout=30, env={**os.environ, "CURL_CA_BUNDLE": "/dev/null"})
        assert untrusted.returncode != 0


def client_home(lab, name, rc_name, rc_text):
    """A home directory of its own for a mail client (`HOME` while it runs: nothing of the machine's
    user is read), holding its configuration file `rc_name`, readable by its owner only (fetchmail
    refuses one that others can read). Returns (home, the configuration file's path)."""
    home = lab.path(name)
    os.makedirs(home)
    rc = os.path.join(home, rc_name)
    with open(rc, "w") as f:
        f.write(rc_text(home))
    os.chmod(rc, 0o600)
    return home, rc


@test
def pop3_fetchmail_delivers_to_an_mda_and_leaves_mail_it_has_seen(lab):
    if not shutil.which("fetchmail"):
        raise Skip("fetchmail is not installed (Debian package fetchmail; make test-deps)")
    with Lab2(lab) as l2:
        l2.send("ana", l2.ana, "bob", "Dots", DOTTED)
        home, rc = client_home(lab, "fetchmail-home", "fetchmailrc", lambda home: (
            f'poll localhost protocol POP3 service {l2.retriever.pop3_port} uidl\n'
            f'  user "bob@447.edu" there with password "{l2.bob}" is "{os.environ.get("USER", "root")}" here\n'
            f'  ssl sslcertck sslcertfile "{lab.ca}" sslproto "TLS1.3+"\n'
            f'  keep mda "/bin/sh -c \'cat >> {os.path.join(home, "delivered.mbox")}\'"\n'))
        out = os.path.join(home, "delivered.mbox")

        def fetch():
            return subprocess.run(["fetchmail", "--nodetach", "--nosyslog", "-v", "-f", rc,
                                   "--idfile", os.path.join(home, "ids")], capture_output=True, text=True,
                                  timeout=60, env={**os.environ, "HOME": home})

        first = fetch()
        assert first.returncode == 0, first.stdout + first.stderr  # 0: mail delivered
        with open(out, "rb") as f:
            mbox = f.read()
        assert b"Subject: First <note>" in mbox and b"Subject: Dots" in mbox, mbox
        assert b"\n.a line starting with a dot" in mbox and b"\n..two dots" in mbox  # unstuffed
        # keep + uidl: the messages stay on the server and are not fetched again.
        second = fetch()
        assert second.returncode == 1, second.stdout + second.stderr  # 1: no new mail
        assert https_listing(l2)["total"] == 2


def run_in_terminal(cmd, env, timeout=60, done=None):
    """Runs a curses program in a pseudo-terminal to its end; returns (exit status, what it drew).
    `done()`: the program's work is seen to be over; it then has 10 s more to exit, else it is
    killed and the status is None."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if done and done():
                deadline = min(deadline, time.monotonic() + 10)
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            if done and done():
                return None, screen.decode(errors="replace")
            raise AssertionError("neomutt did not finish: " + screen.decode(errors="replace")[-2000:])
    finally:
        os.close(leader)
    return proc.returncode, screen.decode(errors="replace")


@test
def pop3_neomutt_reads_a_pops_mailbox(lab):
    mutt = shutil.which("neomutt") or shutil.which("mutt")
    if not mutt:
        raise Skip("neither neomutt nor mutt is installed (Debian package neomutt; make test-deps)")
    with Lab2(lab, {"retriever.verbose": "true"}) as l2:
        home, rc = client_home(lab, "mutt-home", "muttrc", lambda home: (
            f'set pop_user="bob@447.edu"\nset pop_pass="{l2.bob}"\n'
            f'set ssl_ca_certificates_file="{lab.ca}"\nset certificate_file="{lab.ca}"\n'
            'set ssl_verify_host=yes\nset ssl_force_tls=yes\n'
            f'set folder="{home}"\nset mbox_type=mbox\nset confirmappend=no\nset confirmcreate=no\n'
            'set quit=yes\nset move=no\nset delete=no\nset header_cache=""\nset message_cachedir=""\n'
            'set mail_check_stats=no\nset beep=no\nset wait_key=no\nset sleep_time=0\n'))
        saved = os.path.join(home, "saved.mbox")
        mailbox = f"pops://bob%40447.edu@localhost:{l2.retriever.pop3_port}/"
        push = f'push "<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"'
        env = {**os.environ, "HOME": home, "TERM": "xterm", "LANG": "C.UTF-8", "MAIL": ""}
        # Seen a few times under AddressSanitizer on a loaded machine: neomutt left its screen after
        # the server's +OK to QUIT and the server's close (its log says so) and then did not exit.
        # What is checked is the server's side: the copy, the QUIT, the session closed.
        def quit_done():
            after_quit = l2.retriever.log_text().partition("C: QUIT")[2]
            return "S: +OK" in after_quit and "event=close service=pop3" in after_quit
        status, screen = run_in_terminal([mutt, "-n", "-F", rc, "-f", mailbox, "-e", push], env, done=quit_done)
        assert status in (0, None), screen[-2000:]
        with open(saved, "rb") as f:
            copied = f.read()
        assert b"Subject: First <note>" in copied and b"Hello Bob & friends" in copied, copied
        assert https_listing(l2)["total"] == 1  # read, not removed


@test
def pop3_autoconfig_names_the_smtp_and_pop3_ports_without_login(lab):
    # A retriever told where the sender is (autoconfig.smtpPort), with the STLS port on too.
    with Lab2(lab, {"pop3.plainPort": 0}) as l2:
        l2.retriever.stop()
        from tests.e2e.harness import Server
        l2.retriever = Server(lab, "retrieverserver", {"pop3.plainPort": 0, "autoconfig.smtpPort": l2.sender.port},
                              db=l2.sender.db)
        for path in ("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40447.edu",
                     "/mail/config-v1.1.xml"):
            code, body = l2.curl(l2.url(path), user=None)
            assert code == 200, body
            root = ET.fromstring(body)
            provider = root.find("emailProvider")
            assert provider.get("id") == "447.edu" and provider.findtext("domain") == "447.edu"
            incoming = provider.findall("incomingServer")
            assert [(s.get("type"), s.findtext("hostname"), int(s.findtext("port")), s.findtext("socketType"))
                    for s in incoming] == [("pop3", "localhost", l2.retriever.pop3_port, "SSL"),
                                           ("pop3", "localhost", l2.retriever.pop3_plain_port, "STARTTLS")]
            outgoing = provider.find("outgoingServer")
            assert (outgoing.get("type"), int(outgoing.findtext("port")), outgoing.findtext("socketType")) == \
                ("smtp", l2.sender.port, "SSL")
            for server in incoming + [outgoing]:
                assert server.findtext("username") == "%EMAILADDRESS%"
                assert server.findtext("authentication") == "password-cleartext"
        # What the document names works: POP3 over TLS with the address as user name.
        p = pop3s(lab, l2)
        p.user("bob@447.edu")
        assert p.pass_(l2.bob).startswith(b"+OK")
        p.quit()


@test
def pop3_retriever_with_pop3_off_serves_https_only(lab):
    with Lab2(lab, {"pop3.port": "off"}) as l2:
        assert l2.retriever.pop3_port is None and l2.retriever.pop3_plain_port is None
        assert https_listing(l2)["total"] == 1
    from tests.e2e.harness import Server
    bad = None
    try:
        bad = Server(lab, "retrieverserver", {"pop3.port": "nine"})
        raise AssertionError("a POP3 port that is not a number was accepted")
    except AssertionError as e:
        assert "pop3.port and pop3.plainPort must be a port number or off" in str(e), e
    finally:
        if bad:
            bad.stop()


@test
def pop3_on_the_event_core_holds_idle_sessions_without_a_thread_each(lab):
    """pop3.core = events serves POP3 on the event core: 30 POP3S sessions, greeted and then
    idle, add no thread to the server (on threads each holds one); a session pipelining its login, STAT,
    RETR and QUIT gets every reply in order (the password check and the RETR run on the workers), eight
    pipelined RETRs of a 60 kB message too (a batch at a time, each once the last has left); STLS on
    the plaintext port drops what was pipelined after it; and when the server stops, every idle session
    is told -ERR [SYS/TEMP] (RFC 3206) and nothing is deleted."""
    from tests.e2e.test_hostile import Pop3Raw
    with Lab2(lab, {"pop3.core": "events", "pop3.plainPort": 0}) as l2:
        server = l2.retriever  # (its listening line's core= is the HTTPS core's: the thread count below tells POP3's)
        warm = pop3s(lab, l2)  # the loops, the workers and the store have all run
        warm.user("bob@447.edu")
        warm.pass_(l2.bob)
        warm.retr(1)
        warm.quit()

        def threads():
            return len(os.listdir(f"/proc/{server.proc.pid}/task"))

        before = threads()
        idle = [Pop3Raw(lab, server.pop3_port) for _ in range(30)]
        assert all(c.greeting.startswith("+OK") for c in idle)
        assert threads() == before, (before, threads())

        c = Pop3Raw(lab, server.pop3_port)
        c.send(f"USER bob@447.edu\r\nPASS {l2.bob}\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n")
        assert [c.line()[:3] for _ in range(4)] == ["+OK"] * 4
        assert any("Hello Bob & friends" in line for line in c.block())
        assert c.line().startswith("+OK") and c.line().startswith("+OK")
        c.close()
        # Pipelined RETRs of a 60 kB message: sent a batch (64 KiB) at a time as the client reads them.
        l2.send("ana", l2.ana, "bob", "Big", "".join(f"line {i} of the big one\n" for i in range(2500)))
        c = Pop3Raw(lab, server.pop3_port)
        c.send(f"USER bob@447.edu\r\nPASS {l2.bob}\r\n" + "RETR 2\r\n" * 8 + "QUIT\r\n")
        assert c.line().startswith("+OK") and c.line().startswith("+OK bob@447.edu has 2 messages")
        for _ in range(8):
            assert c.line().endswith(" octets") and c.block()[-1] == "line 2499 of the big one"
        assert c.line().startswith("+OK") and c.closed()
        c.close()

        plain = Pop3Raw(lab, server.pop3_plain_port, tls=False)
        plain.send("STLS\r\nNOOP\r\n")
        assert plain.line().startswith("+OK")
        plain.sock = lab.ssl_context().wrap_socket(plain.sock, server_hostname="localhost")
        assert plain.cmd("USER bob@447.edu").startswith("+OK")
        assert plain.cmd(f"PASS {l2.bob}").startswith("+OK")
        assert plain.cmd("QUIT").startswith("+OK")
        plain.close()
        assert threads() == before, (before, threads())

        server.stop()
        assert all(c.line().startswith("-ERR [SYS/TEMP]") for c in idle)
        for c in idle:
            c.close()
        log = server.log_after_stop()
        assert "event=stls-discarded-plaintext octets=6" in log, log[-3000:]
        assert "event=tls service=pop3 stls=yes" in log, log[-3000:]
        assert log.count("event=close service=pop3") == 34, log[-3000:]


@test
def pop3_refuses_past_the_limit_in_its_own_words_on_both_cores(lab):
    """On either core POP3 shares the retriever's connection limiter with HTTPS and refuses in POP3's
    words (RFC 3206 -ERR [SYS/TEMP]) with service=pop3 in the log; an idle session meets the autologout
    deadline (RFC 1939 3) and nothing is deleted."""
    from tests.e2e.test_hostile import Pop3Raw
    for core in ("threads", "events"):
        settings = {"retriever.core": core, "pop3.core": core, "retriever.maxConnections": 2, "retriever.minWaitToEvictMs": 60000,
                    "pop3.idleTimeoutSeconds": 1}
        with Lab2(lab, settings) as l2:
            held = [Pop3Raw(lab, l2.retriever.pop3_port) for _ in range(2)]
            refused = Pop3Raw(lab, l2.retriever.pop3_port)
            assert refused.greeting.startswith("-ERR [SYS/TEMP] Too many connections"), (core, refused.greeting)
            assert refused.closed()
            refused.close()
            start = time.monotonic()
            for c in held:
                assert c.line().startswith("-ERR Autologout") and c.closed(), core
                c.close()
            assert time.monotonic() - start < 10, core
            assert https_listing(l2)["total"] == 1, core
            log = l2.retriever.log_after_stop()
            assert "event=refused service=pop3 peer=" in log and "answered=-ERR" in log, (core, log[-3000:])
            assert log.count("event=autologout state=authorization") == 2, (core, log[-3000:])
