#!/usr/bin/python3
"""TLS failures as lab scenarios (issue 19): each one a short capture of a connection that fails the
way students meet it, with the TLS key log embedded (the alerts TLS 1.3 encrypts decode too), and
what the client told its user recorded beside it.

  python3 -m captures.scenarios --scenario wrong-host      (make capture SCENARIO=wrong-host)
  python3 -m captures.scenarios --scenario all             (every scenario; make capture SCENARIO=all)

Writes captures/scenario-<name>.pcapng and captures/scenario-<name>.scenario.json (the scenario, the
client's command, what it printed, its exit status). The certificates a scenario needs are made in
certs/scenarios/<name>/, never in certs/ (the lab's CA and server certificate stay as they are).
The servers run on the standard ports (465 and 443, loopback only) where they can be had, so stock
Wireshark decodes the file with no settings; report/scenarios.py explains each file."""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from captures import capture
from captures.capture import ROOT, Dumpcap, finish, port_available, say, server_process

SMTPS_PORT, HTTPS_PORT = capture.IANA_PORTS["implicit"]
CLIENT_TIMEOUT = 30  # seconds: every scenario's client ends well within it (they fail in < 3 s)

# Each scenario: what it shows, the server it runs (sender or retriever) and with which certificates
# (None: the lab's; else the maillab-certs options for certs/scenarios/<name>/), the CA the client
# trusts ("lab" or "scenario"), the client and the alert (or clear-text answer) expected on the wire.
SCENARIOS = {
    "wrong-host": {
        "story": "The server's certificate names mail.example.org only; the client connects to localhost.",
        "server": "sender", "certs": ["--only-host", "mail.example.org"], "trust": "scenario",
        "client": "senderclient", "expect": "bad_certificate",
    },
    "unknown-ca": {
        "story": "The server's certificate is signed by another CA than the one the client trusts (certs/ca.pem).",
        "server": "sender", "certs": [], "trust": "lab", "client": "senderclient", "expect": "unknown_ca",
    },
    "expired": {
        "story": "The server's certificate expired yesterday; the client trusts its CA.",
        "server": "sender", "certs": ["--expired"], "trust": "scenario", "client": "senderclient",
        "expect": "certificate_expired",
    },
    "tls12-client": {
        "story": "A client that speaks TLS 1.2 at most (openssl s_client -tls1_2) meets a TLS 1.3-only server.",
        "server": "sender", "certs": None, "trust": "lab", "client": "s_client", "expect": "protocol_version",
    },
    "wrong-service": {
        "story": "The SMTP client on the HTTPS port: it offers ALPN \"smtp\", the retriever speaks only http/1.1 "
                 "(RFC 7301 3.2).",
        "server": "retriever", "certs": None, "trust": "lab", "client": "senderclient",
        "expect": "no_application_protocol",
    },
    "plaintext-on-tls": {
        "story": "Plain SMTP (Python's smtplib.SMTP, not SMTP_SSL) on the implicit-TLS port, and plain HTTP "
                 "(curl http://) on the HTTPS port: each server answers in clear with what to use instead.",
        "server": "both", "certs": None, "trust": "lab", "client": "smtplib+curl", "expect": "421",
    },
}
ORDER = list(SCENARIOS)

SMTPLIB_CLIENT = """
import smtplib, sys
try:
    smtplib.SMTP("localhost", int(sys.argv[1]), timeout=20)
    print("connected in clear (unexpected)")
except (smtplib.SMTPException, OSError) as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(1)
"""


