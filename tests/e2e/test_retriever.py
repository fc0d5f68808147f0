"""End-to-end tests of the retriever with our client, curl, Python http.client and headless Chromium,
next to a sender server writing the same database."""

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading

from tests.e2e.harness import Conversation, Server, Skip, register, run_client, test, tls_connect


class Lab2:
    """A sender and a retriever on one database, with ana and bob registered and one message."""

    def __init__(self, lab, retriever_settings=None):
        self.lab = lab
        self.sender = Server(lab, "senderserver")
        self.retriever = Server(lab, "retrieverserver", retriever_settings, db=self.sender.db)
        self.ana = register(lab, self.sender.port, "ana")
        self.bob = register(lab, self.sender.port, "bob")
        self.send("ana", self.ana, "bob", "First <note>", "Hello Bob & friends\n")

    def send(self, user, password, to, subject, body):
        path = self.lab.path("body.txt")
        with open(path, "w") as f:
            f.write(body)
        out = run_client(self.lab, self.sender.port, ["--user", user, "--password", password, "--to", to,
                                                      "--subject", subject, "--body-file", path])
        assert out.returncode == 0, out.stderr

    def curl(self, *args, user="bob@447.edu", password=None):
        cmd = ["curl", "-sS", "--cacert", self.lab.ca, "-w", "\n%{http_code}"]
        if user:
            cmd += ["-u", f"{user}:{password if password is not None else self.bob}"]
        out = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        body, _, code = out.stdout.rpartition("\n")
        return int(code), body

    def url(self, path):
        return f"https://localhost:{self.retriever.port}{path}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.retriever.__exit__()
        self.sender.__exit__()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@test
def retriever_client_lists_and_opens_mail(lab):
    with Lab2(lab) as l2:
        out = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob], program="retrieverclient")
        assert out.returncode == 0, out.stderr
        assert "Mailbox bob@447.edu: 1 message" in out.stdout and "First <note>" in out.stdout
        listing = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob, "--json"],
                             program="retrieverclient")
        data = json.loads(listing.stdout)
        mid = data["messages"][0]["id"]
        one = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob, "--id", str(mid)],
                         program="retrieverclient")
        assert "Subject: First <note>" in one.stdout and "Hello Bob & friends" in one.stdout
        raw = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob, "--id", str(mid), "--raw"],
                         program="retrieverclient")
        assert raw.stdout.startswith("Received: from ")
        wrong = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", "00000447"], program="retrieverclient")
        assert wrong.returncode == 1 and "401" in wrong.stderr
        other = run_client(lab, l2.retriever.port, ["--user", "ana", "--password", l2.ana, "--id", str(mid)],
                           program="retrieverclient")
        assert other.returncode == 1 and "404" in other.stderr
        host = run_client(lab, l2.retriever.port, ["--servername", "wrong.example", "--user", "bob",
                                                   "--password", l2.bob], program="retrieverclient")
        assert host.returncode == 4, host.stdout + host.stderr  # 4: TLS (certificate)
        steps = f"get\nbob\n{l2.bob}\n{mid}\n\nquit\n"
        inter = run_client(lab, l2.retriever.port, [], input=steps, program="retrieverclient")
        assert inter.returncode == 0 and "Hello Bob & friends" in inter.stdout, inter.stdout + inter.stderr
        verbose = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob, "--verbose"],
                             program="retrieverclient")
        assert "* TLS TLSv1.3" in verbose.stderr and "S: HTTP/1.1 200 OK" in verbose.stderr
        assert l2.bob not in verbose.stderr


