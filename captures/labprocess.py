"""What the lab's Python tools share (the e2e harness, the benchmarks, captures, the classroom): start
one of our servers and wait for its ready line (no sleeps), stop it, read the password a registration
printed, and the benchmarks' pair of servers on a fresh CA. One copy, imported from the repository
root as `captures.labprocess` (by tests/e2e/harness.py, tests/bench/*.py, tests/classroom.py and
captures/capture.py)."""

import os
import select
import signal
import socket
import subprocess
import tempfile
import time


class ServerProcess:
    """A server process whose stdout says "ready port=N" once it listens (ours), or, with
    `ready_line=False`, one that prints nothing (nginx, openssl s_server): then `port` is polled
    until it accepts. stderr goes to `log`. The ready line may name more ports after the first
    (the retriever's "ready port=N pop3=M pop3-plain=K"): `ports` holds them all by name."""

    def __init__(self, cmd, log, ready_line=True, port=None, timeout=60, **popen):
        self.cmd = cmd
        self.log_path = log
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, **popen)
        self.port = port
        self.ports = {}
        if ready_line:
            line = self._first_line(timeout)
            if not line.startswith("ready port="):
                self.stop()
                raise RuntimeError(f"{os.path.basename(cmd[0])} did not start: {line!r}; see {log}")
            self.ports = {key: int(value) for key, _, value in (item.partition("=") for item in line.split()[1:])
                          if value.isdigit()}
            self.port = self.ports["port"]
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise RuntimeError(f"{os.path.basename(cmd[0])} did not listen on {port}; see {log}")
                    time.sleep(0.02)

    def _first_line(self, timeout):
        # Bytes, not a text stream's readline after select: the stream's buffer could hold the line
        # while select says the pipe is empty.
        fd = self.proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n", 1)[0].decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the server (SIGTERM, then SIGKILL after `timeout`); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode


def has_ipv6_loopback():
    """Whether this machine has ::1 (a container or chroot may have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def password_from(output):
    """The password a registration printed ("password: 12345447"), or "" when there is none."""
    _, found, rest = output.partition("password: ")
    return rest.split()[0] if found and rest.split() else ""


def free_port():
    """A loopback TCP port free at the time of asking (for servers that cannot take port 0: nginx)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def lab_servers(bin_dir, prefix, settings):
    """A fresh working folder with its own lab CA, and a sender and a retriever on one database
    there (free ports, `settings` as their --config). Returns (work, ca, sender, retriever)."""
    work = tempfile.mkdtemp(prefix=prefix)
    certs = os.path.join(work, "certs")
    subprocess.run([os.path.join(bin_dir, "maillab-certs"), certs], check=True, stdout=subprocess.DEVNULL)
    config = os.path.join(work, "bench.properties")
    with open(config, "w") as f:
        f.writelines(f"{key} = {value}\n" for key, value in settings.items())
    common = [f"--db={work}/bench.db", f"--certs={certs}", f"--config={config}"]
    sender = ServerProcess([os.path.join(bin_dir, "senderserver"), "--port=0"] + common, f"{work}/sender.log")
    retriever = ServerProcess([os.path.join(bin_dir, "retrieverserver"), "--port=0"] + common, f"{work}/retriever.log")
    return work, os.path.join(certs, "ca.pem"), sender, retriever
