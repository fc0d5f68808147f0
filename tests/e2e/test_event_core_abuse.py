"""The retriever's event-loop core (retriever.core = events) against the abuse the thread core
withstands (issue 22, docs/design.md "Not yet the default"): a client that pipelines without reading,
a loop held by an account's check on a worker, a hang-up while a worker has the request, a full or
late worker queue, a sent answer's response budget, and the log lines and 400s of bad clients. Each
test forces the event core; where a worker must be kept busy, the test holds SQLite's write lock, so
that a guess's takeGuess waits (store.busyTimeoutMs) for as long as the test wants."""

import json
import os
import socket
import sqlite3
import ssl
import struct
import time

from tests.e2e.harness import Server, tls_connect, test
from tests.e2e.test_retriever import Lab2, basic

EVENTS = {"retriever.core": "events", "retriever.events.threads": 1}


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get(path, auth=None):
    head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
    if auth:
        head += f"Authorization: {auth}\r\n"
    return (head + "\r\n").encode()


def answer(sock):
    """One whole response (head and Content-Length body): (status, headers dict, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer; had {data[:200]!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode(errors="replace").split("\r\n")
    headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed in the body"
        body += chunk
    return int(lines[0].split(" ")[1]), headers, body[:length]


def no_answer_yet(sock):
    sock.settimeout(0.2)
    try:
        return not sock.recv(1)  # "" would be a close: not an answer either
    except (socket.timeout, ssl.SSLWantReadError):
        return True
    finally:
        sock.settimeout(30)


def wait_for_log(server, text, within=30):
    """The server's log line that says a request reached its point (not a sleep: polled until seen)."""
    end = time.monotonic() + within
    while text not in server.log_text():
        assert time.monotonic() < end, f"never logged: {text}\n{server.log_text()[-3000:]}"
        time.sleep(0.02)


class WriteLock:
    """SQLite's write lock, held by the test: a takeGuess (a wrong password's guess) waits for it."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, timeout=0, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self):
        if self.db:
            self.db.execute("ROLLBACK")
            self.db.close()
            self.db = None


def wrong_password_request(lab, l2, n, user="bob"):
    """A new connection that asks for `user`'s messages (?n=`n`) with wrong password `n`: a login
    whose guess is checked on a worker. Returns its socket, the answer unread."""
    s = tls_connect(lab, l2.retriever.port)
    s.sendall(get(f"/mailboxes/{user}@447.edu/messages?n={n}", basic(f"{user}@447.edu", f"wrong{n}")))
    return s


def fill_the_login_worker_and_its_queue(lab, l2, user="bob"):
    """Two wrong passwords for `user`, with the test holding SQLite's write lock (WriteLock) and the
    retriever at one login worker and one queued request: the first is on the worker (its guess waits
    for the store), the second queued. Each is waited for in the verbose log. Returns their sockets."""
    socks = []
    for n in (1, 2):
        socks.append(wrong_password_request(lab, l2, n, user))
        wait_for_log(l2.retriever, f"C: GET /mailboxes/{user}@447.edu/messages?n={n}")
    return socks


def reset(sock):
    """Closes with a TCP RST (SO_LINGER 0), as a client that crashes or a middlebox does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    socket.socket.close(sock)


@test
def the_event_loop_core_retriever_bounds_a_pipelining_client_that_never_reads(lab):
    """Tiny GETs pipelined without reading a single answer: reading pauses while an answer drains,
    so the server's memory stays bounded (was: every byte kept in pending_) and another client is served."""
    # No keep-alive limit: else the 1,000th answer closes the connection and the rest is read and dropped.
    with Server(lab, "retrieverserver", dict(EVENTS, **{"retriever.maxKeepAliveRequests": 0})) as server:
        probe = tls_connect(lab, server.port)
        probe.sendall(get("/"))
        assert answer(probe)[0] == 401
        before = rss_kb(server.proc.pid)
        flood = tls_connect(lab, server.port)
        flood.settimeout(3)
        chunk = get("/") * 2000  # 64 KB of requests
        sent, limit = 0, 48 * 1024 * 1024
        try:
            while sent < limit:
                flood.sendall(chunk)
                sent += len(chunk)
        except (socket.timeout, ssl.SSLError, OSError):
            pass  # the server stopped reading: TCP's flow control holds the rest with us
        grown = rss_kb(server.proc.pid) - before
        # (Under ASan the quarantine holds what was freed: the bound is checked by the plain builds.)
        assert lab.sanitized or grown < 24 * 1024, f"RSS grew {grown} kB after {sent} bytes of pipelined requests"
        assert sent < limit, "the server read every pipelined request while its answers waited"
        probe.sendall(get("/"))
        assert answer(probe)[0] == 401, "another client is still served"
        reset(flood)
        probe.close()