@test
def curl_reads_json_raw_html_and_gets_the_right_errors(lab):
    with Lab2(lab) as l2:
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
        assert code == 200
        listing = json.loads(body)
        assert listing["total"] == 1 and listing["messages"][0]["subject"] == "First <note>"
        mid = listing["messages"][0]["id"]
        code, body = l2.curl(l2.url(f"/mailboxes/bob@447.edu/messages/{mid}"))
        assert code == 200 and json.loads(body)["body"] == "Hello Bob & friends\n"  # decoded text: lines end in \n
        code, body = l2.curl(l2.url(f"/mailboxes/bob@447.edu/messages/{mid}/raw"))
        assert code == 200 and "Subject: First <note>" in body
        code, body = l2.curl(l2.url("/"))
        assert code == 200 and "First &lt;note&gt;" in body
        # HEAD: headers with the length GET would send, no body.
        out = subprocess.run(["curl", "-sS", "-I", "--cacert", lab.ca, "-u", f"bob@447.edu:{l2.bob}",
                              l2.url("/mailboxes/bob@447.edu/messages")], capture_output=True, text=True, timeout=30)
        head = out.stdout.lower()
        code, full = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
        assert "http/1.1 200" in head and f"content-length: {len(full.encode())}" in head, head
        etag = [line.split(":", 1)[1].strip() for line in out.stdout.splitlines() if line.lower().startswith("etag:")][0]
        code, body = l2.curl("-H", f"If-None-Match: {etag}", l2.url("/mailboxes/bob@447.edu/messages"))
        assert code == 304 and body == ""
        code, body = l2.curl(l2.url("/"), user=None)
        assert code == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        code, body = l2.curl(l2.url("/"), password="00000447")
        assert code == 401
        code, body = l2.curl(l2.url("/mailboxes/ana@447.edu/messages"))
        assert code == 403 and json.loads(body)["error"]["status"] == 403
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages/424242"))
        assert code == 404
        code, body = l2.curl("-X", "DELETE", l2.url("/mailboxes/bob@447.edu/messages"))
        assert code == 405
        code, _ = l2.curl(l2.url("/mailboxes/" + "a" * 3000))
        assert code == 414
        headers = []
        for i in range(3):
            headers += ["-H", f"X-Filler-{i}: " + "y" * 4000]
        code, _ = l2.curl(*headers, l2.url("/"))
        assert code == 431


@test
def python_http_client_with_keep_alive(lab):
    with Lab2(lab) as l2:
        conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
        auth = {"Authorization": basic("bob@447.edu", l2.bob)}
        for _ in range(5):
            conn.request("GET", "/mailboxes/bob@447.edu/messages", headers=auth)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Content-Length")
            assert json.loads(resp.read())["total"] == 1
        conn.request("GET", "/mailboxes/bob@447.edu/messages", headers={})
        resp = conn.getresponse()
        assert resp.status == 401 and resp.getheader("WWW-Authenticate", "").startswith("Basic realm=")
        resp.read()
        conn.close()
        assert conn.sock is None
        log = l2.retriever.log_text()
        ids = {line.split("id=")[1].split()[0] for line in log.splitlines() if "event=request" in line}
        assert len(ids) == 1, ids  # the five requests and the 401 came over one connection


@test
def http_semantics_follow_rfc_9110_and_9112_on_both_cores(lab):
    """Python's http.client and raw requests: a 304 carries no Content-Length (RFC 9110 8.6) and the
    connection serves on after it; the absolute-form target is accepted (RFC 9112 3.2.2); HTTP/1.2 is
    answered as HTTP/1.1 (RFC 9110 2.5); a method nobody defined is 501 (RFC 9110 9.1); and a POP3 DELE
    moves the listing's Last-Modified, so If-Modified-Since alone gets the new listing."""
    import poplib
    import time
    from tests.e2e.test_hostile import http_status
    listing = "/mailboxes/bob@447.edu/messages"
    for core in ("threads", "events"):
        with Lab2(lab, {"retriever.core": core}) as l2:
            auth = {"Authorization": basic("bob@447.edu", l2.bob)}
            conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
            conn.request("GET", listing, headers=auth)
            first = conn.getresponse()
            assert first.status == 200 and json.loads(first.read())["total"] == 1, core
            etag, modified = first.getheader("ETag"), first.getheader("Last-Modified")
            kept = conn.sock  # http.client reconnects silently: the same socket proves keep-alive held
            assert etag and modified, (core, first.getheaders())
            conn.request("GET", listing, headers={**auth, "If-None-Match": etag})
            same = conn.getresponse()
            assert same.status == 304 and same.read() == b"", core
            assert same.getheader("Content-Length") is None and same.getheader("ETag") == etag, (core, same.getheaders())
            url = f"https://localhost:{l2.retriever.port}{listing}"
            conn.request("GET", url, headers=auth)  # the same connection: it served on after the 304
            absolute = conn.getresponse()
            assert absolute.status == 200 and json.loads(absolute.read())["total"] == 1, core
            assert conn.sock is kept, core
            conn.close()
            head = f"Host: localhost\r\nAuthorization: {auth['Authorization']}\r\nConnection: close\r\n\r\n".encode()
            assert http_status(lab, l2.retriever.port, b"GET / HTTP/1.2\r\n" + head, whole_line=True) == "HTTP/1.1 200 OK", core
            assert http_status(lab, l2.retriever.port, b"FOO / HTTP/1.1\r\n" + head, whole_line=True).startswith("HTTP/1.1 501 "), core
            assert http_status(lab, l2.retriever.port, b"GET / HTTP/2.0\r\n" + head, whole_line=True).startswith("HTTP/1.1 505 "), core
            # A later 1.x is 1.1 in every rule, Host's too (RFC 9112 3.2).
            no_host = f"Authorization: {auth['Authorization']}\r\n\r\n".encode()
            assert http_status(lab, l2.retriever.port, b"GET / HTTP/1.2\r\n" + no_host, whole_line=True).startswith("HTTP/1.1 400 "), core
            if core == "events":
                # Last-Modified counts seconds: the deletion must fall in a later second than the
                # arrival for a 1-second date to tell them apart (RFC 9110 8.8.2.2).
                time.sleep(1.05 - time.time() % 1)
                pop = poplib.POP3_SSL("localhost", l2.retriever.pop3_port, context=lab.ssl_context(), timeout=30)
                pop.user("bob@447.edu")
                pop.pass_(l2.bob)
                pop.dele(1)
                pop.quit()
                conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
                conn.request("GET", listing, headers={**auth, "If-Modified-Since": modified})
                after = conn.getresponse()
                assert after.status == 200 and json.loads(after.read())["total"] == 0, after.status
                assert after.getheader("Last-Modified") != modified
                conn.close()


