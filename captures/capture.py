#!/usr/bin/python3
"""Captures the lab's traffic into captures/<name>.pcapng files that open already decrypted in
Wireshark (the TLS key log is embedded with `editcap --inject-secrets`).

From the repository root (the make targets capture, capture-start and capture-stop run these):
  python3 -m captures.capture session [--modes implicit,starttls,off] [--name lab]   a scripted lab session per mode
  python3 -m captures.capture start --ports 9000,9100 [--name live]        around your own session; Ctrl-C
  python3 -m captures.capture start --host lab.example.edu --ports 465,443 the same against a class server
  python3 -m captures.capture stop [--name live]                           or this, from another terminal

With --host, the capture runs on the interface that routes to that host (`ip route get`), and keeps
only that host's traffic on those ports; without it (or with localhost), loopback. The file embeds
only the TLS secrets of the connections it holds (a key log shared with a browser stays private).

Capturing needs root or dumpcap's capabilities: dumpcap alone runs under sudo when needed (and we say
so); the files are written by you, so they stay readable by you."""

import argparse
import base64
import errno
import http.client
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from captures.labprocess import ServerProcess, password_from

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Each mode: server options and client options, for the sender and for the retriever.
MODES = {
    "implicit": {"sender": ["--tls=implicit"], "retriever": ["--tls=implicit"],
                 "sclient": ["--tls", "implicit"], "rclient": ["--tls", "implicit"]},
    "starttls": {"sender": ["--tls=starttls"], "retriever": ["--tls=implicit"],
                 "sclient": ["--tls", "starttls"], "rclient": ["--tls", "implicit"]},
    "off": {"sender": ["--tls=off", "--allow-plaintext-auth"], "retriever": ["--tls=off", "--allow-plaintext-auth"],
            "sclient": ["--tls", "off"], "rclient": ["--tls", "off"]},
}


# The IANA ports of each mode (RFC 8314 submissions 465, RFC 6409 submission 587, SMTP 25; HTTPS
# 443, HTTP 80): where stock Wireshark and tshark dissect SMTP and HTTP with no settings at all. The
# scripted captures run their servers there, on loopback only, so a capture opens decoded on any
# computer; the capture comment says so. Where a port cannot be had (not root, or taken by another
# server), they fall back to free ports and Wireshark needs the maillab profile.
IANA_PORTS = {"implicit": (465, 443), "starttls": (587, 443), "off": (25, 80)}
# POP3 in the implicit mode's capture (the mail-client comparison): POP3S on 995 (RFC 8314) and
# plaintext POP3 with STLS on 110 (RFC 1939, RFC 2595), where stock tshark dissects POP.
POP3_PORTS = (995, 110)
POP3_MODES = ("implicit",)


def port_available(port):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                # no IPv6 here: IPv4 is enough
                continue
            return False
    return True


def say(text):
    print(text, flush=True)


def dumpcap_needs_sudo():
    if os.geteuid() == 0:
        return False
    probe = subprocess.run(["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w", "/dev/null", "-q"],
                           capture_output=True, text=True)
    return probe.returncode != 0


class Target:
    """Where to capture: the interface, the host's addresses (none: every address on loopback) and
    where the probes go (see Dumpcap)."""

    def __init__(self, interface="lo", addresses=(), probe_to="127.0.0.1"):
        self.interface, self.addresses, self.probe_to = interface, list(addresses), probe_to

    def describe(self, host):
        if not self.addresses:
            return f"on {self.interface}"
        shown = ", ".join(self.addresses)
        return f"on {self.interface}, only the traffic with {host}" + (f" ({shown})" if shown != host else "")


def route_interface(address):
    """The interface the kernel sends `address`'s packets through (`ip route get`), or None."""
    try:
        out = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\bdev (\S+)", out)
    return found.group(1) if found else None


