"""Connections that would hoard the servers: the per-address and total limits answered at once
(421 / 503) while other addresses are served, and total deadlines that a client sending a byte at a
time cannot stretch (the TLS handshake, an SMTP command, an HTTP request head). Each test sets small
limits and checks what the client sees; the pacing sleeps are the attack itself, not a wait for the
server (timings are measured in `make bench-attack`, never asserted here)."""

import select
import socket
import time

from tests.e2e.harness import Conversation, Server, test, tls_connect


def closed_or_answered(sock, timeout=10):
    """What the server does next: b"" when it closed the connection, else the bytes it sent."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096)
    except ConnectionResetError:
        return b""


def trickle(sock, data, pause=0.4):
    """Sends `data` a byte at a time; returns how many bytes went out before the server ended the
    connection or answered (then the rest is not sent)."""
    for i, byte in enumerate(data):
        if select.select([sock], [], [], 0)[0]:
            return i  # readable: a reply or the server's close
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError, OSError):
            return i
        time.sleep(pause)
    return len(data)


@test
def one_address_cannot_take_every_smtp_connection(lab):
    with Server(lab, "senderserver", {"sender.maxConnectionsPerAddress": 3}) as server:
        held = [Conversation(lab, server.port, source="127.0.0.5") for _ in range(3)]
        fourth = Conversation(lab, server.port, source="127.0.0.5")
        assert fourth.banner[0].startswith("421 4.7.0") and "from your address" in fourth.banner[0], fourth.banner
        other = Conversation(lab, server.port, source="127.0.0.6")
        assert other.banner[0].startswith("220"), other.banner
        for c in held:
            c.cmd("QUIT")
            c.close()
        # The places come back when the connections end.
        again = Conversation(lab, server.port, source="127.0.0.5")
        assert again.banner[0].startswith("220"), again.banner
        assert "reason=max-connections-per-address answered=421" in server.log_after_stop()


@test
def a_flood_of_silent_sockets_is_closed_at_once_and_others_are_served(lab):
    """Past the per-address limit, sockets that never start TLS are closed without a thread waiting
    on their handshake (maxRefusalHandshakes 0: no refusal gets one), and a new address is served."""
    settings = {"sender.maxConnectionsPerAddress": 2, "sender.maxRefusalHandshakes": 0}
    with Server(lab, "senderserver", settings) as server:
        silent = [socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.7", 0))
                  for _ in range(40)]
        try:
            # Two hold their places (waiting for a ClientHello); every other one is closed.
            closed, deadline = set(), time.monotonic() + 20
            while len(closed) < 38 and time.monotonic() < deadline:
                ready = select.select([s for s in silent if s not in closed], [], [], 1)[0]
                for s in ready:
                    assert closed_or_answered(s) == b"", "a refused socket got bytes before its handshake"
                    closed.add(s)
            assert len(closed) == 38, f"{len(closed)} of the 38 sockets past the limit were closed"
            assert not select.select([s for s in silent if s not in closed], [], [], 0.5)[0]
            served = Conversation(lab, server.port, source="127.0.0.8")
            assert served.banner[0].startswith("220"), served.banner
            served.cmd("QUIT")
            served.close()
        finally:
            for s in silent:
                s.close()
        assert server.log_after_stop().count("reason=max-connections-per-address answered=closed") == 38


@test
def a_tls_handshake_sent_a_byte_at_a_time_ends_at_the_total_deadline(lab):
    # A per-read timeout of 2 s would never fire at a byte every 0.4 s; the total deadline does.
    with Server(lab, "senderserver", {"sender.timeout.handshake": 2}) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) * 8
        sent = trickle(sock, hello)
        sock.close()
        assert sent < len(hello), "the server waited for the whole slow handshake"
        assert "reason=handshake-timeout" in server.log_after_stop()


@test
def an_smtp_command_sent_a_byte_at_a_time_ends_at_the_command_deadline(lab):
    with Server(lab, "senderserver", {"sender.timeout.command": 2}) as server:
        c = Conversation(lab, server.port)
        c.cmd("EHLO slow")
        line = b"NOOP " + b"x" * 60
        sent = trickle(c.sock, line)
        assert sent < len(line), "the server waited for the whole slow command"
        assert c.reply()[0].startswith("421 4.4.2"), "expected the timeout reply"


@test
def an_http_request_head_sent_slowly_ends_at_the_head_deadline(lab):
    with Server(lab, "retrieverserver", {"retriever.timeout.requestHead": 2}) as server:
        sock = tls_connect(lab, server.port)
        head = b"GET /mailboxes HTTP/1.1\r\nHost: localhost\r\n" + b"X-Slow: 1\r\n" * 40
        sent = 0
        for line in head.split(b"\n"):
            try:
                sock.send(line + b"\n")
            except (BrokenPipeError, ConnectionResetError, OSError):
                break
            sock.settimeout(0.4)
            try:
                if sock.recv(4096) == b"":
                    break
            except socket.timeout:
                pass
            except (ConnectionResetError, OSError):
                break
            sent += 1
        sock.close()
        assert sent < head.count(b"\n"), "the server waited for the whole slow head"
        assert "reason=request-head-timeout" in server.log_after_stop()


@test
def one_address_cannot_take_every_http_connection(lab):
    with Server(lab, "retrieverserver", {"retriever.maxConnectionsPerAddress": 2}) as server:
        held = [tls_connect(lab, server.port, source="127.0.0.9") for _ in range(2)]
        for h in held:
            h.do_handshake()
        third = tls_connect(lab, server.port, source="127.0.0.9")
        answer = b""
        while True:
            chunk = third.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ") and b"from your address" in answer, answer
        assert b"Retry-After: 5" in answer and b'"code":"service_unavailable"' in answer, answer
        other = tls_connect(lab, server.port, source="127.0.0.10")
        other.sendall(b"GET /mailboxes/ana@447.edu/messages HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert other.recv(65536).startswith(b"HTTP/1.1 401 "), "another address is served"
        for s in held + [third, other]:
            s.close()


@test
def a_full_server_makes_room_by_closing_the_longest_silent_connection(lab):
    """Silent sockets from a few addresses fill every place (each address under its own limit); a
    newcomer is still served: the connection that waited longest for its client gives way. The same
    for the retriever, where an idle keep-alive connection gives way."""
    settings = {"sender.maxConnections": 4, "sender.maxConnectionsPerAddress": 2, "sender.minWaitToEvictMs": 200,
                "retriever.maxConnections": 2, "retriever.maxConnectionsPerAddress": 0, "retriever.minWaitToEvictMs": 200}
    with Server(lab, "senderserver", settings) as sender, Server(lab, "retrieverserver", settings, db=sender.db) as retriever:
        silent = [socket.create_connection(("127.0.0.1", sender.port), source_address=(f"127.0.0.{20 + i // 2}", 0))
                  for i in range(4)]
        time.sleep(0.4)  # the attack: they say nothing past minWaitToEvictMs
        newcomer = Conversation(lab, sender.port, source="127.0.0.30")
        assert newcomer.banner[0].startswith("220"), newcomer.banner
        # One of them (the one the server saw waiting longest: they came within microseconds) was closed.
        readable, _, _ = select.select(silent, [], [], 5)
        assert readable and all(closed_or_answered(s, timeout=1) == b"" for s in readable), \
            "a silent socket should have been closed to make room"
        assert len(readable) == 1, f"{len(readable)} closed: only one newcomer came"
        newcomer.cmd("QUIT")
        newcomer.close()
        for s in silent:
            s.close()
        assert "event=evicted" in sender.log_after_stop()
        # The retriever: two idle keep-alive connections hold both places; a third client is served.
        idle = [tls_connect(lab, retriever.port) for _ in range(2)]
        for s in idle:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 401"), "an answer, then the connection stays open"
        time.sleep(0.4)
        third = tls_connect(lab, retriever.port)
        third.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert third.recv(4096).startswith(b"HTTP/1.1 401")
        third.close()
        for s in idle:
            s.close()