@test
def tls12_refused_by_retriever(lab):
    with Lab2(lab) as l2:
        ctx = ssl.create_default_context(cafile=lab.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        raw = socket.create_connection(("127.0.0.1", l2.retriever.port), timeout=10)
        try:
            ctx.wrap_socket(raw, server_hostname="localhost")
            raise AssertionError("TLS 1.2 accepted")
        except ssl.SSLError:
            pass
        s = tls_connect(lab, l2.retriever.port)
        assert s.version() == "TLSv1.3"
        s.close()


@test
def chromium_shows_the_inbox(lab):
    chromium = shutil.which("chromium")
    if not chromium:
        raise Skip("chromium is not installed (make test-deps installs it where the distribution packages it)")
    with Lab2(lab) as l2:
        l2.send("ana", l2.ana, "bob", "Second message", "more\n")
        spki = subprocess.run(
            f"openssl x509 -in {lab.certs}/server.pem -pubkey -noout | openssl pkey -pubin -outform der | "
            "openssl dgst -sha256 -binary | base64", shell=True, capture_output=True, text=True, check=True).stdout.strip()
        profile = tempfile.mkdtemp(prefix="maillab-chromium-")
        try:
            out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                  "--disable-component-update", "--disable-sync", "--no-first-run",
                                  f"--user-data-dir={profile}",
                                  # Trust exactly the lab server's key (its SPKI hash), not "any certificate".
                                  f"--ignore-certificate-errors-spki-list={spki}",
                                  "--dump-dom", f"https://bob%40447.edu:{l2.bob}@localhost:{l2.retriever.port}/"],
                                 capture_output=True, text=True, timeout=120)
        finally:
            shutil.rmtree(profile, ignore_errors=True)
        dom = out.stdout
        assert "<h1>Inbox of bob@447.edu</h1>" in dom, dom[:500] + out.stderr[-1000:]
        assert dom.count('class="message"') == 2
        assert "First &lt;note&gt;" in dom and "Second message" in dom
        assert "Hello Bob &amp; friends" in dom


@test
def concurrent_readers_while_mail_arrives(lab):
    with Lab2(lab) as l2:
        errors = []
        stop = threading.Event()

        def reader():
            try:
                conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
                auth = {"Authorization": basic("bob@447.edu", l2.bob)}
                last = 0
                while not stop.is_set():
                    conn.request("GET", "/mailboxes/bob@447.edu/messages?limit=1", headers=auth)
                    resp = conn.getresponse()
                    data = json.loads(resp.read())
                    assert resp.status == 200
                    assert data["total"] >= last  # never goes backwards, never a half-written state
                    last = data["total"]
                conn.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        readers = [threading.Thread(target=reader) for _ in range(6)]
        for t in readers:
            t.start()
        for i in range(15):
            l2.send("ana", l2.ana, "bob", f"burst {i}", "x\n")
        stop.set()
        for t in readers:
            t.join()
        assert not errors, errors
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
        assert json.loads(body)["total"] == 16
        # Ana reads her own (empty) mailbox at the same time: never Bob's mail.
        code, body = l2.curl(l2.url("/mailboxes/ana@447.edu/messages"), user="ana@447.edu", password=l2.ana)
        assert code == 200 and json.loads(body)["total"] == 0