def resolve_target(host):
    """The capture target for HOST: loopback for localhost and loopback addresses (every address
    there, as before), else the interface that routes to HOST with a filter for HOST's addresses."""
    if not host or host.lower() in ("localhost", "localhost.localdomain"):
        return Target()
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise SystemExit(f"cannot resolve {host}: {e.strerror}. Check the name the instructor gave you "
                         f"(try `getent hosts {host}`)")
    addresses = []
    for info in sorted(infos, key=lambda i: i[0] != socket.AF_INET):  # IPv4 first, as clients mostly do
        address = info[4][0]
        if address not in addresses:
            addresses.append(address)
    if all(ipaddress.ip_address(a).is_loopback for a in addresses):
        return Target()
    interface = route_interface(addresses[0])
    if interface is None:
        say(f"note: `ip route get {addresses[0]}` did not name an interface: capturing on every interface (any)")
        interface = "any"
    # Addresses of HOST that leave through another interface would not be seen there: keep those
    # that go the same way.
    same = [a for a in addresses if a == addresses[0] or route_interface(a) == interface]
    return Target(interface, same, same[0])


class Dumpcap:
    """dumpcap on one interface (loopback unless told otherwise) for the given TCP ports, and for the
    target host's addresses when there are some. Its pcapng output comes through a
    pipe that we copy into our own file (so it belongs to the user) while watching for probes: a UDP
    datagram to a spare port carrying a random token (to 127.0.0.1 on loopback, else to the target
    host, through the captured interface). When a probe's token has come through the
    pipe, everything sent before the probe has too (an interface's packets reach dumpcap in order), so
    the capture is known to have started, or to be complete, without guessing with sleeps."""

    def __init__(self, ports, path, progress=False, target=None):
        target = target or Target()
        family = socket.AF_INET6 if ":" in target.probe_to else socket.AF_INET
        self.probe_sock = socket.socket(family, socket.SOCK_DGRAM)
        self.probe_sock.bind(("::" if family == socket.AF_INET6 else ("127.0.0.1" if target.probe_to == "127.0.0.1"
                                                                       else "0.0.0.0"), 0))
        self.probe_port = self.probe_sock.getsockname()[1]
        self.probe_to = target.probe_to
        ports_filter = " or ".join(f"tcp port {p}" for p in ports)
        if target.addresses:
            hosts = " or ".join(f"host {a}" for a in target.addresses)
            capture_filter = f"({hosts}) and ({ports_filter} or udp dst port {self.probe_port})"
        else:
            capture_filter = f"({ports_filter}) or (udp dst port {self.probe_port})"
        cmd = ["dumpcap", "-i", target.interface, "-f", capture_filter, "-w", "-"]
        if dumpcap_needs_sudo():
            say("note: capturing needs root (or dumpcap's capabilities): running dumpcap with sudo")
            cmd = ["sudo"] + cmd
        self.out = open(path, "wb")
        # Its own session: a Ctrl-C at the terminal reaches us, and we stop dumpcap in order (after the
        # end probe), instead of dumpcap dying first with the last packets unsaved.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.count = 0
        self.seen = b""  # the tail of the output, for tokens split across reads
        self.tokens = set()
        self.changed = threading.Condition()
        self.progress = progress
        self.copier = threading.Thread(target=self._copy_output, daemon=True)
        self.copier.start()
        threading.Thread(target=self._read_progress, daemon=True).start()
        try:
            self.sync("start")
        except BaseException:
            self.abort()
            raise

    def _copy_output(self):
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                break
            self.out.write(chunk)
            window = self.seen + chunk
            with self.changed:
                for token in list(self.tokens):
                    if token in window:
                        self.tokens.discard(token)
                        self.changed.notify_all()
            self.seen = window[-64:]
        with self.changed:
            self.changed.notify_all()

    def _read_progress(self):
        buffer = b""
        while True:
            chunk = self.proc.stderr.read1(4096)
            if not chunk:
                break
            buffer += chunk
            for match in re.finditer(rb"Packets: (\d+)", buffer):
                self.count = max(self.count, int(match.group(1)))
            if self.progress:
                sys.stdout.write(f"\r  captured {self.count} packets (Ctrl-C or `make capture-stop` to finish) ")
                sys.stdout.flush()
            buffer = buffer[-64:]

    def sync(self, what, timeout=30):
        """Sends a probe (again every 200 ms, in case one is lost) until its token is in the output."""
        token = f"maillab-{what}-{os.urandom(8).hex()}".encode()
        with self.changed:
            self.tokens.add(token)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.probe_sock.sendto(token, (self.probe_to, self.probe_port))
            with self.changed:
                if self.changed.wait_for(lambda: token not in self.tokens or self.proc.poll() is not None, 0.2):
                    break
        if self.proc.poll() is not None:
            raise SystemExit(f"dumpcap stopped: {self.proc.stderr.read().decode(errors='replace')}")
        if token in self.tokens:
            raise SystemExit(f"dumpcap did not deliver the {what} probe within {timeout} s")

    def abort(self):
        """Ends dumpcap at once when it still runs (after stop() it does not: nothing happens)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.sync("end")
            except SystemExit as e:  # keep what was captured all the same
                say(f"warning: {e}")
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self.copier.join(timeout=30)
        self.out.close()
        return self.probe_port


def secrets_in(capture, keylog, out):
    """Writes to `out` the key log's lines for connections the capture holds (each line names its
    connection by the ClientHello's 32-byte random, which is in the file as it went on the wire);
    returns how many. A key log a browser or another program shares (SSLKEYLOGFILE) stays private."""
    with open(capture, "rb") as f:
        data = f.read()
    kept = 0
    with open(keylog, errors="replace") as src, open(out, "w") as dst:
        for line in src:
            fields = line.split()
            if len(fields) != 3 or len(fields[1]) != 64:
                continue
            try:
                client_random = bytes.fromhex(fields[1])
            except ValueError:
                continue
            if client_random in data:
                dst.write(line if line.endswith("\n") else line + "\n")
                kept += 1
    os.chmod(out, 0o600)
    return kept


def finish(raw, final, probe_port, keylog, comment, with_keys=True, only_captured=False):
    """Drops the probes, embeds the TLS secrets, adds the comment check.py and report.py read.
    `only_captured`: embed only the secrets of the connections in the file. Returns how many
    secrets' lines were embedded (None: the whole key log)."""
    filtered = raw + ".filtered"
    subprocess.run(["tshark", "-r", raw, "-2", "-R", f"not (udp.port == {probe_port})", "-w", filtered, "-F", "pcapng"],
                   check=True, capture_output=True)
    cmd = ["editcap", "--capture-comment", comment]
    embedded = None
    chosen = keylog
    if with_keys and keylog and os.path.exists(keylog) and os.path.getsize(keylog) > 0:
        if only_captured:
            chosen = raw + ".keys"
            embedded = secrets_in(filtered, keylog, chosen)
        if embedded is None or embedded > 0:
            cmd += ["--inject-secrets", f"tls,{chosen}"]
    else:
        embedded = 0
    try:
        subprocess.run(cmd + [filtered, final], check=True, capture_output=True)
    finally:
        os.unlink(filtered)
        if chosen != keylog and os.path.exists(chosen):
            os.unlink(chosen)
    os.chmod(final, 0o644)
    return embedded