@test
def the_event_loop_core_retriever_loop_is_not_held_by_an_accounts_check_on_a_worker(lab):
    """A wrong password for bob is checked on a worker, which holds bob's account check (here while
    its guess waits for the store). A cached right login for bob from a new address would have taken
    that lock on the loop (and then written the trusted source there): it is handed to a worker
    instead, and another client's request on the same loop is answered before either."""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.events.workers": 2, "store.busyTimeoutMs": 60000})
    with Lab2(lab, settings) as l2:
        port = l2.retriever.port
        first = tls_connect(lab, port)
        first.sendall(get("/mailboxes/bob@447.edu/messages", basic("bob@447.edu", l2.bob)))
        assert answer(first)[0] == 200  # bob's password is now in the cache
        first.close()
        other = tls_connect(lab, port)
        for _ in range(3):  # ana's: cached and checked from here, then fresh
            other.sendall(get("/mailboxes/ana@447.edu/messages", basic("ana@447.edu", l2.ana)))
            assert answer(other)[0] == 200
        lock = WriteLock(l2.sender.db)
        try:
            wrong = tls_connect(lab, port)
            wrong.sendall(get("/mailboxes/bob@447.edu/messages", basic("bob@447.edu", "wrong-password")))
            cached = tls_connect(lab, port, source="127.0.0.3")
            cached.sendall(get("/mailboxes/bob@447.edu/messages", basic("bob@447.edu", l2.bob)))
            other.settimeout(20)
            other.sendall(get("/mailboxes/ana@447.edu/messages", basic("ana@447.edu", l2.ana)))
            try:
                status = answer(other)[0]
            except socket.timeout:
                raise AssertionError("the loop waited for bob's check on a worker: another client got no answer")
            assert status == 200
            assert no_answer_yet(wrong), "the wrong password was answered while its guess could not be paid"
        finally:
            lock.release()
        assert answer(wrong)[0] == 401
        assert answer(cached)[0] == 200
        for s in (wrong, cached, other):
            s.close()


@test
def the_event_loop_core_retriever_ends_a_connection_that_hangs_up_while_a_worker_has_it(lab):
    """A client resets its connection while a worker checks its password: the loop ends it at once
    instead of spinning on EPOLLHUP/EPOLLERR until the worker answers."""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.verbose": "true", "store.busyTimeoutMs": 60000})
    with Lab2(lab, settings) as l2:
        lock = WriteLock(l2.sender.db)
        try:
            gone = tls_connect(lab, l2.retriever.port)
            gone.sendall(get("/mailboxes/bob@447.edu/messages?gone=1", basic("bob@447.edu", "wrong-password")))
            wait_for_log(l2.retriever, "C: GET /mailboxes/bob@447.edu/messages?gone=1")
            reset(gone)
            before = cpu_seconds(l2.retriever.proc.pid)
            time.sleep(1.0)
            used = cpu_seconds(l2.retriever.proc.pid) - before
            assert used < 0.5, f"the loop spun on a hung-up connection: {used:.2f} s of CPU in 1 s"
            wait_for_log(l2.retriever, "reset by peer")  # its disconnect line, with the socket's own error
        finally:
            lock.release()
        s = tls_connect(lab, l2.retriever.port)
        s.sendall(get("/"))
        assert answer(s)[0] == 401
        s.close()


