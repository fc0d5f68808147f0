"""The instructor's kit, end to end: lab tokens (a known HMAC vector), a class server's certificate
for its host name, and a synthetic class graded in one run: two honest live sessions, a renamed copy
of a classmate's capture, a capture made against another server, a truncated file and a text file,
each with the verdict it must get."""

import csv
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys

from harness import Server, Skip, register, test
from labprocess import password_from

passwords = {}  # account -> password, registered once per class server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "captures"))
import labtoken  # noqa: E402


@test
def lab_tokens_are_an_hmac_of_the_student_id(lab):
    # Known vector: HMAC-SHA256("correct horse", "maillab-lab-token/v1/ana") starts c8be5bf607,
    # whose 40 bits in Crockford base32 are s2z5qxg7 (also checked here against openssl's HMAC).
    assert labtoken.token("correct horse", "ana") == "lab-s2z5-qxg7"
    openssl = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", "correct horse"], input=b"maillab-lab-token/v1/ana",
                             capture_output=True, check=True).stdout.decode().split()[-1]
    assert openssl.startswith("c8be5bf607")
    assert hmac.new(b"correct horse", b"maillab-lab-token/v1/ana", hashlib.sha256).hexdigest() == openssl
    assert labtoken.token("correct horse", " ANA ") == labtoken.token("correct horse", "ana")  # ids as typed
    assert labtoken.token("correct horse", "bob") != labtoken.token("correct horse", "ana")
    assert labtoken.token("another secret", "ana") != labtoken.token("correct horse", "ana")
    out = subprocess.run(["make", "-s", "token", "STUDENT=ana", "SECRET=correct horse"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "lab-s2z5-qxg7", out.stdout + out.stderr


@test
def a_class_server_certificate_names_its_host_and_keeps_the_ca(lab):
    certs = lab.path("class-certs")
    exe = os.path.join(lab.bin, "maillab-certs")
    subprocess.run([exe, certs], check=True, capture_output=True)
    ca_before = open(os.path.join(certs, "ca.pem")).read()
    out = subprocess.run([exe, "--host", "lab.example.edu", certs], capture_output=True, text=True, check=True)
    assert "DNS:lab.example.edu" in out.stdout
    san = subprocess.run(["openssl", "x509", "-in", os.path.join(certs, "server.pem"), "-noout", "-ext", "subjectAltName"],
                         capture_output=True, text=True, check=True).stdout
    assert "DNS:lab.example.edu" in san and "DNS:localhost" in san
    assert open(os.path.join(certs, "ca.pem")).read() == ca_before  # students keep the CA they were given
    verify = subprocess.run(["openssl", "verify", "-CAfile", os.path.join(certs, "ca.pem"),
                             "-verify_hostname", "lab.example.edu", os.path.join(certs, "server.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def student_session(lab, student, account, sender, retriever, out_dir, secret, client_args=()):
    """A student's live capture, as the lab asks: capture-start on the class ports, register, send
    the lab message with the token in its Subject, read the mailbox, a conditional GET; Ctrl-C."""
    import uuid
    from test_captures import LiveCapture
    name = f"{student}-{uuid.uuid4().hex[:8]}"  # never a capture name a student's own run could hold
    live = LiveCapture(lab, name, out_dir, servers=False, ports=[sender.port, retriever.port])
    try:
        return session_steps(lab, student, account, sender, retriever, out_dir, secret, name, live, list(client_args))
    except BaseException:
        live.abandon()
        raise


def session_steps(lab, name_for_token, account, sender, retriever, out_dir, secret, name, live, client_args):
    env = dict(os.environ, SSLKEYLOGFILE=os.path.join(out_dir, f"{name}.keys.log"))
    sc = [os.path.join(lab.bin, "senderclient"), "--port", str(sender.port), "--ca", lab.ca] + client_args
    rc = [os.path.join(lab.bin, "retrieverclient"), "--port", str(retriever.port), "--ca", lab.ca]
    password = passwords.get(account)
    if not password:
        out = subprocess.run(sc + ["--user", account], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        password = passwords[account] = password_from(out.stdout)
    sent = subprocess.run(sc + ["--user", account, "--password", password, "--to", account, "--subject",
                                f"TLS lab {labtoken.token(secret, name_for_token)}"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert sent.returncode == 0, sent.stderr
    shown = subprocess.run(rc + ["--user", account, "--password", password, "--verbose"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    etag = re.search(r"(?im)^S: etag: *(.+?)\s*$", shown.stderr).group(1)
    again = subprocess.run(rc + ["--user", account, "--password", password, "--header", f"If-None-Match: {etag}"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    live.interrupt()
    return os.path.join(out_dir, f"{name}.pcapng")


@test
def a_synthetic_class_is_graded_in_one_run(lab):
    from test_captures import can_capture
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")
    secret = "class secret"
    passwords.clear()
    work = lab.path("class")
    live = os.path.join(work, "live")
    submissions = os.path.join(work, "submissions")
    os.makedirs(submissions)
    class_settings = {"store.provenance": "true"}
    class_db, other_db = lab.path("class-server.db"), lab.path("other-server.db")
    with Server(lab, "senderserver", class_settings, db=class_db) as sender, \
            Server(lab, "retrieverserver", class_settings, db=class_db) as retriever:
        ana = student_session(lab, "ana", "ana", sender, retriever, live, secret)
        bob = student_session(lab, "bob", "bob", sender, retriever, live, secret)
    # Bob also hands in the STARTTLS comparison capture, made against the class server in that mode.
    with Server(lab, "senderserver", class_settings, db=class_db, args=["--tls", "starttls"]) as sender, \
            Server(lab, "retrieverserver", class_settings, db=class_db) as retriever:
        bob_starttls = student_session(lab, "bob", "bob", sender, retriever, live, secret, ["--tls", "starttls"])
    passwords.clear()  # another server: new accounts
    # Dave made his capture against a server of his own (another database, same lab CA).
    with Server(lab, "senderserver", class_settings, db=other_db) as sender, \
            Server(lab, "retrieverserver", class_settings, db=other_db) as retriever:
        dave = student_session(lab, "dave", "dave", sender, retriever, live, secret)
    shutil.copy(ana, os.path.join(submissions, "ana.pcapng"))
    shutil.copy(bob, os.path.join(submissions, "bob-lab3.pcapng"))
    shutil.copy(bob_starttls, os.path.join(submissions, "bob-starttls.pcapng"))
    shutil.copy(ana, os.path.join(submissions, "carol.pcapng"))  # carol hands in ana's file, renamed
    shutil.copy(dave, os.path.join(submissions, "dave.pcapng"))
    data = open(bob, "rb").read()
    with open(os.path.join(submissions, "erin.pcapng"), "wb") as f:
        f.write(data[: len(data) // 2])  # cut short
    with open(os.path.join(submissions, "frank.pcapng"), "w") as f:
        f.write("I could not get Wireshark to work, sorry\n")
    roster = os.path.join(work, "roster.csv")
    with open(roster, "w") as f:
        f.write("student,account\n")
        for s in ("ana", "bob", "carol", "dave", "erin", "frank"):
            f.write(f"{s},{s}@447.edu\n")
    # This lab asks for the STARTTLS comparison capture too: the default rubric with that row on.
    rubric = os.path.join(work, "rubric.csv")
    with open(os.path.join(ROOT, "report", "rubric.csv")) as f:
        text = f.read().replace("# starttls_capture,", "starttls_capture,")
    with open(rubric, "w") as f:
        f.write(text)
    run = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "report", "grade.py"), submissions, "--roster", roster,
                          "--secret", secret, "--db", class_db, "--rubric", rubric], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    with open(os.path.join(submissions, "grades.csv"), newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == ["ana", "bob", "carol", "dave", "erin", "frank"], rows.keys()
    everything = ["tls13", "secrets", "greeting", "auth", "mail", "token", "get", "conditional", "provenance"]
    for honest in ("ana", "bob"):
        r = rows[honest]
        assert all(r[s] == "ok" for s in everything), (honest, r)
        assert f"own session of {honest}@447.edu at " in r["provenance_verdict"], r["provenance_verdict"]
        for report in r["report"].split():
            assert report.endswith("report.html") and os.path.exists(os.path.join(submissions, report))
    # Bob's two files make one row with every step; Ana did not hand in the comparison capture.
    assert rows["bob"]["file"] == "bob-lab3.pcapng, bob-starttls.pcapng" and len(rows["bob"]["report"].split()) == 2
    assert rows["bob"]["starttls_capture"] == "ok" and rows["bob"]["score"] == rows["bob"]["max"] == "105", rows["bob"]
    assert rows["ana"]["starttls_capture"] == "missing" and rows["ana"]["score"] == "100"
    assert "no STARTTLS capture" in rows["ana"]["reasons"]
    assert "shares its TLS sessions with carol.pcapng" in rows["ana"]["provenance_verdict"]
    carol = rows["carol"]
    assert carol["provenance_verdict"].startswith("session of another account (ana@447.edu), not carol@447.edu"), carol
    assert carol["provenance"] == "missing" and carol["token"] == "missing"  # ana's token is not carol's
    assert "ana.pcapng" in carol["provenance_verdict"]
    dave = rows["dave"]
    assert dave["provenance"] == "missing" and dave["provenance_verdict"].startswith("not captured against this server"), dave
    assert dave["token"] == "ok" and dave["mail"] == "ok"  # an honest session, on another server
    erin = rows["erin"]
    assert "cut short" in erin["notes"] and erin["tls13"] == "ok", erin
    frank = rows["frank"]
    assert frank["score"] == "0" and "not a capture file" in frank["reasons"], frank
    html = open(os.path.join(submissions, "grades.html")).read()
    assert html.count('<tr class="student">') == 6 and "not captured against this server" in html


@test
def a_class_server_listens_on_every_address_with_the_class_settings(lab):
    """What `make class-senderserver` starts: common/class.properties (every address, provenance on)."""
    from labprocess import has_ipv6_loopback
    settings = {}
    for line in open(os.path.join(ROOT, "common", "class.properties")):
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = (x.strip() for x in line.split("=", 1))
            settings[key] = value
    assert settings["store.provenance"] == "true"
    with Server(lab, "senderserver", settings) as server:
        log = server.log_text()
        assert f"address=0.0.0.0:{server.port}" in log, log
        assert f"[::]:{server.port}" in log or not has_ipv6_loopback(), log
        assert register(lab, server.port, "classy")
    import sqlite3
    con = sqlite3.connect(server.db)
    rows = con.execute("SELECT service, account FROM tls_sessions").fetchall()
    con.close()
    assert ("smtp", "classy@447.edu") in rows, rows