def server_process(exe, args, log, port=0):
    """One of our servers on `port` (0: a free one), its ready line waited for."""
    try:
        return ServerProcess([exe, f"--port={port}"] + args, log, timeout=30)
    except (RuntimeError, OSError) as e:  # OSError: the program is missing or being rebuilt
        raise SystemExit(f"{os.path.basename(exe)} did not start: {e}")


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout


# What the scripted session's own HTTP requests say, as a browser would (the HTTP lab asks for it).
ACCEPT_LANGUAGE = "en-US,en;q=0.9,pt-BR;q=0.8"


def close_gracefully(conn):
    """Ends an http.client connection as our clients do: close_notify sent and the server's read
    (TLS), then FIN and the server's FIN read before the socket goes: no RST in the capture."""
    sock = conn.sock
    if sock is None:
        return
    conn.sock = None
    close_socket_gracefully(sock)


def close_socket_gracefully(sock):
    """close_gracefully's steps on a socket (poplib's too): close_notify both ways, then both FINs."""
    try:
        sock.settimeout(5)
        if isinstance(sock, ssl.SSLSocket):
            sock = sock.unwrap()
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    except OSError:
        pass  # the server went first: nothing left to do well
    finally:
        sock.close()


def http_lab_requests(port, tls, ca, user, password):
    """The HTTP lab's steps our retriever client does not take, from Python's http.client (as a
    browser does them): on one connection a GET without credentials, answered 401 with its
    WWW-Authenticate challenge, then the same GET again with Basic credentials (two requests in
    series on one connection); then two connections side by side, each request sent before either
    answer is read (two requests in parallel). Every request names the languages the user reads."""
    def connect():
        if tls:
            context = ssl.create_default_context(cafile=ca)
            return http.client.HTTPSConnection("localhost", port, timeout=30, context=context)
        return http.client.HTTPConnection("localhost", port, timeout=30)

    mailbox = f"/mailboxes/{user}/messages"
    headers = {"Accept": "application/json", "Accept-Language": ACCEPT_LANGUAGE,
               "User-Agent": "maillab-capture (Python http.client)"}
    basic = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    statuses = []
    serial = connect()
    try:
        for extra in ({}, basic):  # the challenge, then the retry with credentials
            serial.request("GET", mailbox, headers=dict(headers, **extra))
            response = serial.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        close_gracefully(serial)
    pair = [connect(), connect()]
    try:
        for conn in pair:
            conn.connect()  # both handshakes first: the two requests then overlap on the wire
        for conn, uri in zip(pair, (mailbox, mailbox + "/1")):
            conn.request("GET", uri, headers=dict(headers, **basic))
        for conn in pair:
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        for conn in pair:
            close_gracefully(conn)
    if statuses != [401, 200, 200, 200]:
        raise SystemExit(f"the HTTP lab's requests got {statuses}, not 401 then 200s: see the retriever's log")