@test
def the_event_loop_core_retriever_answers_503_when_its_workers_are_full_or_late(lab):
    """One worker, busy (its guess waits for the store); one request may wait for it. A third gets
    503 at once (the queue is full), the queued one 503 once it has waited past
    auth.hashWaitMilliseconds: the thread core's answer to a login that found no hash place."""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.verbose": "true", "retriever.events.workers": 1,
                               "retriever.events.maxQueuedRequests": 1, "auth.hashWaitMilliseconds": 1000,
                               "store.busyTimeoutMs": 3000})
    with Lab2(lab, settings) as l2:
        lock = WriteLock(l2.sender.db)
        try:
            socks = fill_the_login_worker_and_its_queue(lab, l2)
            third = wrong_password_request(lab, l2, 3)
            statuses = [answer(s) for s in socks + [third]]
        finally:
            lock.release()
        assert statuses[0][0] == 401, statuses[0]
        for status, headers, body in statuses[1:]:
            assert status == 503, (status, body)
            assert "Authentication temporarily unavailable" in json.loads(body)["error"]["message"]
        log = l2.retriever.log_after_stop()
        assert log.count("status=503") == 2 and 'tried="bob@447.edu"' in log, log[-3000:]


@test
def the_event_loop_core_retriever_frees_a_sent_answers_response_budget(lab):
    """http.maxResponseBytesInFlight counts a response until it is sent, not until the connection's
    next one: a client that keeps its connection open after reading does not hold the budget."""
    with Lab2(lab, dict(EVENTS, **{"http.maxResponseBytesInFlight": 100})) as l2:
        raw = get("/mailboxes/bob@447.edu/messages/1/raw", basic("bob@447.edu", l2.bob))
        kept = tls_connect(lab, l2.retriever.port)
        kept.sendall(raw)
        assert answer(kept)[0] == 200
        other = tls_connect(lab, l2.retriever.port)
        other.sendall(raw)
        status, _, body = answer(other)
        assert status == 200, (status, body)  # was 503: the first answer, long sent, still held its place
        kept.close()
        other.close()


@test
def the_event_loop_core_retriever_logs_why_a_connection_was_reset(lab):
    """A client's RST after an answer: the disconnect line names the socket's error, as the thread
    core's does (errno was cleared before it was read: no line at all)."""
    with Server(lab, "retrieverserver", dict(EVENTS)) as server:
        s = tls_connect(lab, server.port)
        s.sendall(get("/"))
        assert answer(s)[0] == 401
        reset(s)
        wait_for_log(server, "event=disconnect")
        log = server.log_after_stop()
        assert "reset by peer" in log, log


@test
def the_event_loop_core_retriever_logs_plain_http_under_the_connections_one_id(lab):
    """Plain HTTP on the HTTPS port: one connection, one id (the first connection is id=1, the next
    id=2), and the line as the thread core's gate writes it."""
    with Server(lab, "retrieverserver", dict(EVENTS)) as server:
        plain = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        plain.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert plain.recv(4096).startswith(b"HTTP/1.1 400")
        plain.close()
        s = tls_connect(lab, server.port)
        s.sendall(get("/"))
        assert answer(s)[0] == 401
        s.close()
        log = server.log_after_stop()
        lines = [l for l in log.splitlines() if "event=plaintext-on-tls" in l]
        assert len(lines) == 1 and "id=1 " in lines[0] and "waited_ms=0" in lines[0], log
        assert any("id=2 " in l and "status=401" in l for l in log.splitlines()), log


