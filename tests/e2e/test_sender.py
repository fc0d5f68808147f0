"""End-to-end tests of the sender server with our client, curl, Python smtplib and openssl s_client,
plus bad input and every limit over the wire."""

import base64
import os
import signal
import smtplib
import socket
import ssl
import stat
import shutil
import subprocess
import threading

from tests.e2e.harness import Conversation, Server, messages, register, run_client, test, tls_connect


def curl_sends(lab, server, url, password, rcpt, message, *extra):
    """curl as a mail client: `message` from ana to `rcpt`, the server checked against the lab CA. The send
    must succeed; returns the subjects in `rcpt`'s mailbox after it."""
    body = lab.path("curl-message.txt")
    with open(body, "w") as f:
        f.write(message)
    out = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "--url", url, "--user", f"ana@447.edu:{password}",
                          "--mail-from", "ana@447.edu", "--mail-rcpt", rcpt, "--upload-file", body, *extra],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [s for s, _ in messages(server.db, rcpt)]


def ana_writes_to(lab, port, password, rcpt):
    """A connection on which ana has logged in (AUTH PLAIN) and named `rcpt`: the next command is DATA."""
    c = Conversation(lab, port)
    c.cmd("EHLO x")
    c.cmd("AUTH PLAIN " + plain("ana@447.edu", password))
    c.cmd("MAIL FROM:<ana@447.edu>")
    c.cmd(f"RCPT TO:<{rcpt}>")
    return c


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@test
def our_client_registers_two_users_and_sends(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        bob = register(lab, server.port, "bob@447.edu")
        assert len(ana) == 8 and ana.endswith("447") and ana.isdigit()
        body = lab.path("body.txt")
        with open(body, "w") as f:
            f.write("Hello Bob,\n.see the leading dot\nAna\n")
        out = run_client(lab, server.port, ["--user", "ana", "--password", ana, "--to", "bob,ana",
                                            "--subject", "Lab meeting", "--body-file", body])
        assert out.returncode == 0, out.stderr
        assert "250 2.0.0 Ok: queued as" in out.stdout
        stored = messages(server.db, "bob@447.edu")
        assert len(stored) == 1 and stored[0][0] == "Lab meeting"
        raw = stored[0][1].decode()
        assert raw.startswith("Received: from ")
        assert "\r\n.see the leading dot\r\n" in raw
        assert "Message-ID: <" in raw and "\r\nDate: " in raw
        assert len(messages(server.db, "ana@447.edu")) == 1
        # The password works for a second login, and a wrong one is refused with exit code 1.
        assert run_client(lab, server.port, ["--user", "bob", "--password", bob]).returncode == 0
        wrong = run_client(lab, server.port, ["--user", "bob", "--password", "00000447"])
        assert wrong.returncode == 1 and "535" in wrong.stderr


@test
def curl_sends_over_smtps(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        message = "From: ana@447.edu\r\nTo: bob@447.edu\r\nSubject: via curl\r\n\r\nhello from curl\r\n"
        assert curl_sends(lab, server, f"smtps://localhost:{server.port}", ana, "bob@447.edu", message) == ["via curl"]


@test
def python_smtplib_login_and_send(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        with smtplib.SMTP_SSL("localhost", server.port, context=lab.ssl_context(), timeout=30) as smtp:
            smtp.ehlo("python")
            assert "auth" in smtp.esmtp_features and "pipelining" in smtp.esmtp_features
            smtp.login("ana@447.edu", ana)
            refused = smtp.sendmail("ana@447.edu", ["bob@447.edu"], "Subject: smtplib\r\n\r\nhi\r\n")
            assert refused == {}
        assert [s for s, _ in messages(server.db, "bob@447.edu")] == ["smtplib"]
        # AUTH LOGIN too, the way smtplib does it (no initial response).
        with smtplib.SMTP_SSL("localhost", server.port, context=lab.ssl_context(), timeout=30) as smtp:
            smtp.user, smtp.password = "ana@447.edu", ana
            smtp.ehlo("python")
            code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
            assert code == 235


@test
def python_registration_with_empty_password(lab):
    with Server(lab, "senderserver") as server:
        with smtplib.SMTP_SSL("localhost", server.port, context=lab.ssl_context(), timeout=30) as smtp:
            smtp.ehlo("python")
            code, text = smtp.docmd("AUTH", "PLAIN " + plain("dana@447.edu", ""))
            assert code == 235, text
            assert b"password: " in text
            assert smtp.docmd("MAIL", "FROM:<dana@447.edu>")[0] == 250


@test
def openssl_s_client_speaks_smtp(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        script = (f"EHLO s-client\nAUTH PLAIN {plain('ana@447.edu', ana)}\nMAIL FROM:<ana@447.edu>\n"
                  "RCPT TO:<ana@447.edu>\nDATA\nSubject: s_client\n\ntyped by hand\n.\nQUIT\n")
        command = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
                   "-CAfile", ca_path(lab), "-verify_return_error", "-quiet", "-verify_hostname", "localhost"]
        # As the README teaches: -crlf, so that Enter sends CRLF and "." ends DATA.
        out = subprocess.run(command + ["-crlf"], input=script, capture_output=True, text=True, timeout=60)
        assert "235 2.7.0" in out.stdout, out.stdout + out.stderr
        assert "250 2.0.0 Ok: queued as" in out.stdout
        assert "221 2.0.0" in out.stdout
        assert [s for s, _ in messages(server.db, "ana@447.edu")] == ["s_client"]
        # Without -crlf the commands still work, and the bare-LF "." is refused with the fix named.
        out = subprocess.run(command, input=script.replace("s_client", "no crlf"), capture_output=True, text=True,
                             timeout=60)
        assert "235 2.7.0" in out.stdout, out.stdout + out.stderr
        assert "421 4.5.0" in out.stdout and "-crlf" in out.stdout, out.stdout
        assert [s for s, _ in messages(server.db, "ana@447.edu")] == ["s_client"]


def ca_path(lab):
    return lab.ca


@test
def tls12_is_refused(lab):
    with Server(lab, "senderserver") as server:
        ctx = ssl.create_default_context(cafile=lab.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            ctx.wrap_socket(raw, server_hostname="localhost")
            raise AssertionError("TLS 1.2 handshake succeeded")
        except ssl.SSLError:
            pass
        out = subprocess.run(["openssl", "s_client", "-tls1_2", "-connect", f"127.0.0.1:{server.port}"],
                             input="", capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        # TLS 1.3 on the same server works, and says which version it negotiated.
        s = tls_connect(lab, server.port)
        assert s.version() == "TLSv1.3"
        s.close()


@test
def our_client_rejects_a_wrong_host_certificate(lab):
    with Server(lab, "senderserver") as server:
        out = run_client(lab, server.port, ["--servername", "wrong.example", "--user", "ana"])
        assert out.returncode == 4, out.stdout + out.stderr  # 4: TLS (certificate)
        # And a certificate from an unknown CA.
        other = lab.path("other-certs")
        subprocess.run([lab.exe("maillab-certs"), other], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([lab.exe("senderclient"), "--port", str(server.port), "--ca", other + "/ca.pem",
                              "--user", "ana"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 4
        assert "password:" not in out.stdout


@test
def an_expired_certificate_is_explained_as_expired_by_both_clients(lab):
    # The lab's CA, and a server certificate it issued that expired yesterday (maillab-certs --expired,
    # a folder of its own: never the lab's certs/).
    expired = lab.path("expired-certs")
    os.makedirs(expired)
    for name in ("ca.pem", "ca.key"):
        shutil.copy(os.path.join(lab.certs, name), expired)
    made = subprocess.run([lab.exe("maillab-certs"), "--expired", expired], capture_output=True, text=True)
    assert made.returncode == 0 and "expired yesterday" in made.stdout, made.stdout + made.stderr
    refused = subprocess.run([lab.exe("maillab-certs"), "--expired", "certs"], capture_output=True, text=True,
                             cwd=lab.dir)
    assert refused.returncode == 2 and "not certs/" in refused.stderr
    with Server(lab, "senderserver", certs=expired) as sender, \
            Server(lab, "retrieverserver", certs=expired, db=sender.db) as retriever:
        for program, port in (("senderclient", sender.port), ("retrieverclient", retriever.port)):
            out = subprocess.run([lab.exe(program), "--port", str(port), "--ca", lab.ca, "--user", "ana",
                                  "--password", "12345447"], capture_output=True, text=True, timeout=30,
                                 stdin=subprocess.DEVNULL)
            assert out.returncode == 4, (program, out.stderr)
            assert "has expired" in out.stderr and "not signed" not in out.stderr, (program, out.stderr)


@test
def concurrent_users_from_many_connections(lab):
    with Server(lab, "senderserver") as server:
        users = {name: register(lab, server.port, name) for name in ("ana", "bob")}
        errors = []

        def worker(sender, recipient, count):
            try:
                for i in range(count):
                    with smtplib.SMTP_SSL("localhost", server.port, context=lab.ssl_context(), timeout=60) as s:
                        s.login(f"{sender}@447.edu", users[sender])
                        s.sendmail(f"{sender}@447.edu", [f"{recipient}@447.edu"],
                                   f"Subject: {sender}-{i}\r\n\r\nmessage {i}\r\n")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(s, r, 10)) for s, r in
                   [("ana", "bob"), ("bob", "ana")] * 6]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(messages(server.db, "bob@447.edu")) == 60
        assert len(messages(server.db, "ana@447.edu")) == 60
        # Registration races: many connections registering the same new address, one wins.
        results = []

        def reg():
            out = run_client(lab, server.port, ["--user", "carol"])
            results.append(out.returncode)

        threads = [threading.Thread(target=reg) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results).count(0) == 1, results


@test
def pipelined_commands_are_answered_in_order(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        c = Conversation(lab, server.port)
        c.send(f"EHLO p\r\nAUTH PLAIN {plain('ana@447.edu', ana)}\r\nMAIL FROM:<ana@447.edu>\r\n"
               "RCPT TO:<ana@447.edu>\r\nRCPT TO:<nobody@447.edu>\r\nDATA\r\n")
        assert c.reply()[-1] == "250 HELP"
        assert c.reply()[0].startswith("235 ")
        assert c.reply()[0].startswith("250 2.1.0")
        assert c.reply()[0].startswith("250 2.1.5")
        assert c.reply()[0].startswith("550 5.1.1")
        assert c.reply()[0].startswith("354 ")
        c.send("Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        assert c.reply()[0].startswith("250 2.0.0 Ok: queued as")
        assert c.reply()[0].startswith("221 ")
        assert c.closed()


@test
def garbage_and_bad_commands_get_errors_not_crashes(lab):
    with Server(lab, "senderserver") as server:
        c = Conversation(lab, server.port)
        assert c.cmd("\x00\x01\x02\xff garbage").startswith("500 5.5.2")
        c.send(b"\xc3\xa9\xff\xfe\r\n")
        assert c.reply()[0].startswith("500 5.5.2")
        assert c.cmd("EHLO x").startswith("250 ")
        assert c.cmd("MAIL FROM:<ana@447.edu>").startswith("530 5.7.0")
        assert c.cmd("X" * 998).startswith("500 5.5.2")
        c.send("Y" * 5000 + "\r\n")
        assert c.reply()[0].startswith("500 5.5.6")
        assert c.cmd("NOOP") == "250 2.0.0 Ok"
        c.close()
        # Not even TLS: plain text to the TLS port gets no SMTP, and the server lives on.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        raw.sendall(b"EHLO plaintext\r\n")
        try:
            raw.recv(100)
        except OSError:
            pass
        raw.close()
        c = Conversation(lab, server.port)
        assert c.banner[0].startswith("220 ")
        c.close()


@test
def disconnect_mid_data_stores_nothing(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        c = ana_writes_to(lab, server.port, ana, "ana@447.edu")
        assert c.cmd("DATA").startswith("354")
        c.send("Subject: half\r\n\r\nonly half of the mess")
        c.sock.close()
        # A message sent after it on another connection is stored; the half one never is.
        c2 = ana_writes_to(lab, server.port, ana, "ana@447.edu")
        c2.cmd("DATA")
        assert c2.cmd("Subject: whole\r\n\r\nall of it\r\n.").startswith("250 ")
        c2.close()
        assert [s for s, _ in messages(server.db, "ana@447.edu")] == ["whole"]
        assert "state=data stored=no" in server.log_text(), server.log_text()


@test
def silent_clients_time_out(lab):
    settings = {"sender.timeout.handshake": 1, "sender.timeout.command": 1}
    with Server(lab, "senderserver", settings) as server:
        # A client that never starts TLS.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        assert raw.recv(100) == b""  # closed by the server, no hang
        raw.close()
        # A client that completes TLS, then says nothing.
        c = Conversation(lab, server.port)
        assert c.reply()[0].startswith("421 4.4.2")
        assert c.closed()
        log = server.log_text()
        assert "reason=handshake-timeout" in log and "event=timeout" in log


@test
def limits_are_configurable_and_enforced(lab):
    settings = {"smtp.maxMessageSize": 2000, "smtp.maxRecipients": 2, "smtp.maxLineLength": 100,
                "smtp.maxAuthFailures": 2}
    with Server(lab, "senderserver", settings) as server:
        ana = register(lab, server.port, "ana")
        for name in ("bob", "carol", "dave"):
            register(lab, server.port, name)
        c = Conversation(lab, server.port)
        c.send("EHLO x\r\n")
        assert "250-SIZE 2000" in c.reply()
        c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana))
        assert c.cmd("MAIL FROM:<ana@447.edu> SIZE=2001").startswith("552 5.3.4")
        c.cmd("MAIL FROM:<ana@447.edu>")
        assert c.cmd("RCPT TO:<bob@447.edu>").startswith("250")
        assert c.cmd("RCPT TO:<carol@447.edu>").startswith("250")
        assert c.cmd("RCPT TO:<dave@447.edu>").startswith("452 4.5.3")
        assert c.cmd("DATA").startswith("354")
        c.send(("x" * 50 + "\r\n") * 50)
        assert c.cmd(".").startswith("552 5.3.4")
        assert c.cmd("NOOP" + " " * 200).startswith("500 5.5.6")
        c.close()
        assert messages(server.db, "bob@447.edu") == []
        # AUTH failures: the connection is closed after maxAuthFailures.
        c = Conversation(lab, server.port)
        c.cmd("EHLO x")
        assert c.cmd("AUTH PLAIN " + plain("ana@447.edu", "00000447")).startswith("535 5.7.8")
        assert c.cmd("AUTH PLAIN " + plain("ana@447.edu", "00001447")).startswith("421 4.7.0")
        assert c.closed()


def auth_from(lab, port, user, password, source):
    c = Conversation(lab, port, source=source)
    c.cmd("EHLO x")
    reply = c.cmd("AUTH PLAIN " + plain(user, password))
    c.close()
    return reply


@test
def the_guess_budget_holds_across_connections_and_spares_the_owner(lab):
    settings = {"auth.guessBurst": 3, "auth.guessRefillSeconds": 3600, "auth.cacheTtlSeconds": 0}
    with Server(lab, "senderserver", settings) as server:
        ana = register(lab, server.port, "ana")
        assert auth_from(lab, server.port, "ana@447.edu", ana, "127.0.0.1").startswith("235")  # the owner's address
        replies = [auth_from(lab, server.port, "ana@447.edu", f"9999{i}447", f"127.0.0.{10 + i}") for i in range(5)]
        assert [r[:3] for r in replies] == ["535", "535", "535", "454", "454"], replies
        assert "no password checked" in replies[-1]
        # The right password from a stranger's address is not even checked...
        assert auth_from(lab, server.port, "ana@447.edu", ana, "127.0.0.99").startswith("454 4.7.0")
        # ...but the owner, from where she logged in before, gets in.
        assert auth_from(lab, server.port, "ana@447.edu", ana, "127.0.0.1").startswith("235")


@test
def too_many_connections_get_421(lab):
    with Server(lab, "senderserver", {"sender.maxConnections": 2}) as server:
        held = [Conversation(lab, server.port) for _ in range(2)]
        third = Conversation(lab, server.port)
        assert third.banner[0].startswith("421 4.3.2"), third.banner
        for c in held:
            c.cmd("QUIT")
            c.close()


@test
def the_event_core_holds_idle_sessions_without_a_thread_each(lab):
    """sender.core = events: 50 TLS sessions, greeted and then idle, add no thread to the server (on the
    thread core each holds one); a session pipelining AUTH, the envelope, and then its message with QUIT
    gets every reply in order (the password check and the delivery run on the workers, the bytes after
    them wait); and when the server stops, every idle session is told 421 (RFC 5321 3.8)."""
    with Server(lab, "senderserver", {"sender.core": "events"}) as server:
        assert "core=events" in server.log_text()
        ana = register(lab, server.port, "ana")  # the loops, the workers and the store have all run
        register(lab, server.port, "bob")
        # And the group commit's committer, a thread of the store's started by its first message.
        warm = Conversation(lab, server.port)
        for line in ("EHLO x", f"AUTH PLAIN {plain('ana@447.edu', ana)}", "MAIL FROM:<ana@447.edu>",
                     "RCPT TO:<bob@447.edu>", "DATA"):
            assert warm.cmd(line)[:1] in "23", line
        assert warm.cmd("Subject: first\r\n\r\nhello\r\n.").startswith("250")
        warm.close()

        def threads():
            return len(os.listdir(f"/proc/{server.proc.pid}/task"))

        before = threads()
        idle = [Conversation(lab, server.port) for _ in range(50)]
        assert all(c.banner[0].startswith("220") for c in idle)
        assert threads() == before, (before, threads())

        c = Conversation(lab, server.port)
        c.send(f"EHLO x\r\nAUTH PLAIN {plain('ana@447.edu', ana)}\r\nMAIL FROM:<ana@447.edu>\r\n"
               "RCPT TO:<bob@447.edu>\r\nDATA\r\n")
        replies = [c.reply()[-1] for _ in range(5)]
        assert [r[:3] for r in replies] == ["250", "235", "250", "250", "354"], replies
        c.send("Subject: pipelined\r\n\r\nhello\r\n.\r\nNOOP\r\nQUIT\r\n")
        replies = [c.reply()[-1] for _ in range(3)]
        assert [r[:3] for r in replies] == ["250", "250", "221"], replies
        assert [s for s, _ in messages(server.db, "bob@447.edu")] == ["first", "pipelined"]
        assert threads() == before, (before, threads())
        server.stop()
        assert all(c.reply()[-1].startswith("421 4.3.2") for c in idle)
        for c in idle:
            c.close()
        log = server.log_after_stop()
        assert log.count("event=shutdown state=fresh") == 50, log[-3000:]


@test
def a_proxy_header_names_the_client_on_both_cores(lab):
    """proxy.trustedAddresses: a PROXY v1 header from the trusted balancer names the client in the log
    lines, on either core; a trusted peer that sends no header in time is closed and logged."""
    for core in ("threads", "events"):
        settings = {"sender.core": core, "proxy.trustedAddresses": "127.0.0.1", "proxy.headerTimeoutMs": 500}
        with Server(lab, "senderserver", settings) as server:
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            raw.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 465\r\n")
            sock = lab.ssl_context().wrap_socket(raw, server_hostname="localhost")
            assert sock.recv(4096).startswith(b"220 "), core
            sock.sendall(b"QUIT\r\n")
            assert sock.recv(4096).startswith(b"221 "), core
            sock.close()
            silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                assert silent.recv(100) == b"", core  # closed once headerTimeoutMs has passed
            except ConnectionResetError:
                pass
            silent.close()
            log = server.log_after_stop()
            assert "event=connect peer=192.0.2.7:5555 via=127.0.0.1:" in log, (core, log)
            assert "event=proxy-refused peer=127.0.0.1:" in log, (core, log)


@test
def a_client_that_never_reads_its_replies_is_not_read_either(lab):
    """A client pipelining NOOPs without reading a reply cannot make the server queue replies without
    end: once they back up, the server stops reading from it (the thread core's send blocks; the event
    core pauses reading past 64 KiB queued), so it sits idle while the client's send stalls, instead of
    reading all of it. Others are served meanwhile."""
    import time

    def cpu_ticks(pid):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    for core in ("threads", "events"):
        with Server(lab, "senderserver", {"sender.core": core}) as server:
            raw = socket.socket()
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            raw.connect(("127.0.0.1", server.port))
            sock = lab.ssl_context().wrap_socket(raw, server_hostname="localhost")
            flood = b"NOOP\r\n" * (12 * 1024 * 1024 // 6)  # ~30 MB of replies if all were read

            def send():
                try:
                    sock.sendall(flood)
                except OSError:
                    pass
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            deadline, idle = time.monotonic() + 60, False
            while time.monotonic() < deadline and sender.is_alive() and not idle:
                before = cpu_ticks(server.proc.pid)
                time.sleep(1)
                idle = sender.is_alive() and cpu_ticks(server.proc.pid) - before <= 2
            assert idle, f"{core}: the server read every NOOP and queued the replies"
            other = Conversation(lab, server.port)
            assert other.cmd("NOOP").startswith("250"), core
            other.close()
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: ends the blocked send
            sender.join(10)
            sock.close()


@test
def a_250_survives_kill_9(lab):
    server = Server(lab, "senderserver")
    ana = register(lab, server.port, "ana")
    c = ana_writes_to(lab, server.port, ana, "ana@447.edu")
    c.cmd("DATA")
    assert c.cmd("Subject: durable\r\n\r\nkeep me\r\n.").startswith("250 2.0.0")
    server.stop(signal.SIGKILL)
    assert [s for s, _ in messages(server.db, "ana@447.edu")] == ["durable"]


@test
def keylog_written_only_when_asked_and_private(lab):
    keylog = lab.path("server-keys.log")
    client_keylog = lab.path("client-keys.log")
    env = dict(os.environ)
    env.pop("SSLKEYLOGFILE", None)
    with Server(lab, "senderserver", args=[f"--keylog={keylog}"], env=env) as server:
        register(lab, server.port, "ana")
        out = run_client(lab, server.port, ["--user", "bob", "--keylog", client_keylog])
        assert out.returncode == 0
    for path in (keylog, client_keylog):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, oct(mode)
        text = open(path).read()
        assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in text and "SERVER_TRAFFIC_SECRET_0" in text
    # Without --keylog or SSLKEYLOGFILE nothing is written anywhere.
    with Server(lab, "senderserver", env=env) as server:
        register(lab, server.port, "carol")
        assert "event=keylog" not in server.log_text()


@test
def verbose_log_shows_the_conversation_but_no_secrets(lab):
    with Server(lab, "senderserver", args=["--verbose"]) as server:
        ana = register(lab, server.port, "ana")
        out = run_client(lab, server.port, ["--user", "ana", "--password", ana, "--to", "ana",
                                            "--subject", "v", "--verbose"])
        assert out.returncode == 0
        assert "TLSv1.3" in out.stderr and "C: MAIL FROM:<ana@447.edu>" in out.stderr
        log = server.log_text()
        assert "C: EHLO" in log and "S: 250 2.0.0 Ok: queued as" in log
        assert ana not in log
        assert plain("ana@447.edu", ana) not in log
        assert ana not in out.stderr


@test
def interactive_client_from_a_pipe(lab):
    with Server(lab, "senderserver") as server:
        register(lab, server.port, "bob")
        steps = "\n".join(["helo", "lab-pc", "auth", "ana", "", "mail from", "", "rcpt to", "bob",
                           "data", "Piped subject", "line one", ".", "quit"]) + "\n"
        out = run_client(lab, server.port, [], input=steps)
        assert out.returncode == 0, out.stderr
        assert "S: 235 2.7.0 Authentication successful; registered ana@447.edu" in out.stdout
        assert "S: 250 2.0.0 Ok: queued as" in out.stdout
        assert "S: 221 2.0.0" in out.stdout
        assert [s for s, _ in messages(server.db, "bob@447.edu")] == ["Piped subject"]
        # End of input (Ctrl-D) in the middle quits cleanly.
        out = run_client(lab, server.port, [], input="helo\n")
        assert out.returncode == 0 and "Bye." in out.stdout


@test
def starttls_mode_upgrades_and_forgets_the_plaintext_part(lab):
    with Server(lab, "senderserver", args=["--tls=starttls"]) as server:
        out = run_client(lab, server.port, ["--tls", "starttls", "--user", "ana", "--verbose"])
        assert out.returncode == 0, out.stderr
        ana = out.stdout.split("password: ")[1].strip()
        assert "S: 250-STARTTLS" in out.stderr and "S: 220 2.0.0 Ready to start TLS" in out.stderr
        # Raw: no AUTH offered or accepted before TLS; EHLO needed again after it.
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        f = raw.makefile("rb")
        assert f.readline().startswith(b"220 ")
        raw.sendall(b"EHLO x\r\n")
        ehlo = [f.readline()]
        while ehlo[-1].startswith(b"250-"):
            ehlo.append(f.readline())
        assert b"250-STARTTLS\r\n" in ehlo and not any(b"AUTH" in line for line in ehlo)
        raw.sendall(b"AUTH PLAIN " + plain("ana@447.edu", ana).encode() + b"\r\n")
        assert f.readline().startswith(b"530 5.7.0 Must issue a STARTTLS command first")
        # A command pipelined behind STARTTLS arrived in clear: it must not run inside TLS.
        raw.sendall(b"STARTTLS\r\nNOOP\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        tls = lab.ssl_context().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"MAIL FROM:<ana@447.edu>\r\n")
        first = tls.recv(1000)
        assert first.startswith(b"503 5.5.1 Bad sequence of commands: need EHLO"), first
        tls.close()
        assert "event=starttls-discarded-plaintext" in server.log_text()
        assert curl_sends(lab, server, f"smtp://localhost:{server.port}", ana, "ana@447.edu",
                          "Subject: via STARTTLS\r\n\r\nhi\r\n", "--ssl-reqd") == ["via STARTTLS"]


@test
def a_starttls_handshake_that_never_comes_ends_at_the_handshake_deadline(lab):
    """--tls=starttls: after the 220 to STARTTLS (RFC 3207 4) a client that starts no handshake is
    closed once sender.timeout.handshake has passed, and logged handshake-timeout, on either core; the
    plain SMTP pipelined after STARTTLS is never answered (RFC 3207 5)."""
    import time
    for core in ("threads", "events"):
        with Server(lab, "senderserver", {"sender.core": core, "sender.timeout.handshake": 1},
                    args=["--tls=starttls"]) as server:
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220 "), core
            raw.sendall(b"EHLO x\r\nSTARTTLS\r\nNOOP\r\n")
            lines = [f.readline()]
            while not lines[-1].startswith(b"220 "):
                lines.append(f.readline())
            started = time.monotonic()
            assert f.read() == b"", core  # no reply to NOOP: the TLS handshake's turn, then the close
            assert 0.5 < time.monotonic() - started < 5, core
            raw.close()
            assert "event=disconnect peer=127.0.0.1:" in server.log_after_stop() and \
                "reason=handshake-timeout" in server.log_text(), core


@test
def plaintext_mode_refuses_auth_unless_allowed_and_stays_on_loopback(lab):
    with Server(lab, "senderserver") as tls_server:
        ana = register(lab, tls_server.port, "ana")
        db = tls_server.db
    with Server(lab, "senderserver", args=["--tls=off"], db=db) as server:
        out = run_client(lab, server.port, ["--tls", "off", "--user", "ana", "--password", ana])
        assert out.returncode == 1 and "538 5.7.11" in out.stderr
        assert "PLAINTEXT MODE" in server.log_text()
        listening = [line for line in server.log_text().splitlines() if "event=listening" in line][0]
        assert " tls=off " in listening and "tls-version" not in listening, listening  # no TLS to name
    with Server(lab, "senderserver", args=["--tls=off", "--allow-plaintext-auth"], db=db) as server:
        out = run_client(lab, server.port, ["--tls", "off", "--user", "ana", "--password", ana, "--to", "ana",
                                            "--subject", "in clear"])
        assert out.returncode == 0, out.stderr
        raw = messages(db, "ana@447.edu")[0][1].decode()
        assert "with ESMTPA id" in raw  # no S: no TLS (RFC 3848)
    refused = subprocess.run([lab.exe("senderserver"), "--port=0", "--bind=0.0.0.0", "--tls=off", f"--db={db}",
                              f"--certs={lab.certs}"], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "loopback only" in refused.stderr


@test
def no_smtp_smuggling_through_the_real_server(lab):
    """Every end-of-data variant of CVE-2023-51764/51765, bare CR ones too: at most the first
    message's fate is decided, the smuggled transaction never runs, and the server serves on."""
    smuggled = ("MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nDATA\r\nSubject: smuggled\r\n\r\n"
                "evil\r\n.\r\nQUIT\r\n")
    variants = ["\n.\n", "\n.\r\n", "\r\n.\n", "\n\n.\n\n", "\r.\r", "\r.\r\n", "\r\n.\r", "\r\n.\r\r\n"]
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        for variant in variants:
            c = ana_writes_to(lab, server.port, ana, "bob@447.edu")
            assert c.cmd("DATA").startswith("354")
            c.send("Subject: first\r\n\r\nhello" + variant + smuggled)
            replies = []
            try:
                while True:
                    replies.append(c.reply()[-1])
            except (EOFError, ssl.SSLError, OSError):
                pass
            c.close()
            queued = [r for r in replies if r.startswith("250 2.0.0 Ok: queued")]
            assert not queued, (repr(variant), replies)
            assert any(r.startswith("421 4.5.0") or r.startswith("550 5.6.0") for r in replies), (repr(variant), replies)
            assert messages(server.db, "bob@447.edu") == [], repr(variant)
        # and an honest client is still served
        assert run_client(lab, server.port, ["--user", "ana", "--password", ana, "--to", "bob",
                                             "--subject", "honest"]).returncode == 0
        assert [s for s, _ in messages(server.db, "bob@447.edu")] == ["honest"]


@test
def logs_escape_control_characters(lab):
    with Server(lab, "senderserver", args=["--verbose"]) as server:
        c = Conversation(lab, server.port)
        c.cmd("EHLO x")
        c.send(b"NOOP a\x00b\rc\x1b[31m\r\n")
        c.reply()
        c.cmd("QUIT")
        c.close()
    text = open(server.log_path, "rb").read()
    assert b"\x00" not in text and b"\x1b" not in text and b"b\rc" not in text, text[-400:]
    assert b"NOOP a\\x00b\\rc\\x1B[31m" in text, text[-600:]


@test
def postmaster_exists_and_nobody_can_claim_it(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        # RFC 2142 role addresses cannot be self-registered...
        for role in ("postmaster", "abuse", "admin", "root", "security", "noreply"):
            c = Conversation(lab, server.port)
            c.cmd("EHLO x")
            assert c.cmd("AUTH PLAIN " + plain(f"{role}@447.edu", "")).startswith(f"535 5.7.8 {role} is a role address"), role
            c.close()
        # ...and postmaster takes mail, with or without the domain (RFC 5321 4.5.1).
        c = Conversation(lab, server.port)
        c.cmd("EHLO x")
        c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana))
        c.cmd("MAIL FROM:<ana@447.edu>")
        assert c.cmd("RCPT TO:<Postmaster>").startswith("250 2.1.5"), "bare Postmaster"
        assert c.cmd("RCPT TO:<postmaster@447.edu>").startswith("250 2.1.5")
        c.cmd("DATA")
        assert c.cmd("Subject: help\r\n\r\nplease\r\n.").startswith("250 ")
        c.close()
        assert [s for s, _ in messages(server.db, "postmaster@447.edu")] == ["help"]


@test
def a_deleted_account_stops_working_at_once_on_both_servers(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        carol = register(lab, sender.port, "carol")
        ok = run_client(lab, retriever.port, ["--user", "carol", "--password", carol], program="retrieverclient")
        assert ok.returncode == 0, ok.stderr  # now cached in both servers
        deleted = subprocess.run([lab.exe("maillab-admin"), "--db", sender.db, "delete-account", "carol"],
                                 capture_output=True, text=True)
        assert deleted.returncode == 0 and "carol@447.edu deleted" in deleted.stdout, deleted.stderr
        out = run_client(lab, sender.port, ["--user", "carol", "--password", carol, "--to", "carol", "--subject", "x"])
        assert out.returncode == 1 and "535" in out.stderr, out.stderr
        out = run_client(lab, retriever.port, ["--user", "carol", "--password", carol], program="retrieverclient")
        assert out.returncode == 1 and "401" in out.stderr, out.stderr
        # someone else registers the address: the old password opens nothing
        new = register(lab, sender.port, "carol")
        out = run_client(lab, retriever.port, ["--user", "carol", "--password", carol], program="retrieverclient")
        assert out.returncode == 1, out.stdout
        out = run_client(lab, retriever.port, ["--user", "carol", "--password", new], program="retrieverclient")
        assert out.returncode == 0, out.stderr


@test
def the_instructor_resets_a_password_and_both_servers_see_it_at_once(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        old = register(lab, sender.port, "ana")
        assert run_client(lab, retriever.port, ["--user", "ana", "--password", old],
                          program="retrieverclient").returncode == 0  # cached in the retriever now
        out = subprocess.run([lab.exe("maillab-admin"), "--db", sender.db, "set-password", "ana"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        new = out.stdout.split("password: ")[1].split()[0]
        assert len(new) == 8 and new.endswith("447") and new != old
        for program, port in (("senderclient", sender.port), ("retrieverclient", retriever.port)):
            assert run_client(lab, port, ["--user", "ana", "--password", old, "--to", "ana"] if program == "senderclient"
                              else ["--user", "ana", "--password", old], program=program).returncode == 1
            assert run_client(lab, port, ["--user", "ana", "--password", new], program=program).returncode == 0
        # postmaster gets its first password the same way, and can read its mail
        out = subprocess.run([lab.exe("maillab-admin"), "--db", sender.db, "set-password", "postmaster"],
                             capture_output=True, text=True, timeout=60)
        pm = out.stdout.split("password: ")[1].split()[0]
        assert run_client(lab, retriever.port, ["--user", "postmaster", "--password", pm],
                          program="retrieverclient").returncode == 0
        out = subprocess.run([lab.exe("maillab-admin"), "--db", sender.db, "set-password", "nobody"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "no account nobody@447.edu" in out.stderr


def tls_sessions(lab, db):
    import json
    done = subprocess.run([lab.exe("maillab-admin"), "--db", db, "tls-sessions", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@test
def provenance_records_authenticated_sessions_only_by_both_randoms(lab):
    settings = {"store.provenance": "true"}
    with Server(lab, "senderserver", settings) as sender, \
            Server(lab, "retrieverserver", settings, db=sender.db) as retriever:
        ana = register(lab, sender.port, "ana")
        before = tls_sessions(lab, sender.db)
        assert [(r["service"], r["account"]) for r in before] == [("smtp", "ana@447.edu")], before
        # Handshakes that never log in are not written at all (a flood of them costs no fsync).
        for port in (sender.port, retriever.port) * 20:
            tls_connect(lab, port).close()
        assert len(tls_sessions(lab, sender.db)) == 1
        ok = run_client(lab, retriever.port, ["--user", "ana", "--password", ana], program="retrieverclient")
        assert ok.returncode == 0, ok.stderr
        after = tls_sessions(lab, sender.db)
        assert sorted(r["service"] for r in after) == ["http", "smtp"], after
        for r in after:
            assert len(r["client_random"]) == 64 and len(r["server_random"]) == 64, r
            assert r["client_random"] != r["server_random"]
            assert r["peer"].startswith(("127.0.0.1:", "[::1]:", "::1")), r