def pop3_lab_retrievals(pop3_port, plain_port, ca, keylog, user, password):
    """The mail client's way to the same message (RFC 1939), from Python's poplib: RETR 1 over
    implicit TLS (POP3S) and over a plaintext connection upgraded by STLS (RFC 2595: CAPA, then STLS,
    then the credentials). Both write their TLS secrets to the session's key log. Returns the two
    message texts, which must be the same."""
    import poplib

    def context():
        c = ssl.create_default_context(cafile=ca)
        c.keylog_filename = keylog
        return c

    def fetch(client):
        try:
            client.user(user)
            client.pass_(password)
            client.stat()
            _, lines, _ = client.retr(1)
            client._shortcmd("QUIT")  # not quit(): it closes before the server's close_notify is read
            sock, client.sock = client.sock, None
            client.file.close()
            close_socket_gracefully(sock)
            return b"\r\n".join(lines)
        except BaseException:
            if client.sock is not None:
                client.close()
            raise

    try:
        implicit = fetch(poplib.POP3_SSL("localhost", pop3_port, context=context(), timeout=30))
        plain = poplib.POP3("localhost", plain_port, timeout=30)
        try:
            plain.stls(context=context())  # asks CAPA first, as RFC 2595 clients do
        except BaseException:
            plain.close()
            raise
        upgraded = fetch(plain)
    except (poplib.error_proto, OSError) as e:
        raise SystemExit(f"POP3 retrieval failed: {e}: see the retriever's log")
    if implicit != upgraded:
        raise SystemExit("POP3S and STLS returned different messages for RETR 1: see the retriever's log")
    return implicit, upgraded


