#!/usr/bin/python3
"""Captures the lab's traffic into captures/<name>.pcapng files that open already decrypted in
Wireshark (the TLS key log is embedded with `editcap --inject-secrets`).

  capture.py session [--modes implicit,starttls,off] [--name lab]   a scripted lab session per mode
  capture.py start --ports 9000,9100 [--name live]                  around your own session; Ctrl-C
  capture.py stop [--name live]                                     or this, from another terminal

Capturing needs root or dumpcap's capabilities: dumpcap alone runs under sudo when needed (and we say
so); the files are written by you, so they stay readable by you."""

import argparse
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "common", "python"))
from labprocess import ServerProcess, password_from  # noqa: E402

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


class Dumpcap:
    """dumpcap on the loopback interface for the given TCP ports. Its pcapng output comes through a
    pipe that we copy into our own file (so it belongs to the user) while watching for probes: a UDP
    datagram to a spare port carrying a random token. When a probe's token has come through the
    pipe, everything sent before the probe has too (loopback keeps order), so the capture is known
    to have started, or to be complete, without guessing with sleeps."""

    def __init__(self, ports, path, progress=False):
        self.probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.probe_sock.bind(("127.0.0.1", 0))
        self.probe_port = self.probe_sock.getsockname()[1]
        ports_filter = " or ".join(f"tcp port {p}" for p in ports)
        cmd = ["dumpcap", "-i", "lo", "-f", f"({ports_filter}) or (udp dst port {self.probe_port})", "-w", "-"]
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
        self.sync("start")

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
            self.probe_sock.sendto(token, ("127.0.0.1", self.probe_port))
            with self.changed:
                if self.changed.wait_for(lambda: token not in self.tokens or self.proc.poll() is not None, 0.2):
                    break
        if self.proc.poll() is not None:
            raise SystemExit(f"dumpcap stopped: {self.proc.stderr.read().decode(errors='replace')}")
        if token in self.tokens:
            raise SystemExit(f"dumpcap did not deliver the {what} probe within {timeout} s")

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


def finish(raw, final, probe_port, keylog, comment, with_keys=True):
    """Drops the probes, embeds the TLS secrets, adds the comment check.py and report.py read."""
    filtered = raw + ".filtered"
    subprocess.run(["tshark", "-r", raw, "-2", "-R", f"not (udp.port == {probe_port})", "-w", filtered, "-F", "pcapng"],
                   check=True, capture_output=True)
    cmd = ["editcap", "--capture-comment", comment]
    if with_keys and keylog and os.path.exists(keylog) and os.path.getsize(keylog) > 0:
        cmd += ["--inject-secrets", f"tls,{keylog}"]
    subprocess.run(cmd + [filtered, final], check=True, capture_output=True)
    os.unlink(filtered)
    os.chmod(final, 0o644)


def server_process(exe, args, log, port=0):
    """One of our servers on `port` (0: a free one), its ready line waited for."""
    try:
        return ServerProcess([exe, f"--port={port}"] + args, log, timeout=30)
    except RuntimeError as e:
        raise SystemExit(str(e))


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
    return out.stdout


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
        standard = not args.free_ports and port_available(smtp_port) and port_available(http_port)
        if not standard:
            smtp_port = http_port = 0
            say("   note: the standard ports are not available here (run as root, or free them): using free "
                "ports; Wireshark then needs the maillab profile (make wireshark-profile) to show SMTP and HTTP")
        say(f"== {mode}: starting servers" + (f" on the standard ports {IANA_PORTS[mode][0]} and {IANA_PORTS[mode][1]}"
                                               if standard else ""))
        sender = server_process(os.path.join(bin_dir, "senderserver"), common + m["sender"], os.path.join(work, "sender.log"),
                               smtp_port)
        retriever = server_process(os.path.join(bin_dir, "retrieverserver"), common + m["retriever"],
                                  os.path.join(work, "retriever.log"), http_port)
        raw = os.path.join(work, "raw.pcapng")
        final = os.path.join(args.out, f"{args.name}-{mode}.pcapng")
        try:
            cap = Dumpcap([sender.port, retriever.port], raw)
            say(f"   capturing tcp ports {sender.port} (SMTP) and {retriever.port} (HTTP) on lo")
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
            probe = cap.stop()
        finally:
            sender.stop()
            retriever.stop()
        finish(raw, final, probe, keylog, f"maillab mode={mode} smtp={sender.port} http={retriever.port}",
               with_keys=not args.without_keys)
        shutil.rmtree(work, ignore_errors=True)
        say(f"   wrote {final}")
        written.append(final)
    say("Open a file in Wireshark: it is decrypted already (File > Open). See captures/README.md.")
    return written


