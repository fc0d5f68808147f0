#!/usr/bin/python3
"""make bench-platform: the few numbers that say whether maillab is as fast on this release as on
the others, measured the same way everywhere (run by `make bench-platforms` in each release's
chroot) and written as one JSON object:

  - handshake_per_s: TLS 1.3 full handshakes the sender completes per second (maillab-load, c=20)
  - session_per_s:   SMTP sessions per second, a new connection per message (maillab-load, c=20)
  - smtplib_per_s, smtplib_p99_ms: whole sessions (connect, TLS, EHLO, AUTH, one message, QUIT) from
    Python's smtplib, the client students use, 20 threads at once; rate and 99th percentile
  - versions of Poco, OpenSSL, Python and the release, for the table.

  python3 -m tests.bench.platform_bench --build build --out FILE [--seconds N]"""

import argparse
import json
import os
import platform
import smtplib
import ssl
import statistics
import subprocess
import tempfile
import threading
import time

from captures.labprocess import ServerProcess as Proc, password_from  # a server started and waited for by its ready line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(exe, scenario, port, extra, seconds):
    out_json = tempfile.mktemp(suffix=".jsonl")
    subprocess.run([exe, "--scenario", scenario, "--port", str(port), "--connections", "20", "--count", "100000000",
                    "--duration", str(seconds), "--json", out_json, "--quiet"] + extra, check=True,
                   stdout=subprocess.DEVNULL)
    result = json.loads(open(out_json).read().splitlines()[-1])
    os.unlink(out_json)
    return result


def smtplib_sessions(port, ca, user, password, seconds, threads=20):
    context = ssl.create_default_context(cafile=ca)
    latencies, errors = [], []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker():
        while time.monotonic() < stop_at:
            began = time.monotonic()
            try:
                with smtplib.SMTP_SSL("localhost", port, context=context, timeout=30,
                                      local_hostname="bench.localdomain") as s:
                    s.login(user, password)
                    s.sendmail(user, [user], b"Subject: bench\r\n\r\n" + (b"x" * 78 + b"\r\n") * 50)
                with lock:
                    latencies.append(time.monotonic() - began)
            except Exception as e:  # counted, not fatal: the rate says what it cost
                with lock:
                    errors.append(repr(e))

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0
    return {"per_s": len(latencies) / elapsed, "p99_ms": p99 * 1000,
            "median_ms": statistics.median(latencies) * 1000 if latencies else 0, "errors": len(errors)}


def versions():
    def dpkg(package):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout
        return out.split("-")[0].split("+")[0] or "?"
    release = "?"
    if os.path.exists("/etc/os-release"):
        fields = dict(line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line)
        release = fields.get("PRETTY_NAME", "?").strip('"')
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()[1]
    return {"release": release, "poco": dpkg("libpoco-dev"), "openssl": openssl,
            "python": platform.python_version(), "gcc": dpkg("g++")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    bin_dir = os.path.join(ROOT, args.build, "bin")
    work = tempfile.mkdtemp(prefix="maillab-pbench-")
    certs = os.path.join(work, "certs")
    subprocess.run([os.path.join(bin_dir, "maillab-certs"), certs], check=True, stdout=subprocess.DEVNULL)
    ca = os.path.join(certs, "ca.pem")
    sender = Proc([os.path.join(bin_dir, "senderserver"), "--port=0", f"--db={work}/bench.db",
                          f"--certs={certs}"], os.path.join(work, "sender.log"))
    port = sender.port
    try:
        out = subprocess.run([os.path.join(bin_dir, "senderclient"), "--port", str(port), "--ca", ca, "--user", "ana"],
                             capture_output=True, text=True, check=True).stdout
        password = password_from(out)
        exe = os.path.join(bin_dir, "maillab-load")
        result = versions()
        print(f"{result['release']}: handshakes ...", flush=True)
        result["handshake_per_s"] = load(exe, "handshake", port, [], args.seconds)["per_second"]
        print(f"{result['release']}: SMTP sessions ...", flush=True)
        result["session_per_s"] = load(exe, "smtp", port, ["--user", "ana@447.edu", "--password", password,
                                                           "--to", "ana@447.edu", "--size", "4096"],
                                       args.seconds)["per_second"]
        print(f"{result['release']}: smtplib sessions ...", flush=True)
        py = smtplib_sessions(port, ca, "ana@447.edu", password, args.seconds)
        result.update({"smtplib_per_s": py["per_s"], "smtplib_p99_ms": py["p99_ms"],
                       "smtplib_median_ms": py["median_ms"], "smtplib_errors": py["errors"]})
    finally:
        sender.stop()
        subprocess.run(["rm", "-rf", work])
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