def session(args):
    bin_dir = os.path.join(ROOT, args.build, "bin")
    os.makedirs(args.out, exist_ok=True)
    run([os.path.join(bin_dir, "maillab-certs"), os.path.join(ROOT, "certs")])
    ca = os.path.join(ROOT, "certs", "ca.pem")
    written = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode}; use implicit, starttls, off")
        m = MODES[mode]
        work = tempfile.mkdtemp(prefix="maillab-capture-")
        keylog = os.path.join(work, "keys.log")
        common = [f"--db={work}/lab.db", f"--certs={ROOT}/certs", f"--keylog={keylog}"]
        smtp_port, http_port = IANA_PORTS[mode]
        with_pop3 = mode in POP3_MODES
        pop3_port, pop3_plain_port = POP3_PORTS if with_pop3 else (0, 0)
        standard = not args.free_ports and all(port_available(p) for p in (smtp_port, http_port) +
                                                ((pop3_port, pop3_plain_port) if with_pop3 else ()))
        if not standard:
            smtp_port = http_port = pop3_port = pop3_plain_port = 0
            say("   note: the standard ports are not available here (run as root, or free them): using free "
                "ports; Wireshark then needs the maillab profile (make wireshark-profile) to show SMTP and HTTP")
        say(f"== {mode}: starting servers" + (f" on the standard ports {IANA_PORTS[mode][0]} and {IANA_PORTS[mode][1]}"
                                               if standard else ""))
        sender = server_process(os.path.join(bin_dir, "senderserver"), common + m["sender"], os.path.join(work, "sender.log"),
                               smtp_port)
        try:
            # POP3 only where this mode's capture retrieves by POP3: elsewhere no listener that
            # could collide with a lab's 9995.
            pop3 = [f"--pop3-port={pop3_port}", f"--pop3-plain-port={pop3_plain_port}"] if with_pop3 else \
                ["--pop3-port=off"]
            retriever = server_process(os.path.join(bin_dir, "retrieverserver"), common + m["retriever"] + pop3,
                                      os.path.join(work, "retriever.log"), http_port)
        except BaseException:
            sender.stop()  # never left holding the port after a failed start
            raise
        raw = os.path.join(work, "raw.pcapng")
        final = os.path.join(args.out, f"{args.name}-{mode}.pcapng")
        cap = None
        try:
            pop3_ports = [retriever.ports[k] for k in ("pop3", "pop3-plain") if retriever.ports.get(k)]
            cap = Dumpcap([sender.port, retriever.port] + pop3_ports, raw)
            say(f"   capturing tcp ports {sender.port} (SMTP) and {retriever.port} (HTTP)" +
                (f" and {pop3_ports[0]} (POP3S) and {pop3_ports[1]} (POP3, STLS)" if with_pop3 else "") + " on lo")
            sc = [os.path.join(bin_dir, "senderclient"), "--port", str(sender.port), "--ca", ca] + m["sclient"]
            rc = [os.path.join(bin_dir, "retrieverclient"), "--port", str(retriever.port), "--ca", ca] + m["rclient"]
            say("   register ana@447.edu and bob@447.edu")
            ana = password_from(run(sc + ["--user", "ana"]))
            bob = password_from(run(sc + ["--user", "bob"]))
            body = os.path.join(work, "body.txt")
            with open(body, "w") as f:
                f.write("Hi Bob,\nthe capture lab starts at ten.\nAna\n")
            say("   ana sends bob a message")
            run(sc + ["--user", "ana", "--password", ana, "--to", "bob", "--subject", "Capture lab", "--body-file", body])
            # A message of about 120 KB: its response spans several TCP segments and TLS records.
            data = os.path.join(work, "data.txt")
            with open(data, "w") as f:
                for i in range(1600):
                    f.write(f"{i:05d} measurement {'x' * 60}\n")
            run(sc + ["--user", "ana", "--password", ana, "--to", "bob", "--subject", "Lab data", "--body-file", data])
            say("   bob asks for his mailbox without credentials (401), then with them; two requests in parallel")
            http_lab_requests(retriever.port, mode != "off", ca, "bob@447.edu", bob)
            say("   bob lists his mailbox and opens the messages")
            run(rc + ["--user", "bob", "--password", bob])
            run(rc + ["--user", "bob", "--password", bob, "--id", "1"])
            run(rc + ["--user", "bob", "--password", bob, "--id", "2", "--raw"])
            say("   bob asks again with If-None-Match and with If-Modified-Since: 304 Not Modified")
            # Our client, not curl: curl closes without reading the server's close_notify, and the
            # server's last bytes then meet a closed socket (a TCP RST in the capture).
            shown = subprocess.run(rc + ["--user", "bob", "--password", bob, "--verbose"], capture_output=True,
                                   text=True, timeout=60).stderr
            etag = re.search(r"(?im)^S: etag: *(.+?)\s*$", shown)
            modified = re.search(r"(?im)^S: last-modified: *(.+?)\s*$", shown)
            for header in ([f"If-None-Match: {etag.group(1)}"] if etag else []) + \
                          ([f"If-Modified-Since: {modified.group(1)}"] if modified else []):
                run(rc + ["--user", "bob", "--password", bob, "--header", header])
            if with_pop3:
                say("   bob's mail client retrieves message 1 by POP3: over implicit TLS, then by STLS")
                pop3_lab_retrievals(retriever.ports["pop3"], retriever.ports["pop3-plain"], ca, keylog,
                                    "bob@447.edu", bob)
            probe = cap.stop()
        finally:
            if cap is not None:
                cap.abort()  # a failed step: dumpcap (its own session) must not outlive us
            sender.stop()
            retriever.stop()
        # POP3's ports come after the ones every reader of the comment knows (analyze.py, report).
        comment = f"maillab mode={mode} smtp={sender.port} http={retriever.port}" + \
            (f" pop3={retriever.ports['pop3']} pop3-plain={retriever.ports['pop3-plain']}" if with_pop3 else "")
        finish(raw, final, probe, keylog, comment,
               with_keys=not args.without_keys)
        shutil.rmtree(work, ignore_errors=True)
        say(f"   wrote {final}")
        written.append(final)
    say("Open a file in Wireshark: it is decrypted already (File > Open). See captures/README.md.")
    return written


