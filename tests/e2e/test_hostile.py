"""Hostile input, replayed against the real servers: well over a hundred SMTP and HTTP inputs, each
with the reply it must get, and after each a fresh client that must still be served (no crash, no
hang, no state leaking between connections). The cases are data: one table per protocol below."""

import base64
import socket
import ssl
import time

from tests.e2e.harness import Conversation, Server, register, test, tls_connect


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


# ---- SMTP ----------------------------------------------------------------------------------------
# (stage, input bytes, expected reply prefix). Stages: "greeted" after EHLO; "authed" after AUTH;
# "mail" after MAIL FROM; "data" after RCPT and DATA's 354 (the input then ends the message).
CONTROL = [0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x1B, 0x7F]
SMTP_CASES = (
    [("greeted", b"NOOP" + bytes([c]) + b"\r\n", "500 5.5.2") for c in CONTROL]
    + [("greeted", bytes([c]) + b"NOOP\r\n", "500 5.5.2") for c in CONTROL]
    + [("greeted", line + b"\r\n", "500 5.5.2") for line in (
        "NOÖP".encode(), "ＭAIL FROM:<a@447.edu>".encode(), b"\xef\xbb\xbfEHLO x", b"\xff\xfe\xfd",
        b"GET / HTTP/1.1", b"POST /login HTTP/1.1", b"USER ana", b"PASS secret", b"CAPA", b"LOGIN ana x",
        b"SELECT * FROM accounts", b"%s%s%s%n%n", b"' OR 1=1 --", b"../../etc/passwd", b"${jndi:ldap://x/a}",
        b"<script>alert(1)</script>", b"XXXXXXXXXX", b"QUITX", b"HELOx", b"", b"   ", b"\t", b":", b"\\")]
    + [("greeted", b"NOOP " + b"a" * 993 + b"\r\n", "250 2.0.0"),      # 1000 octets with CRLF: the limit
       ("greeted", b"NOOP " + b"a" * 994 + b"\r\n", "500 5.5.6"),      # one over
       ("greeted", b"NOOP " + b"a" * 5000 + b"\r\n", "500 5.5.6"),
       ("greeted", b"X" * 70000 + b"\r\n", "500 5.5.6"),
       ("greeted", b"MAIL FROM:<ana@447.edu>\r\n", "530 5.7.0"),
       ("greeted", b"RCPT TO:<bob@447.edu>\r\n", "530 5.7.0"),
       ("greeted", b"DATA\r\n", "530 5.7.0"),
       ("greeted", b"RSET\r\n", "250 2.0.0"),
       ("greeted", b"NOOP\r\n", "250 2.0.0"),
       ("greeted", b"HELP\r\n", "214-2.0.0"),
       ("greeted", b"HELP MAIL\r\n", "214-2.0.0"),
       ("greeted", b"HELP BOGUS\r\n", "501 5.5.4"),
       ("greeted", b"HELO\r\n", "501 5.5.4"),
       ("greeted", b"EHLO\r\n", "501 5.5.4"),
       ("greeted", b"VRFY root\r\n", "252 2.5.0"),
       ("greeted", b"EXPN staff\r\n", "502 5.5.1"),
       ("greeted", b"TURN\r\n", "502 5.5.1"),
       # BDAT (RFC 3030): a refused chunk is read before the reply, so its octets never run as commands
       ("greeted", b"BDAT 10 LAST\r\nQUIT\r\nQUIT", "530 5.7.0"),
       ("greeted", b"BDAT\r\n", "501 5.5.4"),
       ("greeted", b"BDAT -1\r\n", "501 5.5.4"),
       ("greeted", b"BDAT 99999999999999999999 LAST\r\n", "501 5.5.4"),
       ("greeted", b"BDAT 0x10\r\n", "501 5.5.4"),
       ("authed", b"BDAT 6 LAST\r\nQUIT\r\n", "503 5.5.1"),
       ("mail", b"BDAT 6 LAST\r\nQUIT\r\n", "503 5.5.1"),
       ("greeted", b"AUTH\r\n", "501 5.5.4"),
       ("greeted", b"AUTH FOO\r\n", "504 5.5.4"),
       ("greeted", b"AUTH CRAM-MD5\r\n", "504 5.5.4"),
       ("greeted", b"AUTH PLAIN !!!!\r\n", "501 5.5.2"),
       ("greeted", b"AUTH PLAIN " + b64("\0\0").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b64("ana@447.edu").encode() + b"\r\n", "501 5.5.4"),  # not authzid NUL user NUL pw
       ("greeted", b"AUTH PLAIN " + b64("\0nobody@447.edu\0x").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b64("\0postmaster@447.edu\0").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b64("\0root@447.edu\0").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b64("\0eve@evil.example\0").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b64(b"\0" + b"\xff" * 10 + b"@447.edu\0").encode() + b"\r\n", "535 5.7.8"),
       ("greeted", b"AUTH PLAIN " + b"A" * 2000 + b"\r\n", "500 5.5.6"),
       ("greeted", b"AUTH LOGIN\r\n*\r\n", "334"),
       ("greeted", b"STARTTLS\r\n", "5"),
       ("authed", b"AUTH PLAIN " + b64("\0ana@447.edu\0x").encode() + b"\r\n", "503 5.5.1"),
       ("authed", b"MAIL\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM:\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM:<\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM:<ana@447.edu\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM:<>\r\n", "553"),
       ("authed", b"MAIL FROM:<bob@447.edu>\r\n", "553 5.7.1"),
       ("authed", b"MAIL FROM:<ana@447.edu> SIZE=abc\r\n", "501"),
       ("authed", b"MAIL FROM:<ana@447.edu> SIZE=999999999999999999999\r\n", "5"),
       ("authed", b"MAIL FROM:<ana@447.edu> SIZE=99999999\r\n", "552 5.3.4"),
       ("authed", b"MAIL FROM:<ana@447.edu> FOO=bar\r\n", "555 5.5.4"),
       ("authed", b"MAIL FROM:<ana@447.edu> BODY=BINARYMIME\r\n", "501 5.5.4"),
       ("authed", b"MAIL FROM:<\"ana\"@447.edu>\r\n", "5"),
       ("authed", b"MAIL FROM:<ana@447.edu>\x00\r\n", "500 5.5.2"),
       ("authed", b"RCPT TO:<bob@447.edu>\r\n", "503 5.5.1"),
       ("authed", b"DATA\r\n", "503 5.5.1"),
       ("mail", b"MAIL FROM:<ana@447.edu>\r\n", "503 5.5.1"),
       ("mail", b"DATA\r\n", "503 5.5.1"),
       ("mail", b"RCPT TO:<>\r\n", "5"),
       ("mail", b"RCPT TO:<nobody@447.edu>\r\n", "550 5.1.1"),
       ("mail", b"RCPT TO:<victim@example.com>\r\n", "550 5.7.1"),
       ("mail", b"RCPT TO:<bob@447.edu@example.com>\r\n", "5"),
       # RFC 5321 4.1.1.3 / C: a source route is accepted and ignored; the mailbox is what counts
       ("mail", b"RCPT TO:<@relay.example:bob@447.edu>\r\n", "250 2.1.5"),
       ("mail", b"RCPT TO:<a b@447.edu>\r\n", "5"),
       ("mail", b"RCPT TO:<" + b"a" * 300 + b"@447.edu>\r\n", "5"),
       ("mail", b"RCPT TO:<bob@447.edu> NOTIFY=NEVER\r\n", "555 5.5.4"),
       ("mail", b"RCPT TO:<bob@447.edu\r\n", "501 5.5.4"),
       ("mail", b"AUTH PLAIN x\r\n", "503 5.5.1"),
       ("mail", b"EHLO again\r\n", "250"),
       ("data", b"Subject: nul\r\n\r\na\x00b\r\n.\r\n", "250 2.0.0"),
       ("data", b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n.\r\n", "550 5.6.0"),
       ("data", b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 12000 + b".\r\n", "552 5.3.4"),
       ("data", b"Subject: cr\r\n\r\na\rb\r\n.\r\n", "550 5.6.0"),
       ("data", b"Subject: s1\r\n\r\nx\n.\nMAIL FROM:<ana@447.edu>\r\n", "421 4.5.0"),
       ("data", b"Subject: s2\r\n\r\nx\n.\r\nMAIL FROM:<ana@447.edu>\r\n", "421 4.5.0"),
       ("data", b"Subject: s3\r\n\r\nx\r\n.\nMAIL FROM:<ana@447.edu>\r\n", "421 4.5.0"),
       ("data", b"Subject: s4\r\n\r\nx\n\n.\n\nMAIL FROM:<ana@447.edu>\r\n", "421 4.5.0"),
       ("data", b"Subject: s5\r\n\r\nx\r.\rMAIL FROM:<ana@447.edu>\r\n.\r\n", "550 5.6.0"),
       ("data", b"Subject: dots\r\n\r\n..\r\n...\r\n.x\r\n.\r\n", "250 2.0.0"),
       ("data", b"\r\n.\r\n", "250 2.0.0"),
       ("data", b".\r\n", "250 2.0.0"),
       ("data", b"From: \"Evil\" <president@447.edu>\r\nSubject: forged\r\n\r\nhi\r\n.\r\n", "250 2.0.0"),
       ("data", b"Subject: =?UTF-8?B?w6nDqMOg?=\r\n\r\n\xc3\xa9\xc3\xa8\r\n.\r\n", "250 2.0.0"),
       ("data", b"Subject: header injection\r\nBcc: victim@example.com\r\n\r\nx\r\n.\r\n", "250 2.0.0"),
       ("data", b"Subject: \x1b[31mred\r\n\r\nx\r\n.\r\n", "250 2.0.0"),
       ("data", b"X-Folded: a\r\n\tb\r\n c\r\n\r\nx\r\n.\r\n", "250 2.0.0")]
)


def smtp_session(lab, port, password, stage):
    c = Conversation(lab, port)
    if stage in ("greeted", "authed", "mail", "data"):
        assert c.cmd("EHLO hostile").startswith("250")
    if stage in ("authed", "mail", "data"):
        assert c.cmd("AUTH PLAIN " + b64(f"\0ana@447.edu\0{password}")).startswith("235")
    if stage in ("mail", "data"):
        assert c.cmd("MAIL FROM:<ana@447.edu>").startswith("250")
    if stage == "data":
        assert c.cmd("RCPT TO:<bob@447.edu>").startswith("250")
        assert c.cmd("DATA").startswith("354")
    return c


def still_serves(lab, port):
    c = Conversation(lab, port)
    try:
        assert c.banner[-1].startswith("220 "), c.banner
        assert c.cmd("NOOP").startswith("250 "), "the server stopped answering"
    finally:
        c.close()


@test
def hostile_smtp_inputs_get_the_right_reply_and_the_server_serves_on(lab):
    assert len(SMTP_CASES) >= 100, len(SMTP_CASES)
    with Server(lab, "senderserver", {"smtp.maxMessageSize": 10_000_000, "smtp.maxErrors": 1000}) as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        wrong = []
        for number, (stage, data, expected) in enumerate(SMTP_CASES):
            c = smtp_session(lab, server.port, ana, stage)
            try:
                c.send(data)
                reply = c.reply()[0]
            except (EOFError, OSError, ssl.SSLError) as e:
                reply = f"<no reply: {e!r}>"
            finally:
                c.close()
            if not reply.startswith(expected):
                wrong.append(f"case {number} ({stage}) {data[:60]!r}: expected {expected!r}, got {reply!r}")
            still_serves(lab, server.port)
        assert not wrong, "\n".join(wrong)
        server.check_sanitizers()
    # Nothing a client sent reaches the log raw: it stays valid UTF-8, with no control bytes.
    log = open(server.log_path, "rb").read()
    log.decode("utf-8")
    assert not any(b in log for b in (b"\x00", b"\x1b", b"\x7f")), "raw control bytes in the log"


# ---- HTTP ----------------------------------------------------------------------------------------
GOOD = "Basic " + b64("bob@447.edu:{password}")


def http_cases():
    long_name = "X-" + "a" * 9000
    return [
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", {401}),
        (b"GET /mailboxes/bob@447.edu/messages HTTP/1.1\r\nHost: localhost\r\n\r\n", {401}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic !!!\r\n\r\n", {401}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer abc\r\n\r\n", {401}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic " + b64("bob@447.edu").encode() + b"\r\n\r\n", {401}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic " + b64("nobody@447.edu:x").encode() + b"\r\n\r\n", {401}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic " + b64(":").encode() + b"\r\n\r\n", {401}),
        (b"FOO / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {501}),  # RFC 9110 9.1
        (b"POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n", {405}),
        (b"DELETE /mailboxes/bob@447.edu/messages/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {405}),
        (b"PUT / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n", {405}),
        # With a body the method is still what is wrong (RFC 9110 15.5.6), not the body.
        # (its body a whole request: were the body read as the next request, a second answer would come)
        (b"POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
         + SMUGGLED, {405}),
        (b"POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", {405}),
        (b"GET /../../etc/passwd HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 404}),
        (b"GET /mailboxes/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 403, 404}),
        (b"GET /mailboxes/ana@447.edu/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {403}),
        (b"GET /mailboxes/bob@447.edu/messages/1'%20OR%201=1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 404}),
        (b"GET /mailboxes/bob@447.edu/messages/99999999999999999999 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 404}),
        (b"GET /mailboxes/bob@447.edu/messages/-1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 404}),
        (b"GET /mailboxes/bob@447.edu/messages?limit=-5 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET /mailboxes/bob@447.edu/messages?limit=abc HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET /mailboxes/bob@447.edu/messages?offset=99999999999999999999 HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET /mailboxes/bob%00@447.edu/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 403, 404}),
        (b"GET /mailboxes/%ZZ HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 404}),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {400, 414}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n" + long_name.encode() + b": x\r\nAuthorization: {auth}\r\n\r\n", {400, 431}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"v" * 20000 + b"\r\nAuthorization: {auth}\r\n\r\n", {400, 431}),
        (b"\x00\x01\x02\x03\r\n\r\n", {400}),
        (b"GARBAGE\r\n\r\n", {400}),
        (b"GET\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nAccept: text/html\r\n\r\n", {200}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nIf-None-Match: \"" + b"z" * 500 + b"\"\r\n\r\n", {200}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nIf-Modified-Since: not a date\r\n\r\n", {200}),
        (b"HEAD / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {200}),
        (b"GET /favicon.ico HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {404}),
        # Framing (RFC 9112): what cannot be framed exactly is refused and the connection closed.
        (b"GET / HTTP/9.9\r\nHost: localhost\r\nAuthorization: {auth}\r\n\r\n", {505}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: 0\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nAuthorization: {auth}\r\n\r\n0\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\nAuthorization: {auth}\r\n\r\n0\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth}\r\nContent-Length: 39\r\n\r\n"
         b"GET /mailboxes/ana@447.edu HTTP/1.1\r\n\r\n", {400}),
        # RFC 9112 3.2: Host once, and required in HTTP/1.1.
        (b"GET / HTTP/1.1\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET / HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nAuthorization: {auth}\r\n\r\n", {400}),
        (b"GET / HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n", {200}),
    ]


def http_status(lab, port, request, whole_line=False):
    s = tls_connect(lab, port)
    try:
        s.sendall(request)
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        if whole_line:
            return line
        parts = line.split(" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else line
    except (OSError, ssl.SSLError) as e:
        return repr(e)
    finally:
        s.close()


SMUGGLED = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def count_responses(lab, port, request):
    s = tls_connect(lab, port)
    data = b""
    try:
        s.sendall(request)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (OSError, ssl.SSLError):
        pass
    finally:
        s.close()
    return data.count(b"HTTP/1.1 ")


@test
def hostile_http_requests_get_the_right_status_and_the_server_serves_on(lab):
    for core in ("events", "threads"):
        hostile_http_requests_on(lab, core)


def hostile_http_requests_on(lab, core):
    with Server(lab, "senderserver") as sender, \
            Server(lab, "retrieverserver", {"retriever.core": core}, db=sender.db) as retriever:
        register(lab, sender.port, "ana")
        bob = register(lab, sender.port, "bob")
        auth = ("Basic " + b64(f"bob@447.edu:{bob}")).encode()
        good = b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: " + auth + b"\r\n\r\n"
        wrong = []
        for number, (request, allowed) in enumerate(http_cases()):
            status = http_status(lab, retriever.port, request.replace(b"{auth}", auth))
            if b"ana@447.edu HTTP/1.1" in request or (request.startswith(b"POST ") and b"Content-Length: 0\r\n" not in request):
                # the body is never taken for a second request: exactly one response on that connection
                assert count_responses(lab, retriever.port, request.replace(b"{auth}", auth)) == 1
            if status not in allowed:
                wrong.append(f"{core} core: case {number} {request[:70]!r}: expected one of {sorted(allowed)}, got {status!r}")
            assert http_status(lab, retriever.port, good) == 200, f"not serving after case {number}"
        assert not wrong, "\n".join(wrong)
        # RFC 9110 6.2: the status line names the server's version, not the one the request claimed.
        line = http_status(lab, retriever.port, b"GET / HTTP/9.9\r\nHost: localhost\r\n\r\n", whole_line=True)
        assert line.startswith("HTTP/1.1 505 "), line
        retriever.check_sanitizers()


class Pop3Raw:
    """A raw POP3 connection (implicit TLS, or the plaintext STLS port) for exact bytes and bad input."""

    def __init__(self, lab, port, tls=True):
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock = lab.ssl_context().wrap_socket(raw, server_hostname="localhost") if tls else raw
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection; had " + repr(self.buffer[:200]))
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def block(self):
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

    def closed(self):
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ssl.SSLError, ConnectionError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@test
def hostile_pop3_input_gets_err_or_closure_and_the_server_serves_on(lab):
    from tests.e2e.test_retriever import Lab2
    with Lab2(lab, {"pop3.plainPort": 0, "pop3.idleTimeoutSeconds": 2}) as l2:
        port, plain = l2.retriever.pop3_port, l2.retriever.pop3_plain_port

        def serves_on():
            c = Pop3Raw(lab, port)
            try:
                assert c.greeting.startswith("+OK "), c.greeting
                assert c.cmd("USER bob@447.edu").startswith("+OK")
                assert c.cmd(f"PASS {l2.bob}").startswith("+OK bob@447.edu has 1 message"), "the server stopped serving"
                assert c.cmd("QUIT").startswith("+OK")
            finally:
                c.close()

        # Not logged in: nothing of the maildrop.
        c = Pop3Raw(lab, port)
        for command in ("RETR 1", "LIST", "STAT", "UIDL 1", "TOP 1 10", "DELE 1", "RSET", "NOOP"):
            reply = c.cmd(command)
            assert reply.startswith("-ERR ") and "needs a login first" in reply, (command, reply)
        c.close()
        # A line of 100 kB, NULs and control bytes, a bare CR: -ERR, and the session goes on.
        c = Pop3Raw(lab, port)
        c.send(b"USER " + b"x" * 100000 + b"\r\n")
        assert c.line().startswith("-ERR Line too long")
        assert c.cmd("US\0ER bob@447.edu").startswith("-ERR Unknown command US?ER")
        assert c.cmd("\x1b[31mCAPA").startswith("-ERR Unknown command")
        assert c.cmd("CAPA").startswith("+OK") and "USER" in c.block()
        c.close()
        # 1000 bad commands in one write: 20 answered, then the connection closes.
        c = Pop3Raw(lab, port)
        c.send(b"BOGUS\r\n" * 1000)
        replies = []
        try:
            while True:
                replies.append(c.line())
        except (EOFError, ConnectionError, ssl.SSLError):
            pass
        assert len(replies) == 21 and replies[-1].startswith("-ERR Too many bad commands"), replies[-3:]
        c.close()
        # Pipelined commands: every reply, in order, in as few writes as the server likes.
        c = Pop3Raw(lab, port)
        c.send(f"USER bob@447.edu\r\nPASS {l2.bob}\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 1 0\r\nNOOP\r\nQUIT\r\n")
        assert c.line().startswith("+OK Send PASS")
        assert c.line().startswith("+OK bob@447.edu has 1 message")
        assert c.line().startswith("+OK 1 ")
        assert c.line().startswith("+OK 1 message") and len(c.block()) == 1
        assert c.line().startswith("+OK Unique-id") and len(c.block()) == 1
        assert c.line().endswith(" octets") and "Hello Bob & friends" in c.block()
        assert c.line().startswith("+OK Top") and "Hello Bob & friends" not in c.block()
        assert c.line() == "+OK Still here"
        assert c.line().startswith("+OK") and c.closed()
        c.close()
        # Three wrong passwords close the connection.
        c = Pop3Raw(lab, port, tls=True)
        for i in range(3):
            c.cmd("USER bob@447.edu")
            reply = c.cmd(f"PASS 0000{i}447")
            assert reply.startswith("-ERR [AUTH]"), reply
        assert c.line().startswith("-ERR [AUTH] Too many failed logins") and c.closed()
        c.close()
        # STLS with a command pipelined behind it in clear: the command is dropped, never run in TLS.
        c = Pop3Raw(lab, plain, tls=False)
        assert "STLS" in c.greeting
        assert c.cmd(f"USER bob@447.edu").startswith("-ERR No credentials before TLS")
        c.send(f"STLS\r\nUSER bob@447.edu\r\n")
        assert c.line() == "+OK Begin TLS negotiation"
        c.sock = lab.ssl_context().wrap_socket(c.sock, server_hostname="localhost")
        c.buffer = b""
        assert c.cmd(f"PASS {l2.bob}").startswith("-ERR Send USER"), "a plaintext command ran inside TLS"
        c.close()
        # TLS garbage on the implicit port, then silence: the idle deadline closes the session.
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        raw.sendall(b"\x16\x03\x01\x00\x05hello" + b"\0" * 100)
        raw.settimeout(15)
        try:
            while raw.recv(4096):
                pass
        except (ConnectionError, socket.timeout):
            pass
        raw.close()
        c = Pop3Raw(lab, port)
        start = time.monotonic()
        assert c.line().startswith("-ERR Autologout") and c.closed()
        assert time.monotonic() - start < 10
        c.close()
        serves_on()
        assert l2.retriever.proc.poll() is None, "the retriever died"
        assert https_ok(l2), "the HTTPS side stopped answering"
    log = l2.retriever.log_after_stop()
    assert "event=stls-discarded-plaintext" in log and "event=too-many-bad-commands" in log, log


def https_ok(l2):
    code, _ = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
    return code == 200
