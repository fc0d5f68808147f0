"""TLS failures as lab scenarios (issue 19): `make capture SCENARIO=...` (captures/scenarios.py) makes
one capture per failure; stock tshark (an empty HOME, no options) shows its alert or the server's
clear-text answer, and report/scenarios.py names it; the client's words are recorded beside it. Also
the retriever's ALPN check: a client offering only another mail protocol gets no_application_protocol,
a client offering none is served."""

import json
from html import escape
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile

from captures import capture
from report import scenarios as report_scenarios
from tests.e2e.harness import Server, Skip, test, says_no_application_protocol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What each scenario must show: the alert tshark names, or the server's clear-text answers.
EXPECTED = {
    "wrong-host": ("alert", "42", "bad_certificate", 4),
    "unknown-ca": ("alert", "48", "unknown_ca", 4),
    "expired": ("alert", "45", "certificate_expired", 4),
    "tls12-client": ("alert", "70", "protocol_version", None),
    "wrong-service": ("alert", "120", "no_application_protocol", 5),
    "plaintext-on-tls": ("clear", None, "421 4.7.0", None),
}


def stock_tshark(path, args):
    """tshark as on a fresh machine: no preferences, no profile (an empty HOME), no -d/-o."""
    with tempfile.TemporaryDirectory() as home:
        return subprocess.run(["tshark", "-r", path] + args, capture_output=True, text=True, errors="replace",
                              env={"PATH": os.environ["PATH"], "HOME": home}, timeout=60).stdout


@test
def each_tls_failure_scenario_is_captured_decoded_and_explained(lab):
    if not (capture.port_available(465) and capture.port_available(443)):
        raise Skip("ports 465 and 443 are taken (or not root): stock tshark decodes TLS only there")
    out_dir = lab.path("scenarios")
    certs = lab.path("certs")
    done = subprocess.run([sys.executable, "-m", "captures.scenarios", "--scenario", "all", "--out", out_dir,
                           "--build", lab.build, "--certs", certs], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(os.listdir(os.path.join(certs, "scenarios"))) == ["expired", "unknown-ca", "wrong-host"]
    for name, (kind, number, word, client_exit) in EXPECTED.items():
        pcap = os.path.join(out_dir, f"scenario-{name}.pcapng")
        with open(os.path.join(out_dir, f"scenario-{name}.scenario.json")) as f:
            record = json.load(f)
        assert record["scenario"] == name and record["clients"], record
        if client_exit is not None:
            assert record["clients"][0]["exit"] == client_exit, record
        if kind == "alert":
            shown = stock_tshark(pcap, ["-Y", "tls.alert_message", "-T", "fields", "-e", "tls.alert_message.desc"])
            assert number in shown.split(), f"{name}: no alert {number} in stock tshark: {shown!r}"
        else:
            shown = stock_tshark(pcap, ["-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.payload"])
            payloads = [bytes.fromhex(p.replace(":", "")) for p in shown.split()]
            assert any(p.startswith(b"421 4.7.0 ") and b"TLS first" in p for p in payloads), name
            assert any(p.startswith(b"HTTP/1.1 400 ") and b"This port speaks HTTPS" in p for p in payloads), name
        section = report_scenarios.scenario_section(pcap)
        assert section and word in section and "<script" not in section.lower(), (name, section)
        assert "What the client told its user" in section
        said = record["clients"][0]["stderr"] + record["clients"][0]["stdout"]
        if name != "tls12-client":
            first_words = [line for line in said.splitlines() if not line.startswith("note: ")][0][:40]
            assert escape(first_words) in section, (name, first_words, section)
    text = subprocess.run([sys.executable, "-m", "report.scenarios", os.path.join(out_dir, "scenario-expired.pcapng")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert text.returncode == 0 and "certificate_expired (45)" in text.stdout and "client noticed" in text.stdout, text
    # make report FILE= on a scenario capture: the report's own page holds the explanation.
    report_dir = os.path.join(out_dir, "reports")
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "expired", "--out", report_dir, "--",
                          os.path.join(out_dir, "scenario-expired.pcapng")], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    with open(os.path.join(report_dir, "expired", "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert "What went wrong" in page and "certificate_expired" in page, page[:2000]


@test
def a_capture_that_is_no_scenario_has_no_scenario_section(lab):
    path = lab.path("plain.pcap")
    with open(path, "wb") as f:  # a classic pcap: its header, one empty Ethernet frame
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        f.write(struct.pack("<IIII", 0, 0, 14, 14) + b"\0" * 14)
    assert report_scenarios.scenario_section(path) is None
    out = subprocess.run([sys.executable, "-m", "report.scenarios", path], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 1 and "not a scenario capture" in out.stdout, out


@test
def the_retriever_refuses_a_client_offering_only_another_mail_protocol(lab):
    with Server(lab, "retrieverserver") as server:
        for offered in (["imap"], ["smtp"], ["pop3", "imap"]):
            context = lab.ssl_context()
            context.set_alpn_protocols(offered)
            try:
                with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10),
                                         server_hostname="localhost"):
                    raise AssertionError(f"ALPN {offered} was accepted")
            except ssl.SSLError as e:
                if "unknown error" in str(e):
                    # Python on OpenSSL before 3.0.14 names neither the alert nor its code: the alert's
                    # number, as openssl s_client shows it, tells which one the server sent.
                    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-alpn",
                                          ",".join(offered), "-CAfile", lab.ca, "-servername", "localhost"],
                                         input="", capture_output=True, text=True, timeout=20)
                    assert "alert number 120" in out.stdout + out.stderr, (e, out.stderr)
                else:
                    assert says_no_application_protocol(str(e)), e
        for offered in ([], ["http/1.1"], ["h2", "http/1.1"]):
            context = lab.ssl_context()
            if offered:
                context.set_alpn_protocols(offered)
            with context.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=10),
                                     server_hostname="localhost") as t:
                assert t.selected_alpn_protocol() == ("http/1.1" if offered else None), offered