@test
def the_event_loop_core_retriever_says_why_a_request_head_is_refused(lab):
    """A head the parser or its limits refuse gets a 400 whose body says what was wrong (was a bare
    400), and the connection closes."""
    cases = [(b"GARBAGE\r\n\r\n", "Malformed request head"),
             (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X" * 300 + b": y\r\n\r\n", "Header field name longer than 256")]
    with Server(lab, "retrieverserver", dict(EVENTS)) as server:
        for request, why in cases:
            s = tls_connect(lab, server.port)
            s.sendall(request)
            status, headers, body = answer(s)
            assert status == 400 and headers.get("connection") == "Close", (status, headers)
            assert why in json.loads(body)["error"]["message"], body
            s.close()


def big_message(l2, megabytes):
    """Bob's message 2: `megabytes` MB of text, sent through the sender."""
    l2.send("ana", l2.ana, "bob", "Big", ("y" * 76 + "\n") * (megabytes * 1024 * 1024 // 77))


@test
def the_event_loop_core_retriever_frees_an_idle_connections_last_large_answer(lab):
    """Keep-alive connections that each fetched a 6 MB message and then sit idle: the answer's buffer
    is freed once sent (it was kept until the connection's next answer, outside the response budget,
    so 64 connections could hold 64 large answers), and the server's memory stays bounded."""
    with Lab2(lab, dict(EVENTS)) as l2:
        big_message(l2, 6)
        raw = get("/mailboxes/bob@447.edu/messages/2/raw", basic("bob@447.edu", l2.bob))
        idle = []
        for n in range(12):
            s = tls_connect(lab, l2.retriever.port, timeout=30)
            s.sendall(raw)
            status, _, body = answer(s)
            assert status == 200 and len(body) > 6_000_000, (status, len(body))
            idle.append(s)  # kept open, idle
            if n == 0:
                before = rss_kb(l2.retriever.proc.pid)  # one answer made and sent: the allocator is warm
        grown = rss_kb(l2.retriever.proc.pid) - before
        # (Under ASan the quarantine holds what was freed: the bound is checked by the plain builds.)
        assert lab.sanitized or grown < 24 * 1024, \
            f"RSS grew {grown} kB with 11 more idle connections that had fetched 6 MB each"
        for s in idle:
            s.close()


@test
def the_event_loop_core_retriever_answers_a_cheap_request_while_workers_read_large_messages(lab):
    """Four clients ask for a 3 MB message as JSON (read, MIME-decoded, rendered: work for a
    worker), then another asks for its cached listing: on the single loop that listing is answered
    before the last of the large ones (each large one was made on the loop, holding every other
    connection and the accepts)."""
    import select
    lab.require_sqlite("on PostgreSQL every request goes to a worker: nothing heavy runs on the loop")
    with Lab2(lab, dict(EVENTS, **{"retriever.events.workers": 2})) as l2:
        big_message(l2, 3)
        auth = basic("bob@447.edu", l2.bob)
        socks = []
        for _ in range(5):  # each logs in first: its login is cached, its listing too
            s = tls_connect(lab, l2.retriever.port, timeout=30)
            s.sendall(get("/mailboxes/bob@447.edu/messages", auth))
            assert answer(s)[0] == 200
            socks.append(s)
        large, cheap = socks[:4], socks[4]
        for s in large:
            s.sendall(get("/mailboxes/bob@447.edu/messages/2", auth))
        cheap.sendall(get("/mailboxes/bob@447.edu/messages", auth))
        order, waiting = [], {s.fileno(): s for s in socks}
        while waiting:
            ready, _, _ = select.select(list(waiting), [], [], 30)
            assert ready, f"no answer within 30 s; answered so far: {order}"
            for fd in ready:
                order.append(socks.index(waiting.pop(fd)))
        assert order.index(4) < order.index(3), f"first bytes of each answer, in order (4: the listing): {order}"
        statuses = [answer(s)[0] for s in socks]
        assert statuses == [200] * 5, statuses
        for s in socks:
            s.close()


@test
def the_event_loop_core_retriever_reads_the_next_request_after_a_full_queue_503(lab):
    """The worker queue is full: the 503 is sent at once and the connection stays usable, its next
    keep-alive request read and answered (reading stayed paused after the 503: never answered)."""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.verbose": "true", "retriever.events.workers": 1,
                               "retriever.events.maxQueuedRequests": 1, "store.busyTimeoutMs": 60000})
    with Lab2(lab, settings) as l2:
        lock = WriteLock(l2.sender.db)
        try:
            socks = fill_the_login_worker_and_its_queue(lab, l2)
            third = wrong_password_request(lab, l2, 3)
            status, headers, _ = answer(third)
            assert status == 503 and headers.get("connection") == "Keep-Alive", (status, headers)
            third.sendall(get("/"))
            third.settimeout(10)
            try:
                status = answer(third)[0]
            except socket.timeout:
                raise AssertionError("the request after the queue-full 503 was never read")
            assert status == 401
        finally:
            lock.release()
        assert [answer(s)[0] for s in socks] == [401, 401]
        for s in socks + [third]:
            s.close()


@test
def the_event_loop_core_retriever_answers_pipelined_requests_once_each_while_the_queue_is_full(lab):
    """A message (made on a worker) with two requests pipelined behind it that each need a login
    worker, while the login queue is full: 200, 503, 503 in order, then the next request's own answer,
    nothing more. (The queue-full 503 was once answered inside the parse of the waiting requests that
    dispatched it: the same request parsed again, a 503 per level while the queue stayed full, until
    the stack ran out.)"""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.verbose": "true", "retriever.events.workers": 1,
                               "retriever.events.maxQueuedRequests": 1, "store.busyTimeoutMs": 60000})
    with Lab2(lab, settings) as l2:
        port = l2.retriever.port
        auth = basic("bob@447.edu", l2.bob)
        piped = tls_connect(lab, port)
        piped.sendall(get("/mailboxes/bob@447.edu/messages", auth))
        assert answer(piped)[0] == 200  # bob's login cached, this address trusted
        lock = WriteLock(l2.sender.db)
        try:
            # ana's guesses: bob's own check is not held, so his cached login is answered on the loop
            socks = fill_the_login_worker_and_its_queue(lab, l2, "ana")
            piped.sendall(get("/mailboxes/bob@447.edu/messages/1", auth) +
                          b"".join(get(f"/mailboxes/ana@447.edu/messages?p={n}", basic("ana@447.edu", f"bad{n}"))
                                   for n in (1, 2)))
            answers = [answer(piped) for _ in range(3)]
            statuses = [a[0] for a in answers]
            assert statuses == [200, 503, 503], [(a[0], a[2][:200]) for a in answers]
            piped.sendall(get("/"))
            assert answer(piped)[0] == 401
            assert no_answer_yet(piped), "a request was answered more than once"
        finally:
            lock.release()
        assert [answer(s)[0] for s in socks] == [401, 401]
        log = l2.retriever.log_text()
        for n in (1, 2):
            assert log.count(f"C: GET /mailboxes/ana@447.edu/messages?p={n} ") == 1, log[-3000:]
        for s in socks + [piped]:
            s.close()