def pid_file(name):
    return os.path.join(HERE, f".{name}.pid")


def running_capture(name):
    """The pid of the live capture `name`, or None; a pid file left by a capture that is gone (a
    reboot, a kill -9) is recognised by the process's command line and removed, never signalled."""
    path = pid_file(name)
    try:
        pid = int(open(path).read().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")
    except OSError:
        cmdline = b""
    if b"capture.py" in cmdline and b" start" in cmdline:
        return pid
    os.unlink(path)
    say(f"note: removed a stale pid file ({path}: pid {pid} is not a running capture)")
    return None


def start(args):
    if running_capture(args.name):
        raise SystemExit(f"a capture named {args.name} is already running: `make capture-stop NAME={args.name}` first")
    ports = [int(p) for p in args.ports.split(",") if p.strip()]
    os.makedirs(args.out, exist_ok=True)
    keylog = os.path.abspath(os.path.join(args.out, f"{args.name}.keys.log"))
    raw = os.path.join(args.out, f".{args.name}.raw.pcapng")
    final = os.path.join(args.out, f"{args.name}.pcapng")
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
            servers.append(server_process(os.path.join(bin_dir, "retrieverserver"), common + m["retriever"],
                                         os.path.join(work, "retriever.log"), ports[1]))
        say(f"Started senderserver on {ports[0]}" + (f" and retrieverserver on {ports[1]}" if len(ports) > 1 else "") +
            f" (--tls {args.mode or 'implicit'}), writing TLS secrets to {keylog}; logs in {work}.")
    say(f"Capturing tcp ports {','.join(map(str, ports))} on lo into {final}.")
    if not args.servers:
        say("Servers started BEFORE this point do not write the key log: start (or restart) your servers and")
        say("clients with it, in each terminal:")
        say(f"    export SSLKEYLOGFILE={keylog}")
    say("Stop with Ctrl-C here, or `make capture-stop" + (f" NAME={args.name}" if args.name != "live" else "") +
        "` in another terminal. The file is written either way.")
    cap = Dumpcap(ports, raw, progress=True)
    with open(pid_file(args.name), "w") as f:
        f.write(str(os.getpid()))
    say(f"capture running (pid {os.getpid()})")  # a line scripts and tests wait for
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stopped.set())
    signal.signal(signal.SIGTERM, lambda *a: stopped.set())
    signal.signal(signal.SIGHUP, lambda *a: stopped.set())
    try:
        while not stopped.wait(0.5):
            if cap.proc.poll() is not None:
                say("\nwarning: dumpcap stopped on its own; writing what it captured")
                break
        say("")
        probe = cap.stop()
    finally:
        for server in servers:
            server.stop()
        try:
            os.unlink(pid_file(args.name))
        except FileNotFoundError:
            pass
    finish(raw, final, probe, keylog,
           # The mode as known (our servers, or --mode); else check and report tell it from the traffic.
           f"maillab mode={args.mode or ('implicit' if args.servers else 'guess')} smtp={ports[0]} "
           f"http={ports[1] if len(ports) > 1 else 0}")
    os.unlink(raw)
    say(f"wrote {final} ({'with' if os.path.getsize(keylog) else 'WITHOUT'} TLS secrets)")


def stop(args):
    pid = running_capture(args.name)
    if pid is None:
        raise SystemExit(f"no capture named {args.name} is running (start one with `make capture-start`)")
    os.kill(pid, signal.SIGTERM)
    # Wait until it has written its file: the pid file goes last.
    deadline = time.monotonic() + 60
    while os.path.exists(pid_file(args.name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    say(f"capture {args.name} (pid {pid}) finished: {os.path.join(args.out, args.name + '.pcapng')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["session", "start", "stop"])
    parser.add_argument("--modes", default="implicit,starttls,off")
    parser.add_argument("--mode", help="for start: the TLS mode your servers use (default: implicit with --servers, "
                                       "else told from the traffic)")
    parser.add_argument("--name", default=None)
    parser.add_argument("--ports", default="9000,9100")
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