def pid_file(name, out=HERE):
    """The running capture's pid file, beside the file it writes (captures/.live.pid by default)."""
    return os.path.join(out, f".{name}.pid")


def running_capture(name, out=HERE):
    """The pid of the live capture `name`, or None; a pid file left by a capture that is gone (a
    reboot, a kill -9) is recognised by the process's command line and removed, never signalled."""
    path = pid_file(name, out)
    try:
        pid = int(open(path).read().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
    except OSError:
        cmdline = b""
    if (b"captures.capture" in cmdline or b"capture.py" in cmdline) and b" start" in cmdline:
        return pid
    os.unlink(path)
    say(f"note: removed a stale pid file ({path}: pid {pid} is not a running capture)")
    return None


def shown_path(path):
    """A path as the student types it: relative to where make runs when inside it, quoted for the shell."""
    rel = os.path.relpath(path)
    return shlex.quote(path if rel.startswith("..") else rel)


def next_steps(final):
    say("Next:")
    say(f"    make check-capture FILE={shown_path(final)}     # is the lab's whole sequence there?")
    say(f"    make report FILE={shown_path(final)}            # the report of this file, in its own folder")


def key_log_help(host, ports, keylog, servers):
    """How to make the programs of the session write the key log the file will embed."""
    if servers:
        return
    quoted = shlex.quote(keylog)
    say("Write the TLS key log, or the file cannot be decrypted. Programs started BEFORE this point do not")
    say("write it: start (or restart) them with it, in each terminal:")
    if host and host not in ("localhost",):
        smtp, http = ports[0], ports[1] if len(ports) > 1 else ports[0]
        say(f"    make senderclient HOST={host} PORT={smtp} ARGS=\"--ca ca.pem --keylog {quoted}\"")
        say(f"    make retrieverclient HOST={host} RPORT={http} ARGS=\"--ca ca.pem --keylog {quoted}\"")
        say(f"  or, for curl, Python (smtplib, ssl) and our clients alike:")
        say(f"    export SSLKEYLOGFILE={quoted}")
    else:
        say(f"    export SSLKEYLOGFILE={quoted}")
        say(f"  (our clients and servers also take --keylog {quoted}, e.g. ARGS=\"--keylog ...\")")


def start(args):
    out = os.path.abspath(args.out)
    if running_capture(args.name, out):
        raise SystemExit(f"a capture named {args.name} is already running: `make capture-stop NAME={args.name}` first")
    ports = [int(p) for p in args.ports.split(",") if p.strip()]
    if not ports:
        raise SystemExit("no ports to capture: give --ports (make capture-start PORT=465 RPORT=443)")
    target = resolve_target(args.host)
    if target.addresses and args.servers:
        raise SystemExit("--servers starts the servers on this machine: leave out --host (HOST=)")
    os.makedirs(out, exist_ok=True)
    keylog = os.path.join(out, f"{args.name}.keys.log")
    raw = os.path.join(out, f".{args.name}.raw.pcapng")
    final = os.path.join(out, f"{args.name}.pcapng")
    open(keylog, "a").close()
    os.chmod(keylog, 0o600)
    servers = []
    if args.servers:
        # Started here, after the key log exists and with it: every handshake is decryptable.
        bin_dir = os.path.join(ROOT, args.build, "bin")
        m = MODES[args.mode or "implicit"]
        common = [f"--keylog={keylog}", f"--certs={ROOT}/certs"]
        work = tempfile.mkdtemp(prefix="maillab-live-")
        servers.append(server_process(os.path.join(bin_dir, "senderserver"), common + m["sender"],
                                     os.path.join(work, "sender.log"), ports[0]))
        if len(ports) > 1:
            try:
                # No POP3: the capture is of the two ports given, and a retriever the student already
                # runs (make retrieverserver) holds the default 9995.
                servers.append(server_process(os.path.join(bin_dir, "retrieverserver"),
                                             common + m["retriever"] + ["--pop3-port=off"],
                                             os.path.join(work, "retriever.log"), ports[1]))
            except BaseException:
                servers[0].stop()
                raise
        say(f"Started senderserver on {ports[0]}" + (f" and retrieverserver on {ports[1]}" if len(ports) > 1 else "") +
            f" (--tls {args.mode or 'implicit'}), writing TLS secrets to {keylog}; logs in {work}.")
    say(f"Capturing tcp ports {','.join(map(str, ports))} {target.describe(args.host)} into {shown_path(final)}.")
    key_log_help(args.host if target.addresses else None, ports, keylog, args.servers)
    stop_hint = "make capture-stop" + (f" NAME={args.name}" if args.name != "live" else "")
    say(f"Stop with Ctrl-C here, or `{stop_hint}` in another terminal. The file is written either way.")
    try:
        cap = Dumpcap(ports, raw, progress=True, target=target)
    except BaseException:
        for server in servers:
            server.stop()
        raise
    with open(pid_file(args.name, out), "w") as f:
        f.write(str(os.getpid()))
    say(f"capture running (pid {os.getpid()})")  # a line scripts and tests wait for
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stopped.set())
    signal.signal(signal.SIGTERM, lambda *a: stopped.set())
    signal.signal(signal.SIGHUP, lambda *a: stopped.set())
    try:
        try:
            while not stopped.wait(0.5):
                if cap.proc.poll() is not None:
                    say("\nwarning: dumpcap stopped on its own; writing what it captured")
                    break
            say("")
            probe = cap.stop()
        finally:
            cap.abort()
            for server in servers:
                server.stop()
        embedded = finish(raw, final, probe, keylog,
                          # The mode as known (our servers, or --mode); else check and report tell it from the traffic.
                          f"maillab mode={args.mode or ('implicit' if args.servers else 'guess')} smtp={ports[0]} "
                          f"http={ports[1] if len(ports) > 1 else 0}" +
                          (f" host={args.host} interface={target.interface}" if target.addresses else ""),
                          only_captured=True)
        os.unlink(raw)
    finally:
        # The pid file goes last: `capture-stop` returns once the file is written.
        try:
            os.unlink(pid_file(args.name, out))
        except FileNotFoundError:
            pass
    say(f"wrote {shown_path(final)} ({'with' if embedded else 'WITHOUT'} TLS secrets" +
        (f": {embedded} key log lines of its connections embedded)" if embedded else
         ": no program wrote the key log for its connections)"))
    next_steps(final)