@test
def retriever_answers_503_when_full(lab):
    with Lab2(lab, {"retriever.maxConnections": 2}) as l2:
        held = []
        for _ in range(2):
            conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
            conn.request("GET", "/mailboxes/bob@447.edu/messages", headers={"Authorization": basic("bob@447.edu", l2.bob)})
            assert conn.getresponse().read()
            held.append(conn)
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
        assert code == 503 and "service_unavailable" in body
        for conn in held:
            conn.close()


@test
def retriever_lockout_is_shared_with_the_sender(lab):
    with Lab2(lab, {"auth.guessBurst": 3, "auth.guessRefillSeconds": 3600}) as l2:
        codes = [l2.curl("--interface", "127.0.0.7", l2.url("/"), password="00000447")[0] for _ in range(4)]
        assert codes == [401, 401, 401, 429], codes
        code, _ = l2.curl("--interface", "127.0.0.8", l2.url("/"))
        assert code == 429  # the right password from a stranger's address is not checked
        # The budget lives in the database: the sender checks no more guesses at the account either.
        c = Conversation(lab, l2.sender.port, source="127.0.0.9")
        c.cmd("EHLO x")
        reply = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0bob@447.edu\0" + b"11111447").decode())
        c.close()
        assert reply.startswith("454 4.7.0"), reply


