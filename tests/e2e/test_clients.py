"""End-to-end tests of what the two clients say when things go wrong, and of the servers' listening
addresses: every failure is one line naming the cause and the fix, with the documented exit code
(0 ok, 1 refused, 2 usage, 3 cannot connect, 4 TLS, 5 wrong service or server gone), and never an
abort. Also: loopback on both stacks, one server per port, 421 when the server stops."""

import os
import select
import socket
import subprocess
import time

from tests.e2e.harness import Server, register, run_client, test
from captures.labprocess import has_ipv6_loopback

EXIT_CONNECT, EXIT_TLS, EXIT_PROTOCOL = 3, 4, 5


def one_clear_line(out, code, *needles):
    """The client failed with `code`, said so in one 'error:' line holding every needle, and did
    not abort (no 'terminate called', no signal)."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert "terminate called" not in out.stderr and "Aborted" not in out.stderr, out.stderr


def read_until(proc, text, timeout):
    """What the process printed until `text` appeared (or `timeout` s passed). Reads the pipe's bytes
    directly: select() cannot see lines that a text stream's readline() has already buffered."""
    deadline = time.monotonic() + timeout
    seen = b""
    fd = proc.stdout.fileno()
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        seen += chunk
    return seen.decode(errors="replace")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@test
def servers_listen_on_both_loopback_stacks_and_clients_try_each_address(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        for port in (sender.port, retriever.port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            if has_ipv6_loopback():
                socket.create_connection(("::1", port), timeout=5).close()
        hosts = ["127.0.0.1", "localhost"] + (["::1"] if has_ipv6_loopback() else [])
        for i, host in enumerate(hosts):
            out = run_client(lab, sender.port, ["--host", host, "--servername", "localhost", "--user", f"dual{i}"])
            assert out.returncode == 0, (host, out.stderr)
            password = out.stdout.split("password: ")[1].split()[0]
            out = run_client(lab, retriever.port, ["--host", host, "--servername", "localhost",
                                                   "--user", f"dual{i}", "--password", password],
                             program="retrieverclient")
            assert out.returncode == 0 and "Mailbox dual" in out.stdout, (host, out.stderr)
        assert "[::1]" in sender.log_text() or not has_ipv6_loopback()


@test
def a_second_server_on_a_port_in_use_fails_clearly(lab):
    with Server(lab, "senderserver") as first:
        for program in ("senderserver", "retrieverserver"):
            out = subprocess.run([lab.exe(program), f"--port={first.port}", f"--db={lab.path('x.db')}",
                                  f"--certs={lab.certs}"], capture_output=True, text=True, timeout=30)
            assert out.returncode != 0 and "ready port=" not in out.stdout, (program, out.stdout)
            assert "in use" in out.stderr, out.stderr
        # the first server still answers every connection
        for _ in range(5):
            assert run_client(lab, first.port, ["--user", "stillme"]).returncode in (0, 1)


@test
def refused_connection_names_the_server_to_start(lab):
    port = free_port()
    for program, target in (("senderclient", "make senderserver"), ("retrieverclient", "make retrieverserver")):
        out = run_client(lab, port, ["--user", "ana", "--password", "1"], program=program)
        one_clear_line(out, EXIT_CONNECT, "nothing is listening", f"{target} PORT={port}")


@test
def each_client_on_the_other_services_port_says_so_at_once(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        start = time.monotonic()
        out = run_client(lab, retriever.port, ["--user", "ana"])
        one_clear_line(out, EXIT_PROTOCOL, "not an SMTP server", "retriever")
        out = run_client(lab, sender.port, ["--user", "ana", "--password", "1"], program="retrieverclient")
        one_clear_line(out, EXIT_PROTOCOL, "not an HTTPS server", "sender")
        assert time.monotonic() - start < 10, "a wrong port must not wait for a timeout"
    with Server(lab, "senderserver", args=["--tls", "off"]) as plain:
        out = run_client(lab, plain.port, ["--user", "ana", "--password", "1", "--tls", "off"],
                         program="retrieverclient")
        one_clear_line(out, EXIT_PROTOCOL, "SMTP server", "sender's port")


@test
def tls_mode_mismatches_are_explained(lab):
    with Server(lab, "senderserver") as implicit, Server(lab, "senderserver", args=["--tls", "starttls"]) as starttls:
        out = run_client(lab, starttls.port, ["--user", "ana"])  # TLS hello to a plaintext greeter
        one_clear_line(out, EXIT_TLS, "plaintext", "--tls")
        start = time.monotonic()
        out = run_client(lab, implicit.port, ["--user", "ana", "--tls", "starttls", "--greeting-timeout", "2"])
        one_clear_line(out, EXIT_TLS, "expects TLS", "--tls implicit")
        assert time.monotonic() - start < 8, "the greeting wait is bounded by --greeting-timeout"
        out = run_client(lab, starttls.port, ["--user", "ana", "--tls", "starttls"])
        assert out.returncode == 0 and "password: " in out.stdout, out.stderr
    with Server(lab, "retrieverserver", args=["--tls", "off"]) as http:
        out = run_client(lab, http.port, ["--user", "ana", "--password", "1"], program="retrieverclient")
        one_clear_line(out, EXIT_TLS, "plaintext", "--tls")


@test
def a_certificate_for_another_host_is_refused_with_the_fix(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        for program, port in (("senderclient", sender.port), ("retrieverclient", retriever.port)):
            out = run_client(lab, port, ["--servername", "mail.example.org", "--user", "ana", "--password", "1"],
                             program=program)
            one_clear_line(out, EXIT_TLS, "not valid for the name 'mail.example.org'", "--servername")
        other = os.path.join(lab.dir, "other-ca")
        subprocess.run([lab.exe("maillab-certs"), other], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run([lab.exe("senderclient"), "--port", str(sender.port), "--user", "ana",
                              "--ca", os.path.join(other, "ca.pem")], capture_output=True, text=True, timeout=30)
        one_clear_line(out, EXIT_TLS, "not signed by the CA", "--ca")


@test
def timeout_is_spent_once_not_twice(lab):
    # A listener that accepts and never speaks: the whole attempt ends within --timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        start = time.monotonic()
        out = run_client(lab, port, ["--host", "127.0.0.1", "--servername", "localhost", "--user", "ana",
                                     "--timeout", "3", "--greeting-timeout", "10"])
        elapsed = time.monotonic() - start
        assert out.returncode in (EXIT_TLS, EXIT_PROTOCOL), out.stderr
        # Spent twice it would be 6 s or more; the margin is for a loaded machine (ASan, CI).
        assert elapsed < 5.5, f"--timeout 3 took {elapsed:.1f} s"


@test
def server_stopping_mid_session_says_421_and_the_client_explains(lab):
    server = Server(lab, "senderserver")
    try:
        password = register(lab, server.port, "ana")
        proc = subprocess.Popen([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write("EHLO me\n")
        proc.stdin.write(f"AUTH PLAIN {plain_credentials('ana@447.edu', password)}\n")
        proc.stdin.flush()
        # wait until the server has answered the AUTH, then stop it under the open session
        seen = read_until(proc, "235", 30)
        assert "235" in seen, seen
        assert server.stop() == 0
        server.check_sanitizers()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode in (0, EXIT_PROTOCOL), (proc.returncode, err)
        assert "421 4.3.2" in out and "shutting down" in out, out
        assert "make senderserver" in out, out
        assert "terminate called" not in err
    finally:
        server.stop()


@test
def server_killed_mid_session_is_explained(lab):
    server = Server(lab, "senderserver")
    try:
        proc = subprocess.Popen([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdin.write("EHLO me\n")
        proc.stdin.flush()
        seen = read_until(proc, "250 ", 30)
        assert "250 " in seen, seen
        server.stop(9)
        proc.stdin.write("NOOP\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == EXIT_PROTOCOL, (proc.returncode, out, err)
        assert "closed the connection" in err and "make senderserver" in err, err
        assert "terminate called" not in err
    finally:
        server.stop()


@test
def typos_get_a_hint_never_a_silent_guess(lab):
    with Server(lab, "senderserver") as server:
        out = run_client(lab, server.port, [], input="EHLO me\nrctp to\nRCTP TO:<bob@447.edu>\nMIAL FROM:<a@447.edu>\n")
        assert out.returncode == 0, out.stderr
        hints = [line for line in out.stdout.splitlines() if line.startswith("S: 500")]
        assert len(hints) == 3, out.stdout
        assert all("did you mean" in line for line in hints), hints
        assert "did you mean RCPT?" in hints[0] and "did you mean MAIL?" in hints[2], hints
        assert "S: 250 2.1.5" not in out.stdout  # nothing was taken as RCPT TO


@test
def end_of_input_says_quit_and_shows_it(lab):
    with Server(lab, "senderserver") as server:
        out = run_client(lab, server.port, [], input="EHLO me\n")
        assert out.returncode == 0, out.stderr
        assert "C: QUIT" in out.stdout and "S: 221 2.0.0" in out.stdout, out.stdout


@test
def starttls_client_shows_the_plaintext_phase_then_tls(lab):
    with Server(lab, "senderserver", args=["--tls", "starttls"]) as server:
        out = run_client(lab, server.port, ["--tls", "starttls"], input="EHLO again\n")
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert "in plaintext" in text.splitlines()[0], text
        order = [text.index("S: 220 "), text.index("C: STARTTLS"), text.index("S: 220 2.0.0 Ready to start TLS"),
                 text.index("TLS is up: TLSv1.3")]
        assert order == sorted(order), text


@test
def retriever_client_connects_before_asking_for_a_password(lab):
    port = free_port()
    out = run_client(lab, port, [], input="GET\nana\n1\n", program="retrieverclient")
    one_clear_line(out, EXIT_CONNECT, "nothing is listening")
    assert "password" not in out.stdout.lower(), out.stdout


def plain_credentials(user, password):
    import base64
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class TerminalSession:
    """A client at a real terminal (a pseudo-terminal, so libedit is in charge as for a student)."""

    def __init__(self, cmd, env=None):
        import pty
        self.master, slave = pty.openpty()
        def controlling_terminal():  # as a login shell has it: Ctrl-C becomes SIGINT
            import fcntl
            import termios
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                     preexec_fn=controlling_terminal)
        os.close(slave)
        self.output = b""

    def expect(self, text, timeout=20):
        deadline = time.monotonic() + timeout
        needle = text.encode()
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} on the terminal; it shows:\n{self.output.decode(errors='replace')}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}:\n{self.output.decode(errors='replace')}")
                self.output += chunk
        cut = self.output.index(needle) + len(needle)
        seen, self.output = self.output[:cut], self.output[cut:]
        return seen.decode(errors="replace")

    def type(self, text):
        os.write(self.master, text.encode())

    def finish(self, timeout=20):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            os.close(self.master)
        return self.proc.returncode


def terminal_env():
    env = dict(os.environ)
    env.pop("LANG", None)
    env.pop("LC_ALL", None)
    env["LC_ALL"] = "C"  # the bare locale of a fresh container: the client must still keep UTF-8
    env["TERM"] = "xterm"
    return env


@test
def typed_utf8_reaches_the_mailbox_and_ctrl_c_says_quit(lab):
    from tests.e2e.harness import messages
    with Server(lab, "senderserver") as server:
        bob = register(lab, server.port, "bob")
        assert bob
        term = TerminalSession([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca], terminal_env())
        term.expect("smtp> ")
        term.type("ehlo\r")
        term.expect("your name")
        term.type("\r")
        term.expect("smtp> ")
        term.type("auth\r")
        term.expect("email")
        term.type("josé\r".replace("é", "e"))
        term.expect("password")
        term.type("\r")
        term.expect("Registered")
        term.expect("smtp> ")
        # A second login: the server's own 503 at once, no credentials asked for (RFC 4954 4).
        term.type("auth\r")
        seen = term.expect("one login per session")
        assert "503 5.5.1" in seen and "email" not in seen and "password" not in seen, seen
        term.expect("smtp> ")
        term.type("mail from\r")
        term.expect("sender")
        term.type("\r")
        term.expect("smtp> ")
        term.type("rcpt to\r")
        term.expect("recipient")
        term.type("bob\r")
        term.expect("smtp> ")
        term.type("data\r")
        term.expect("subject: ")
        term.type("Grüße, José\r")
        term.expect("'.'")
        term.type("Ça va? — ünïcödé body\r.\r")
        term.expect("queued as")
        term.expect("smtp> ")
        term.type("\x03")  # Ctrl-C
        seen = term.expect("Bye.")
        assert "C: QUIT" in seen and "221 2.0.0" in seen, seen
        assert term.finish() == 0
        stored = messages(server.db, "bob@447.edu")
        # The subject travels as RFC 2047 encoded words (header fields are ASCII); decoded, it is what was typed.
        from email.header import decode_header, make_header
        assert stored and str(make_header(decode_header(stored[-1][0]))) == "Grüße, José", stored
        assert stored[-1][0].startswith("=?UTF-8?"), stored
        assert "Ça va? — ünïcödé body" in stored[-1][1].decode() if isinstance(stored[-1][1], bytes) \
            else "Ça va? — ünïcödé body" in stored[-1][1], stored


@test
def a_server_stopping_under_an_idle_terminal_is_shown_at_once(lab):
    server = Server(lab, "senderserver")
    try:
        term = TerminalSession([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca], terminal_env())
        term.expect("smtp> ")
        server.stop()
        seen = term.expect("Bye.")
        assert "421 4.3.2" in seen and "make senderserver" in seen, seen
        assert term.finish() == 0
    finally:
        server.stop()


@test
def a_certificate_naming_the_host_only_in_its_cn_is_refused(lab):
    """No CN fallback (RFC 6125): a certificate signed by the lab CA with CN=localhost and no
    subjectAltName is refused by both clients, with the fix."""
    work = os.path.join(lab.dir, "cn-only")
    os.makedirs(work, exist_ok=True)
    key, csr, cert = (os.path.join(work, n) for n in ("server.key", "server.csr", "server.pem"))
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-subj", "/CN=localhost/O=maillab", "-out", csr], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", lab.ca, "-CAkey", os.path.join(lab.certs, "ca.key"),
                    "-CAcreateserial", "-days", "2", "-out", cert], check=True, capture_output=True)
    args = [f"--cert={cert}", f"--key={key}", f"--ca={lab.ca}"]
    with Server(lab, "senderserver", args=args) as sender, \
            Server(lab, "retrieverserver", args=args, db=sender.db) as retriever:
        out = run_client(lab, sender.port, ["--user", "ana"])
        one_clear_line(out, EXIT_TLS, "subjectAltName", "CN")
        out = run_client(lab, retriever.port, ["--user", "ana", "--password", "1"], program="retrieverclient")
        one_clear_line(out, EXIT_TLS, "subjectAltName", "CN")


@test
def bad_options_are_one_line_with_the_documented_exit_status(lab):
    for program in ("senderclient", "retrieverclient"):
        out = subprocess.run([lab.exe(program), "--port", "abc"], capture_output=True, text=True, timeout=30)
        one_clear_line(out, 2, "--port must be a whole number")
        out = subprocess.run([lab.exe(program), "--bogus"], capture_output=True, text=True, timeout=30)
        one_clear_line(out, 2, "bogus", "--help")
    # The message's files are read before connecting: a wrong path is a usage error (2) even with no
    # server on the port (else 3), so no login (or registration) is spent on a message that cannot go.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    for missing in (["--body-file", lab.path("no-such-body.txt")], ["--attach", lab.path("no-such-file.png")]):
        out = subprocess.run([lab.exe("senderclient"), "--port", str(closed_port), "--ca", lab.ca, "--user", "ana",
                              "--to", "bob"] + missing, capture_output=True, text=True, timeout=30)
        one_clear_line(out, 2, "no-such-")
    for program in ("senderserver", "retrieverserver"):
        common = [f"--db={lab.path('opts.db')}", f"--certs={lab.certs}"]
        out = subprocess.run([lab.exe(program), "--port=abc"] + common, capture_output=True, text=True, timeout=30)
        assert out.returncode == 64 and "not a valid number" in out.stderr, out.stderr
        out = subprocess.run([lab.exe(program), "--port=99999"] + common, capture_output=True, text=True, timeout=30)
        assert out.returncode == 69 and "65535" in out.stderr and "ready" not in out.stdout, out.stderr
        out = subprocess.run([lab.exe(program), "--port=0", f"--db={lab.path('x.db')}", "--certs=/nonexistent/certs"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 70 and "--certs" in out.stderr, out.stderr
        # A store setting that cannot work is a bad setting (64, its name in the line), not a failure (70).
        out = subprocess.run([lab.exe(program), "--port=0", "--db=bogus://x", f"--certs={lab.certs}"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 64 and "unknown kind of database" in out.stderr, out.stderr
        conf = lab.path("bad-store.properties")
        with open(conf, "w") as f:
            f.write("store.commitDelayMicroseconds = -5\n")
        out = subprocess.run([lab.exe(program), "--port=0", f"--config={conf}"] + common, capture_output=True, text=True, timeout=30)
        assert out.returncode == 64 and "store.commitDelayMicroseconds must be between 0 and" in out.stderr, out.stderr


@test
def the_retriever_client_sends_any_get_path_and_keeps_the_terminal_safe(lab):
    """At http>, GET /path sends that request as it is (the lab's "the client sends GET requests"),
    asks for the account once per session, and shows the status and the body; a message whose
    text carries escape sequences reaches the terminal without them (U+FFFD), and a refused
    account is asked for again."""
    import smtplib
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        ana, bob = register(lab, sender.port, "ana"), register(lab, sender.port, "bob")
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            smtp.login("ana@447.edu", ana)
            smtp.sendmail("ana@447.edu", ["bob@447.edu"],
                          "Subject: colours\r\n\r\nplain \x1b[31mred\x1b[0m \x1b]0;pwned\x07 end\r\n")
        term = TerminalSession([lab.exe("retrieverclient"), "--port", str(retriever.port), "--ca", lab.ca],
                               terminal_env())
        term.expect("http> ")
        term.type("GET mailboxes\r")
        assert "A path starts with /" in term.expect("http> ")
        term.type("GET /mailboxes/bob@447.edu/messages?limit=1\r")
        term.expect("email")
        term.type("bob\r")
        term.expect("password")
        term.type(bob + "\r")
        seen = term.expect("http> ")
        assert "HTTP 200 OK" in seen and '"total":1' in seen.replace(" ", ""), seen
        import re
        mid = re.search(r'"id"\s*:\s*(\d+)', seen).group(1)
        # The account is kept: no second prompt. The raw text as sent, without its escape sequences.
        term.type(f"GET /mailboxes/bob@447.edu/messages/{mid}/raw\r")
        seen = term.expect("http> ")
        assert "email" not in seen and "password" not in seen, seen
        assert "HTTP 200 OK" in seen and "message/rfc822" in seen, seen
        assert "plain " in seen and "red" in seen and " end" in seen, seen
        assert "\x1b" not in seen and "\x07" not in seen and "\ufffd" in seen, repr(seen)
        # Another's mailbox: the server's refusal, shown as it is.
        term.type("GET /mailboxes/ana@447.edu/messages\r")
        seen = term.expect("http> ")
        assert "HTTP 403" in seen, seen
        term.type("quit\r")
        term.expect("Bye.")
        assert term.finish() == 0
        # A refused account is not kept: the next request asks again.
        term = TerminalSession([lab.exe("retrieverclient"), "--port", str(retriever.port), "--ca", lab.ca],
                               terminal_env())
        term.expect("http> ")
        term.type("GET /mailboxes/bob@447.edu/messages\r")
        term.expect("email")
        term.type("bob\r")
        term.expect("password")
        term.type("wrong\r")
        assert "HTTP 401" in term.expect("http> ")
        term.type("GET /mailboxes/bob@447.edu/messages\r")
        term.expect("email")
        term.type("\x04")  # Ctrl-D
        term.expect("Bye.")
        term.finish()
        # Into a pipe or a file, --raw keeps every byte as stored.
        out = run_client(lab, retriever.port, ["--user", "bob", "--password", bob, "--id", mid, "--raw"],
                         program="retrieverclient")
        assert out.returncode == 0 and "\x1b[31mred" in out.stdout, out


@test
def the_retriever_client_says_when_a_from_line_is_not_the_sender(lab):
    """Anyone can type any From line (RFC 5322 3.6.2): the list marks a message whose From is not
    the account that logged in and sent it, and the message names that account; an honest one has
    no mark."""
    import smtplib
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        mallory, bob = register(lab, sender.port, "mallory"), register(lab, sender.port, "bob")
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            smtp.login("mallory@447.edu", mallory)
            smtp.sendmail("mallory@447.edu", ["bob@447.edu"], "From: Mallory <MALLORY@447.edu>\r\nSubject: honest\r\n\r\nhi\r\n")
            smtp.sendmail("mallory@447.edu", ["bob@447.edu"], "From: Ana <ana@447.edu>\r\nSubject: forged\r\n\r\nhi\r\n")
            # Her own address last, or inside the display name: still not only hers.
            smtp.sendmail("mallory@447.edu", ["bob@447.edu"],
                          "From: ana@447.edu, Mallory <mallory@447.edu>\r\nSubject: listed\r\n\r\nhi\r\n")
            smtp.sendmail("mallory@447.edu", ["bob@447.edu"],
                          "From: \"ana@447.edu (Ana)\" <mallory@447.edu>\r\nSubject: named\r\n\r\nhi\r\n")
        out = run_client(lab, retriever.port, ["--user", "bob", "--password", bob], program="retrieverclient")
        assert out.returncode == 0, out.stderr
        rows = {line.split()[-1]: line for line in out.stdout.splitlines()
                if line.rstrip().endswith(("honest", "forged", "listed", "named"))}
        assert set(rows) == {"honest", "forged", "listed", "named"}, out.stdout
        assert "! Ana <ana@447.edu>" in rows["forged"] and "!" not in rows["honest"], out.stdout
        assert "! " in rows["listed"] and "! " in rows["named"], out.stdout
        assert "From line is not the account that sent it" in out.stdout, out.stdout
        import re
        forged = re.match(r"\s*(\d+)", rows["forged"]).group(1)
        honest = re.match(r"\s*(\d+)", rows["honest"]).group(1)
        out = run_client(lab, retriever.port, ["--user", "bob", "--password", bob, "--id", forged], program="retrieverclient")
        assert "From: Ana <ana@447.edu>\nSent by: mallory@447.edu" in out.stdout, out.stdout
        out = run_client(lab, retriever.port, ["--user", "bob", "--password", bob, "--id", honest], program="retrieverclient")
        assert "Sent by" not in out.stdout, out.stdout