@test
def the_event_loop_core_retriever_records_provenance_while_logins_fill_the_worker_queue(lab):
    """Class-server provenance on: each login's TLS session is recorded (a store write, on a worker).
    With the login workers busy and their queue full (here wrong passwords whose guesses wait for the
    store; a flood of unknown names does the same with a hash each), a student whose login is cached
    still gets a 200: the record goes to its own workers (it shared the logins' queue: 503)."""
    lab.require_sqlite("the test holds SQLite's write lock to keep a worker busy")
    settings = dict(EVENTS, **{"retriever.verbose": "true", "retriever.events.workers": 1,
                               "retriever.events.maxQueuedRequests": 1, "store.busyTimeoutMs": 60000,
                               "store.provenance": "true"})
    with Lab2(lab, settings) as l2:
        port = l2.retriever.port
        ana = get("/mailboxes/ana@447.edu/messages", basic("ana@447.edu", l2.ana))
        first = tls_connect(lab, port)
        first.sendall(ana)
        assert answer(first)[0] == 200  # ana's password cached, this address trusted
        first.close()
        lock = WriteLock(l2.sender.db)
        try:
            socks = fill_the_login_worker_and_its_queue(lab, l2)
            cached = tls_connect(lab, port)  # a new TLS session: its record is a store write
            cached.sendall(ana)
            assert no_answer_yet(cached), "answered before its record could be written (or 503 at once)"
        finally:
            lock.release()
        status, _, body = answer(cached)
        assert status == 200, (status, body)
        # (Failed once, in CI's Debian testing chroot in session 16, not reproduced here: the answers and
        # the log's end say which and why, next time.)
        guesses = [answer(s) for s in socks]
        assert [g[0] for g in guesses] == [401, 401], ([(g[0], g[2][:300]) for g in guesses],
                                                       l2.retriever.log_text()[-3000:])
        for s in socks + [cached]:
            s.close()


@test
def the_event_loop_core_retriever_sizes_its_workers_by_the_store(lab):
    """retriever.events.workers 0 (the default): 2 workers per pool on SQLite, where the loop answers
    what it can; on PostgreSQL, where every request goes to a worker, store.maxConnections of them
    (2 would have let 2 queries run where the thread core runs 16)."""
    settings = dict(EVENTS, **{"store.maxConnections": 5})
    with Server(lab, "retrieverserver", settings) as server:
        s = tls_connect(lab, server.port)
        s.sendall(get("/"))
        assert answer(s)[0] == 401
        s.close()
        log = server.log_after_stop()
    want = "workers=5" if lab.postgres else "workers=2"
    assert want in log, log[-2000:]