@test
def both_servers_start_together_on_a_fresh_checkout(lab):
    """A student starts the sender and the retriever at the same moment: no certificates, no
    database yet. One creates them, the other waits; both come up."""
    fresh = lab.path("fresh")
    os.makedirs(fresh)
    db = os.path.join(fresh, "maillab.db")
    certs = os.path.join(fresh, "certs")
    procs = [subprocess.Popen([lab.exe(name), "--port=0", f"--db={db}", f"--certs={certs}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in ("senderserver", "retrieverserver")]
    try:
        for p in procs:
            line = p.stdout.readline()
            assert line.startswith("ready port="), p.stderr.read() if p.poll() is not None else line
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
    out = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(certs, "ca.pem"), os.path.join(certs, "server.pem")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@test
def a_parallel_guessing_attack_on_both_servers_gets_no_more_than_the_budget(lab):
    """A short run of the benchmark's attack tool: 32 connections over both servers from 40
    loopback addresses. Checked guesses never exceed the budget, and the owner still gets in
    afterwards from where she logged in before. (A guesser that also uses the owner's own address
    spends her budget there too: docs/design.md, "On one machine".)"""
    from tests.bench import attack
    settings = {"auth.guessBurst": 4, "auth.guessRefillSeconds": 3600}
    with Server(lab, "senderserver", settings) as sender, \
            Server(lab, "retrieverserver", settings, db=sender.db) as retriever:
        password = register(lab, sender.port, "victim")
        attack.owner_logs_in(lab.bin, sender.port, lab.ca, "victim@447.edu", password)
        counts = attack.attack(sender.port, retriever.port, lab.ca, "victim@447.edu", 3, 32,
                               attack.sources(40, include_owner=False))
        assert counts["refused"] > 50, counts  # the attack really ran
        assert counts["checked"] == 4, counts  # the strangers' one shared budget, exactly
        out = run_client(lab, sender.port, ["--host", "127.0.0.1", "--servername", "localhost", "--user", "victim",
                                            "--password", password])
        assert out.returncode == 0, out.stderr


@test
def the_event_loop_core_serves_keep_alive_gets_401_and_503(lab):
    """retriever.core = events: curl and http.client GETs over TLS 1.3 on kept-open connections, a
    401 without credentials, and a 503 past maxConnections, as the thread core answers them."""
    with Lab2(lab, {"retriever.core": "events", "retriever.maxConnections": 2}) as l2:
        assert "core=events" in l2.retriever.log_text()
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"), l2.url("/mailboxes/bob@447.edu/messages/1"))
        assert code == 200 and '"subject":"First <note>"' in body, body
        conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
        auth = {"Authorization": basic("bob@447.edu", l2.bob)}
        for _ in range(5):
            conn.request("GET", "/mailboxes/bob@447.edu/messages", headers=auth)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Connection") == "Keep-Alive", resp.getheaders()
            assert resp.getheader("Server") == "maillab-retriever"
            assert json.loads(resp.read())["total"] == 1
        assert conn.sock.version() == "TLSv1.3"
        conn.request("GET", "/mailboxes/bob@447.edu/messages")
        resp = conn.getresponse()
        assert resp.status == 401 and resp.getheader("WWW-Authenticate", "").startswith("Basic realm=")
        resp.read()
        # A wrong password takes the slow hash on a worker; the answer closes the connection.
        conn.request("GET", "/mailboxes/bob@447.edu/messages", headers={"Authorization": basic("bob@447.edu", "wrong")})
        resp = conn.getresponse()
        assert resp.status == 401 and resp.getheader("Connection") == "Close"
        resp.read()
        conn.close()
        held = []
        for _ in range(2):
            c = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
            c.request("GET", "/mailboxes/bob@447.edu/messages", headers=auth)
            assert c.getresponse().read()
            held.append(c)
        code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages"))
        assert code == 503 and "service_unavailable" in body, (code, body)
        for c in held:
            c.close()
        log = l2.retriever.log_after_stop()
        assert "event=refused" in log and "answered=503" in log, log
        ids = {line.split("id=")[1].split()[0] for line in log.splitlines() if "event=request" in line and "status=401" in line}
        assert len(ids) == 1, ids  # both 401s came over the kept-open connection


@test
def the_event_loop_core_waits_for_a_slow_reader_of_a_large_answer(lab):
    """retriever.core = events: a client that reads an 8 MB raw message slowly keeps its connection
    past keepAliveSeconds (the keep-alive wait starts once the answer has left), and then gets its
    next answer on the same connection."""
    import time
    with Lab2(lab, {"retriever.core": "events", "retriever.keepAliveSeconds": 1}) as l2:
        l2.send("ana", l2.ana, "bob", "Big", "x" * 70 + "\n" * 1 + ("y" * 76 + "\n") * (8 * 1024 * 1024 // 77))
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", l2.retriever.port))
        sock = lab.ssl_context().wrap_socket(raw, server_hostname="localhost")
        request = (f"GET /mailboxes/bob@447.edu/messages/2/raw HTTP/1.1\r\nHost: localhost\r\n"
                   f"Authorization: {basic('bob@447.edu', l2.bob)}\r\n\r\n").encode()
        sock.sendall(request)
        time.sleep(2.5)  # past keepAliveSeconds with most of the answer unsent
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
        assert length > 8_000_000, head
        while len(body) < length:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(body)} of {length} bytes"
            body += chunk
        sock.sendall(request.replace(b"/2/raw", b"/1"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK"), "the connection stays for the next request"
        sock.close()


@test
def the_event_loop_core_out_of_descriptors_waits_instead_of_spinning(lab):
    """retriever.core = events with 64 descriptors: clients past them wait in the backlog while the
    loops sleep (no busy accept loop), and are served once descriptors are free again."""
    import resource
    import time

    if os.path.basename(lab.build) == "asan":
        # UBSan's vptr check tests memory with a pipe: with every descriptor taken it fails, and every
        # new virtual call is reported as "invalid vptr" (sanitizer_common's IsAccessibleMemoryRange).
        raise Skip("under the sanitizers: UBSan needs a spare descriptor for its own checks")

    def few_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    with Server(lab, "retrieverserver", {"retriever.core": "events", "retriever.maxConnectionsPerAddress": 0,
                                         "retriever.events.threads": 1}, preexec_fn=few_files) as server:
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(80)]

        def cpu():
            with open(f"/proc/{server.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(1.0)
        assert cpu() - before < 0.5, "the loop spun while out of descriptors"
        for s in held:
            s.close()
        conn = http.client.HTTPSConnection("localhost", server.port, context=lab.ssl_context(), timeout=30)
        conn.request("GET", "/mailboxes/bob@447.edu/messages")
        assert conn.getresponse().status == 401
        conn.close()