def stop(args):
    out = os.path.abspath(args.out)
    pid = running_capture(args.name, out)
    if pid is None:
        raise SystemExit(f"no capture named {args.name} is running (start one with `make capture-start`)")
    os.kill(pid, signal.SIGTERM)
    # Wait until it has written its file (with its secrets): the pid file goes last.
    deadline = time.monotonic() + 120
    while os.path.exists(pid_file(args.name, out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    final = os.path.join(out, args.name + ".pcapng")
    if os.path.exists(pid_file(args.name, out)):
        raise SystemExit(f"capture {args.name} (pid {pid}) has not finished writing {shown_path(final)} after 120 s")
    say(f"capture {args.name} (pid {pid}) finished: {shown_path(final)}")
    if os.path.exists(final):
        next_steps(final)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["session", "start", "stop"])
    parser.add_argument("--modes", default="implicit,starttls,off")
    parser.add_argument("--mode", help="for start: the TLS mode your servers use (default: implicit with --servers, "
                                       "else told from the traffic)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--ports", default="9000,9100")
    parser.add_argument("--host", default="", help="start: the server's name or address (a class server): capture on "
                                                   "the interface that routes there, only its traffic")
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--build", default="build")
    parser.add_argument("--without-keys", action="store_true", help="do not embed the key log (an eavesdropper's file)")
    parser.add_argument("--free-ports", action="store_true", help="session: free ports instead of the standard ones")
    parser.add_argument("--servers", action="store_true",
                        help="start: also start the servers on --ports, with the key log")
    args = parser.parse_args()
    if args.name is None:
        args.name = "lab" if args.command == "session" else "live"
    {"session": session, "start": start, "stop": stop}[args.command](args)


if __name__ == "__main__":
    main()