def shown(path):
    """A path as a student types it (relative to the repository)."""
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def scenario_certs(name, spec, bin_dir, lab_certs):
    """<lab certs>/scenarios/<name>/ made anew (a stale expired certificate must not linger), or the lab's."""
    if spec["certs"] is None:
        return lab_certs
    folder = os.path.join(lab_certs, "scenarios", name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    capture.run([os.path.join(bin_dir, "maillab-certs")] + spec["certs"] + [folder])
    return folder


def client_commands(spec, bin_dir, ca, smtp_port, http_port):
    """The commands the scenario's client runs (each a list), in order. Each writes its TLS secrets
    where SSLKEYLOGFILE says (ours, curl, openssl and Python alike)."""
    if spec["client"] == "senderclient":
        port = http_port if spec["server"] == "retriever" else smtp_port
        return [[os.path.join(bin_dir, "senderclient"), "--port", str(port), "--ca", ca, "--user", "ana"]]
    if spec["client"] == "s_client":
        return [["openssl", "s_client", "-connect", f"localhost:{smtp_port}", "-tls1_2", "-CAfile", ca,
                 "-servername", "localhost", "-brief"]]
    return [[sys.executable, "-c", SMTPLIB_CLIENT, str(smtp_port)],
            ["curl", "-sS", "-i", f"http://localhost:{http_port}/"]]


def display(cmd):
    """The command as a student would type it: our programs by their build path, the script by name."""
    words = [shown(w) if os.path.isabs(w) else w for w in cmd]
    if len(words) > 2 and words[1] == "-c":
        words = ["python3", "-c", "'import smtplib; smtplib.SMTP(\"localhost\", " + words[3] + ")'"]
        return " ".join(words)
    return shlex.join(words)


def run_scenario(name, args):
    spec = SCENARIOS[name]
    bin_dir = os.path.join(ROOT, args.build, "bin")
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    lab_certs = os.path.abspath(args.certs)
    capture.run([os.path.join(bin_dir, "maillab-certs"), lab_certs])  # the lab's, when missing
    certs = scenario_certs(name, spec, bin_dir, lab_certs)
    # As a student types it (the clients run in the repository): their messages name it so.
    ca = shown(os.path.join(certs if spec["trust"] == "scenario" else lab_certs, "ca.pem"))
    work = tempfile.mkdtemp(prefix=f"maillab-scenario-{name}-")
    keylog = os.path.join(work, "keys.log")
    common = [f"--db={work}/lab.db", f"--certs={certs}", f"--keylog={keylog}", "--tls=implicit"]
    standard = not args.free_ports and port_available(SMTPS_PORT) and port_available(HTTPS_PORT)
    if not standard:
        say("   note: ports 465 and 443 are not available here (run as root, or free them): using free ports; "
            "Wireshark then needs the maillab profile (make wireshark-profile) to show SMTP and HTTP")
    say(f"== scenario {name}: {spec['story']}")
    servers = []
    cap = None
    try:
        if spec["server"] in ("sender", "both"):
            servers.append(server_process(os.path.join(bin_dir, "senderserver"), common,
                                          os.path.join(work, "sender.log"), SMTPS_PORT if standard else 0))
        if spec["server"] in ("retriever", "both"):
            # No POP3: a scenario is HTTPS only, and a retriever the student already runs holds 9995.
            servers.append(server_process(os.path.join(bin_dir, "retrieverserver"), common + ["--pop3-port=off"],
                                          os.path.join(work, "retriever.log"), HTTPS_PORT if standard else 0))
        ports = {"sender": 0, "retriever": 0}
        for kind, server in zip([k for k in ("sender", "retriever") if spec["server"] in (k, "both")], servers):
            ports[kind] = server.port
        raw = os.path.join(work, "raw.pcapng")
        cap = Dumpcap([p for p in ports.values() if p], raw)
        env = dict(os.environ, SSLKEYLOGFILE=keylog)
        runs = []
        for cmd in client_commands(spec, bin_dir, ca, ports["sender"], ports["retriever"]):
            done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=CLIENT_TIMEOUT,
                                  env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
            runs.append({"command": display(cmd), "exit": done.returncode, "stdout": done.stdout[-4000:],
                         "stderr": done.stderr[-4000:]})
            say(f"   $ {display(cmd)}")
            for line in (done.stdout + done.stderr).strip().splitlines()[-3:]:
                say(f"     {line}")
            say(f"     (exit {done.returncode})")
        probe = cap.stop()
    finally:
        if cap is not None:
            cap.abort()
        for server in servers:
            server.stop()
    final = os.path.join(out_dir, f"scenario-{name}.pcapng")
    smtp_port, http_port = ports["sender"], ports["retriever"]
    embedded = finish(raw, final, probe, keylog,
                      f"maillab mode=implicit smtp={smtp_port} http={http_port} scenario={name}", only_captured=True)
    record = {"scenario": name, "story": spec["story"], "expect": spec["expect"], "capture": os.path.basename(final),
              "certificates": shown(certs), "trusted_ca": ca, "smtp_port": smtp_port, "http_port": http_port,
              "secrets_embedded": embedded or 0, "clients": runs}
    with open(sidecar(final), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    shutil.rmtree(work, ignore_errors=True)
    say(f"   wrote {shown(final)} and {shown(sidecar(final))}")
    return final


def sidecar(path):
    """Where a scenario capture's record is: captures/scenario-x.pcapng -> captures/scenario-x.scenario.json."""
    base = path[:-len(".pcapng")] if path.endswith(".pcapng") else path
    return base + ".scenario.json"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", required=True, help="one of " + ", ".join(ORDER) + ", or all (a comma list too)")
    parser.add_argument("--out", default=os.path.join(ROOT, "captures"))
    parser.add_argument("--build", default="build")
    parser.add_argument("--certs", default=os.path.join(ROOT, "certs"),
                        help="the lab's certificates (default certs/); scenario ones go in its scenarios/ folder")
    parser.add_argument("--free-ports", action="store_true", help="free ports instead of 465 and 443")
    args = parser.parse_args(argv)
    names = ORDER if args.scenario == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"unknown scenario {', '.join(unknown) or '(none)'}: use one of {', '.join(ORDER)}, or all")
    written = [run_scenario(n, args) for n in names]
    say("Open a file in Wireshark (already decrypted), or read the explanation: "
        + ("python3 -m report.scenarios " + shown(written[0]) if len(written) == 1 else
           "python3 -m report.scenarios captures/scenario-NAME.pcapng"))
    return written


if __name__ == "__main__":
    main()
