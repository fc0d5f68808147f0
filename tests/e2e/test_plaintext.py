"""Plaintext on a TLS port (issue 19, a first-day trap): a plain SMTP client on the implicit-TLS port
gets a clear-text 421 naming SMTP_SSL / smtps:// / s_client within seconds, plain HTTP on the HTTPS
port a clear-text 400 naming the https:// URL; a TLS client that is slow after its first byte still
completes its handshake, and the STARTTLS port (plain SMTP by design) is unaffected."""

import os
import re
import smtplib
import socket
import ssl
import subprocess
import time

from tests.e2e.harness import Server, test, says_no_application_protocol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setting_default(properties, key):
    with open(os.path.join(ROOT, properties)) as f:
        found = re.search(rf"(?m)^{re.escape(key)}\s*=\s*(\S+)", f.read())
    assert found, f"{key} is not in {properties}"
    return found.group(1)


@test
def smtplib_without_tls_on_the_implicit_port_gets_a_clear_421_in_seconds(lab):
    hint_ms = int(setting_default("sender/senderserver.properties", "sender.timeout.plaintextHintMs"))
    assert 500 <= hint_ms <= 5000, hint_ms
    with Server(lab, "senderserver") as server:  # the default settings
        started = time.monotonic()
        try:
            smtplib.SMTP("localhost", server.port, timeout=20)
            raise AssertionError("smtplib.SMTP connected in clear to the implicit-TLS port")
        except smtplib.SMTPConnectError as e:
            said = str(e)
        took = time.monotonic() - started
        assert "421" in said and "TLS first" in said and "SMTP_SSL" in said and "smtps://" in said, said
        assert "s_client" in said, said
        assert hint_ms / 1000 - 0.1 <= took < hint_ms / 1000 + 3, took
        # Clear text at once: no wait for the silence.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            started = time.monotonic()
            s.sendall(b"EHLO student\r\n")
            answer = s.makefile("rb").readline().decode()
            assert answer.startswith("421 4.7.0 ") and "implicit TLS" in answer, answer
            assert time.monotonic() - started < hint_ms / 1000, "clear text was not answered at once"
        # A real TLS client still works.
        with lab.ssl_context().wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10),
                                           server_hostname="localhost") as t:
            assert t.recv(1000).startswith(b"220 ")
        log = server.log_after_stop()
    assert "event=plaintext-on-tls peer=" in log and "first=silence answered=421" in log, log
    assert 'first="EHLO student" answered=421' in log, log


def holds_connection(pid, server_port, client_port):
    """Whether process `pid` still has a descriptor on the server side of the TCP connection between
    `server_port` and `client_port` (/proc/net/tcp{,6}: a socket the process closed is orphaned, its
    inode 0, even while the kernel finishes the close). Counting all of the server's descriptors would
    also count whatever else it opens meanwhile (a PostgreSQL connection of its pool)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                    inodes.add(inode)
    inodes.discard("0")
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if any(target == f"socket:[{inode}]" for inode in inodes):
            return True
    return False


@test
def a_clear_text_answer_holds_the_connection_only_for_the_linger_time(lab):
    """After the clear-text 421 and our FIN, a client that never closes holds the connection for
    sender.timeout.closeLingerMs, not for what is left of the hint's or the handshake's deadline."""
    linger = int(setting_default("sender/senderserver.properties", "sender.timeout.closeLingerMs")) / 1000
    with Server(lab, "senderserver", {"sender.timeout.plaintextHintMs": "20000"}) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            client_port = s.getsockname()[1]
            s.sendall(b"EHLO student\r\n")
            assert s.makefile("rb").readline().startswith(b"421 4.7.0 ")
            assert s.recv(100) == b"", "no FIN after the clear-text answer"
            deadline = time.monotonic() + linger + 5
            while holds_connection(server.proc.pid, server.port, client_port) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not holds_connection(server.proc.pid, server.port, client_port), "still held after the linger time"


@test
def a_tls_client_slow_after_its_first_byte_still_completes(lab):
    # A short hint so that the pause below is longer than it: only the first byte decides.
    with Server(lab, "senderserver", {"sender.timeout.plaintextHintMs": "300"}) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = lab.ssl_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        assert hello[0] == 0x16
        sock.sendall(hello[:1])
        time.sleep(0.8)  # longer than the hint: the server must not answer in clear now
        sock.sendall(hello[1:])
        while True:
            data = sock.recv(65536)
            assert data, "the server closed during the handshake"
            incoming.write(data)
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = outgoing.read()
                if out:
                    sock.sendall(out)
        sock.sendall(outgoing.read())
        banner = b""
        while b"\r\n" not in banner:
            try:
                banner += tls.read(1000)
            except ssl.SSLWantReadError:
                incoming.write(sock.recv(65536))
        assert banner.startswith(b"220 "), banner
        sock.close()


@test
def plain_http_on_the_https_port_gets_a_clear_400_naming_https(lab):
    with Server(lab, "retrieverserver") as server:
        started = time.monotonic()
        out = subprocess.run(["curl", "-sS", "-i", f"http://localhost:{server.port}/mailboxes"],
                             capture_output=True, text=True, timeout=20)
        assert time.monotonic() - started < 5
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("HTTP/1.1 400 Bad Request"), out.stdout
        assert "Connection: close" in out.stdout, out.stdout
        assert "This port speaks HTTPS (TLS)" in out.stdout, out.stdout
        assert f"https://localhost:{server.port}/" in out.stdout and "--cacert" in out.stdout, out.stdout
        # Other clear text is closed at once (no TLS alert for a client that cannot read one).
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"EHLO student\r\n")
            assert s.recv(100) == b""
        # HTTPS still works.
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", lab.ca,
                              f"https://localhost:{server.port}/"], capture_output=True, text=True, timeout=20)
        assert out.stdout in ("200", "401"), out
        log = server.log_after_stop()
    assert 'event=plaintext-on-tls peer=' in log and 'first="GET /mailboxes HTTP/1.1" answered=400' in log, log
    assert 'first="EHLO student" answered=closed' in log, log


@test
def the_wrong_service_over_tls_fails_fast(lab):
    # curl https:// on the sender offers ALPN h2/http/1.1: no_application_protocol at once.
    with Server(lab, "senderserver") as server:
        started = time.monotonic()
        out = subprocess.run(["curl", "-sS", "--cacert", lab.ca, f"https://localhost:{server.port}/"],
                             capture_output=True, text=True, timeout=20)
        assert out.returncode != 0 and time.monotonic() - started < 5, out
        assert says_no_application_protocol(out.stderr), out.stderr


@test
def the_starttls_port_still_speaks_plain_smtp_first(lab):
    with Server(lab, "senderserver", args=["--tls=starttls"]) as server:
        started = time.monotonic()
        client = smtplib.SMTP("localhost", server.port, timeout=10)
        assert time.monotonic() - started < 1
        code, _ = client.ehlo()
        assert code == 250 and client.has_extn("starttls")
        client.quit()
        log = server.log_after_stop()
    assert "plaintext-on-tls" not in log
