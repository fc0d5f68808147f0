"""The instructor's kit, end to end: lab tokens (a known HMAC vector), a class server's certificate
for its host name, and a synthetic class graded in one run (python3 -m report.grade): two honest
students, a copier, a capture against another server, unrelated traffic, a truncated file, a text
file and an absent student, each with the verdict and score it must get; check and grade agreeing on
every step; the class server's certificate and record deciding; odd file names; the page at 1280 px."""

import csv
import hashlib
import hmac
import os
import re
import shutil
import subprocess

from captures import labtoken
from captures.labprocess import password_from
from tests.e2e.harness import Server, Skip, register, test

passwords = {}  # account -> password, registered once per class server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    from tests.e2e.test_captures import LiveCapture
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
    # A dash a keyboard makes: the subject travels as RFC 2047 encoded words, the token inside them
    # (tshark decodes them into imf.subject: checked, grading finds the token without help).
    sent = subprocess.run(sc + ["--user", account, "--password", password, "--to", account, "--subject",
                                f"TLS lab \u2013 {labtoken.token(secret, name_for_token)}"], capture_output=True, text=True, env=env,
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


# ---- a synthetic class, graded -------------------------------------------------------------------
# Made once for the tests below: live captures of real sessions against a class server (provenance
# on), one against a server of the student's own, one of unrelated traffic; then a folder of
# submissions as students hand them in.
SECRET = "class secret"
ROSTER = ("ana", "bob", "carol", "dave", "erin", "frank", "gina", "hank")
_class = {}


def unrelated_capture(lab, out_dir):
    """curl fetching / from Python's http.server, captured like a student's session."""
    import uuid
    from tests.e2e.test_captures import LiveCapture
    name = "u" + uuid.uuid4().hex[:8]
    live = LiveCapture(lab, name, out_dir, servers=False)
    web = subprocess.Popen(["/usr/bin/python3", "-u", "-m", "http.server", str(live.ports[1]), "--bind", "127.0.0.1",
                            "--directory", out_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert web.stdout.readline().startswith("Serving HTTP")
        got = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{live.ports[1]}/"],
                             capture_output=True, text=True, timeout=30)
        assert got.stdout == "200", got.stdout + got.stderr
    except BaseException:
        live.abandon()
        raise
    finally:
        web.terminate()
        web.wait()
    live.interrupt()
    return os.path.join(out_dir, f"{name}.pcapng")


def synthetic_class(lab):
    from tests.e2e.test_captures import can_capture
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")
    if _class:
        return _class
    passwords.clear()
    work = lab.path("class")
    live = os.path.join(work, "live")
    class_settings = {"store.provenance": "true"}
    class_db, other_db = lab.store(lab.path("class-server.db")), lab.store(lab.path("other-server.db"))
    made = {}
    with Server(lab, "senderserver", class_settings, db=class_db) as sender, \
            Server(lab, "retrieverserver", class_settings, db=class_db) as retriever:
        for student in ("ana", "bob", "erin"):
            made[student] = student_session(lab, student, student, sender, retriever, live, SECRET)
    # Bob also hands in the STARTTLS comparison capture, made against the class server in that mode.
    with Server(lab, "senderserver", class_settings, db=class_db, args=["--tls", "starttls"]) as sender, \
            Server(lab, "retrieverserver", class_settings, db=class_db) as retriever:
        made["bob-starttls"] = student_session(lab, "bob", "bob", sender, retriever, live, SECRET, ["--tls", "starttls"])
    passwords.clear()  # another server: new accounts
    # Dave made his capture against a server of his own (another database, same lab CA).
    with Server(lab, "senderserver", class_settings, db=other_db) as sender, \
            Server(lab, "retrieverserver", class_settings, db=other_db) as retriever:
        made["dave"] = student_session(lab, "dave", "dave", sender, retriever, live, SECRET)
    made["gina"] = unrelated_capture(lab, live)
    submissions = os.path.join(work, "submissions")
    os.makedirs(submissions)
    shutil.copy(made["ana"], os.path.join(submissions, "ana.pcapng"))
    shutil.copy(made["bob"], os.path.join(submissions, "bob-lab3.pcapng"))
    shutil.copy(made["bob-starttls"], os.path.join(submissions, "bob-starttls.pcapng"))
    shutil.copy(made["ana"], os.path.join(submissions, "carol.pcapng"))  # carol hands in ana's file, renamed
    shutil.copy(made["dave"], os.path.join(submissions, "dave.pcapng"))
    data = open(made["erin"], "rb").read()
    with open(os.path.join(submissions, "erin.pcapng"), "wb") as f:
        f.write(data[: len(data) * 3 // 5])  # her own session, cut short
    with open(os.path.join(submissions, "frank.pcapng"), "w") as f:
        f.write("I could not get Wireshark to work, sorry\n")
    shutil.copy(made["gina"], os.path.join(submissions, "gina.pcapng"))
    # hank hands in nothing.
    roster = os.path.join(work, "roster.csv")
    with open(roster, "w") as f:
        f.write("student,account\n" + "".join(f"{s},{s}@447.edu\n" for s in ROSTER))
    # This lab asks for the STARTTLS comparison capture too: the default rubric with that row on.
    rubric = os.path.join(work, "rubric.csv")
    with open(os.path.join(ROOT, "captures", "rubric.csv")) as f:
        text = f.read().replace("# starttls_capture,", "starttls_capture,")
    with open(rubric, "w") as f:
        f.write(text)
    _class.update(work=work, made=made, submissions=submissions, roster=roster, rubric=rubric, class_db=class_db,
                  other_db=other_db)
    return _class


def grade(lab, folder, *extra, roster=True, cwd=ROOT, db=None):
    c = _class
    argv = ["/usr/bin/python3", "-m", "report.grade", "--secret", SECRET, "--db", db or c["class_db"], "--rubric",
            c["rubric"], "--admin", lab.exe("maillab-admin"), "--cert", os.path.join(lab.certs, "server.pem")]
    argv += (["--roster", c["roster"]] if roster else []) + list(extra) + ["--", folder]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=cwd,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert "Traceback" not in run.stderr, run.stdout + run.stderr
    return run


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@test
def a_synthetic_class_is_graded_row_by_row(lab):
    """Every roster student a row with its verdict and score: two honest students, a copier (both
    rows name the other file), a capture against another server, unrelated traffic, a truncated
    file, a text file, an absent student; every file in the folder named with what became of it."""
    c = synthetic_class(lab)
    run = grade(lab, c["submissions"])
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {r["student"]: r for r in read_csv(os.path.join(c["submissions"], "grades.csv"))}
    assert list(rows) == list(ROSTER), list(rows)  # the roster's order, hank included
    steps = ["tls13", "secrets", "greeting", "auth", "mail", "token", "get", "conditional", "provenance"]
    points = {"tls13": 10, "secrets": 10, "greeting": 10, "auth": 10, "mail": 15, "token": 15, "get": 10,
              "conditional": 10, "provenance": 10, "starttls_capture": 5}
    for honest in ("ana", "bob"):
        r = rows[honest]
        assert all(float(r[s]) == points[s] for s in steps), (honest, r)
    assert rows["bob"]["files"] == "bob-lab3.pcapng bob-starttls.pcapng", rows["bob"]
    assert rows["bob"]["starttls_capture"] == "5" and rows["bob"]["total"] == rows["bob"]["max"] == "105", rows["bob"]
    assert rows["ana"]["starttls_capture"] == "0" and rows["ana"]["total"] == "100", rows["ana"]
    assert "no STARTTLS session" in rows["ana"]["reasons"], rows["ana"]
    # The copy: nothing for carol, her row names ana's file; ana's row names carol's.
    carol = rows["carol"]
    assert carol["total"] == "0" and all(carol[s] == "0" for s in steps), carol
    assert "copy of the TLS sessions of ana@447.edu (file ana.pcapng)" in carol["verdict"], carol
    assert "its TLS sessions were handed in also by carol.pcapng" in rows["ana"]["verdict"], rows["ana"]
    # Another server: an honest session (TLS 1.3 and its secrets count), nothing else.
    dave = rows["dave"]
    assert dave["tls13"] == "10" and dave["secrets"] == "10" and dave["total"] == "20", dave
    assert "not captured against the class server" in dave["verdict"], dave
    assert "only in sessions that do not count (not on the class server's record)" in dave["reasons"], dave
    # Her own session, cut short: what it holds counts, the row says it is cut short.
    erin = rows["erin"]
    assert erin["auth"] == "10" and erin["conditional"] == "0" and 0 < float(erin["total"]) < 100, erin
    assert "cut short" in erin["verdict"], erin
    frank = rows["frank"]
    assert frank["total"] == "0" and "not a capture: a text file" in frank["verdict"], frank
    gina = rows["gina"]
    assert gina["total"] == "0" and gina["get"] == "0" and "no maillab session in it" in gina["verdict"], gina
    hank = rows["hank"]
    assert hank["total"] == "0" and hank["verdict"] == "no submission" and hank["files"] == "", hank
    # Every file named, with what became of it.
    files = {r["file"]: r for r in read_csv(os.path.join(c["submissions"], "grades-files.csv"))}
    outputs = {"grades.csv", "grades-files.csv", "grades.html", "grades-reports"}
    assert sorted(files) == sorted(set(os.listdir(c["submissions"])) - outputs), sorted(files)
    assert files["ana.pcapng"]["outcome"] == "graded for ana"
    assert files["erin.pcapng"]["outcome"].startswith("graded for erin: truncated"), files["erin.pcapng"]
    assert files["frank.pcapng"]["outcome"].startswith("not a capture: a text file"), files["frank.pcapng"]
    assert files["carol.pcapng"]["provenance_verdict"].startswith("copy of the TLS sessions of ana@447.edu")
    assert files["carol.pcapng"]["provenance"] == "missing" and files["ana.pcapng"]["provenance"] == "ok"
    for name in ("ana.pcapng", "bob-lab3.pcapng", "dave.pcapng"):
        report = files[name]["report"]
        assert report.endswith("report.html") and os.path.exists(os.path.join(c["submissions"], report)), files[name]
    out = run.stdout.strip().splitlines()
    assert out[-1] == ("8 files (7 graded (1 of them truncated), 1 not a capture, 0 unassigned, 0 key logs, "
                       "0 skipped), 8 students (7 with a submission, 1 without)"), out[-1]
    html = open(os.path.join(c["submissions"], "grades.html")).read()
    assert html.count('<tr class="student">') == 8 and html.count('<tr class="file">') == 8
    assert "default-src 'none'" in html and "<script" not in html


@test
def check_and_grade_agree_on_every_step(lab):
    """The student's check and the instructor's grade on the same files: every step check decides
    (all but the token and the provenance) has the same verdict in both, where the file's sessions
    are the student's own on the class server (provenance aside)."""
    c = synthetic_class(lab)
    folder = lab.path("agree")
    os.makedirs(folder)
    names = ["ana.pcapng", "bob-lab3.pcapng", "bob-starttls.pcapng", "erin.pcapng", "frank.pcapng", "gina.pcapng"]
    for name in names:
        shutil.copy(os.path.join(c["submissions"], name), folder)
    run = grade(lab, folder, "--no-reports")
    assert run.returncode == 0, run.stdout + run.stderr
    graded = {r["file"]: r for r in read_csv(os.path.join(folder, "grades-files.csv"))}
    checked = subprocess.run(["/usr/bin/python3", "-m", "captures.check", "--json", "--rubric", c["rubric"], "--"] +
                             [os.path.join(folder, n) for n in names], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    import json
    results = {os.path.basename(r["file"]): r for r in json.loads(checked.stdout)}
    compared = 0
    for name in names:
        for step, verdict in results[name]["steps"].items():
            if verdict["status"] == "instructor":
                assert step in ("token", "provenance"), (name, step, verdict)
                continue
            assert graded[name][step] == verdict["status"], (name, step, verdict, graded[name])
            compared += 1
    assert results["frank.pcapng"]["exit"] == 3, results
    assert results["gina.pcapng"]["exit"] == 4 and results["erin.pcapng"]["exit"] == 1, results
    assert compared >= 4 * 8, compared
    # And with the provenance: "complete" by check means every point but token's is given by grade.
    for name in ("ana.pcapng", "bob-lab3.pcapng", "bob-starttls.pcapng"):
        assert results[name]["exit"] == 0, results[name]
        for step, verdict in results[name]["steps"].items():
            wanted = "ok" if verdict["status"] == "instructor" else verdict["status"]
            assert graded[name][step] == wanted and wanted in ("ok", "n/a"), (name, step, graded[name])


@test
def grading_needs_the_class_servers_certificate_and_record(lab):
    """Sessions whose certificate is not the class server's earn nothing; no record, no grading."""
    c = synthetic_class(lab)
    folder = lab.path("othercert")
    os.makedirs(folder)
    shutil.copy(os.path.join(c["submissions"], "ana.pcapng"), folder)
    shutil.copy(os.path.join(c["submissions"], "bob-lab3.pcapng"), folder)
    other = lab.path("other-certs")
    subprocess.run([lab.exe("maillab-certs"), other], check=True, capture_output=True)
    argv_other = ["/usr/bin/python3", "-m", "report.grade", "--no-reports", "--secret", SECRET, "--db", c["class_db"],
                  "--admin", lab.exe("maillab-admin"), "--cert", os.path.join(other, "server.pem"), "--roster",
                  c["roster"], "--", folder]
    run = subprocess.run(argv_other, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {r["student"]: r for r in read_csv(os.path.join(folder, "grades.csv"))}
    # (TLS 1.3 and its secrets are the student's work wherever it was done: 20 points, as for dave.)
    assert rows["ana"]["total"] == "20" and "certificate is not the class server's" in rows["ana"]["verdict"], rows["ana"]
    # The other server's database: the same files are not on its record.
    run = grade(lab, folder, "--no-reports", db=c["other_db"])
    rows = {r["student"]: r for r in read_csv(os.path.join(folder, "grades.csv"))}
    assert rows["ana"]["provenance"] == "0" and "not captured against the class server" in rows["ana"]["verdict"]
    # No database, or a tool that cannot read the record: a usage error, not grades.
    run = grade(lab, folder, "--no-reports", db=lab.path("missing.db"))
    assert run.returncode == 2 and "no class server database" in run.stderr, run.stdout + run.stderr
    fake = lab.path("fake-admin")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho 'unknown command: tls-sessions' >&2\nexit 64\n")
    os.chmod(fake, 0o755)
    run = grade(lab, folder, "--no-reports", "--admin", fake)
    assert run.returncode == 2 and "tls-sessions failed" in run.stderr, run.stdout + run.stderr


@test
def a_fake_record_decides_by_both_randoms(lab):
    """The record is matched by (client_random, server_random), through the tool's JSON contract: a
    session whose client_random is on record with another server_random does not count."""
    c = synthetic_class(lab)
    import json
    from captures import facts
    f = facts.read(c["made"]["ana"])
    rows = [{"client_random": s.client_random, "server_random": s.server_random, "service": s.service,
             "peer": s.client, "started_at": 1796000000, "account": "ana@447.edu"} for s in f.sessions]
    rows[1]["server_random"] = "0" * 64  # the mail was sent in this session
    record = lab.path("record.json")
    with open(record, "w") as out:
        json.dump(rows, out)
    fake = lab.path("fake-admin")
    with open(fake, "w") as out:  # prints only the rows whose client_random is asked for
        out.write(f"#!/usr/bin/python3\nimport json, sys\nrows = json.load(open({record!r}))\n"
                  "asked = set(sys.argv[sys.argv.index('--json') + 1:])\n"
                  "print(json.dumps([r for r in rows if r['client_random'] in asked]))\n")
    os.chmod(fake, 0o755)
    folder = lab.path("fake-record")
    os.makedirs(folder)
    shutil.copy(c["made"]["ana"], os.path.join(folder, "ana.pcapng"))
    run = grade(lab, folder, "--no-reports", "--admin", fake)
    assert run.returncode == 0, run.stdout + run.stderr
    row = {r["student"]: r for r in read_csv(os.path.join(folder, "grades.csv"))}["ana"]
    assert row["mail"] == "0" and row["token"] == "0" and row["get"] == "10" and row["auth"] == "10", row
    assert "server_random is not the one on the class server's record" in row["reasons"], row


@test
def odd_file_names_are_graded_apart_and_never_run(lab):
    """A relative DIR; names with spaces, `x y` beside `x_y`, a leading '-', an ESC byte, a formula:
    each its own report folder, escaped when printed, neutralised in the CSV; a key log that links
    out of the folder is refused; a stopped run leaves the rows it had."""
    c = synthetic_class(lab)
    folder = lab.path("odd names")
    os.makedirs(folder)
    ana = os.path.join(c["submissions"], "ana.pcapng")
    names = ["x y.pcapng", "x_y.pcapng", "-ana.pcapng", "esc\x1b[31mred.pcapng", "=1+2.pcapng", "$(touch INJECTED).pcapng",
             "--help.pcapng", "osc\x1b]0;owned\x07\u009b2J.pcapng", "@sum.pcapng"]
    for name in names:
        shutil.copy(ana, os.path.join(folder, name))
    os.symlink("/etc/passwd", os.path.join(folder, "x y.keys.log"))
    rel = os.path.relpath(folder, lab.dir)
    run = grade(lab, rel, roster=False, cwd=lab.dir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "\x1b" not in run.stdout + run.stderr and "esc\\x1b[31mred.pcapng" in run.stdout, run.stdout
    # No C0 or C1 control character at all (OSC, BEL, CSI as one byte) reaches the terminal.
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f]", run.stdout + run.stderr), run.stdout + run.stderr
    assert "osc\\x1b]0;owned\\x07\\x9b2J.pcapng" in run.stdout, run.stdout
    assert not os.path.exists(os.path.join(lab.dir, "INJECTED")) and not os.path.exists(os.path.join(ROOT, "INJECTED"))
    files = {r["file"]: r for r in read_csv(os.path.join(folder, "grades-files.csv"))}
    assert "'=1+2.pcapng" in files and "'-ana.pcapng" in files and "'@sum.pcapng" in files, sorted(files)
    assert "'--help.pcapng" in files and files["'--help.pcapng"]["outcome"] == "graded for ana", files["'--help.pcapng"]
    assert files["x y.keys.log"]["outcome"].startswith("refused"), files["x y.keys.log"]
    reports = [files[n]["report"] for n in files if files[n]["report"]]
    assert len(reports) == len(names) == len(set(reports)), reports
    for report in reports:
        assert os.path.exists(os.path.join(folder, report)), report  # links relative to the folder
    html = open(os.path.join(folder, "grades.html")).read()
    assert "\x1b" not in html and "<touch" not in html
    # Without a roster the student is the account on record: every copy is ana's.
    rows = read_csv(os.path.join(folder, "grades.csv"))
    assert [r["student"] for r in rows] == ["ana"] and rows[0]["total"] == "100", rows
    # Stopped half-way (SIGKILL after the first file): the outputs hold what was graded.
    import signal
    import time
    for name in ("grades.csv", "grades-files.csv", "grades.html"):
        os.unlink(os.path.join(folder, name))
    argv = ["/usr/bin/python3", "-m", "report.grade", "--no-reports", "--secret", SECRET, "--db", c["class_db"],
            "--admin", lab.exe("maillab-admin"), "--cert", os.path.join(lab.certs, "server.pem"), "--", folder]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = proc.stdout.readline()
    while first and ": graded for" not in first:
        first = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.1)
    files = read_csv(os.path.join(folder, "grades-files.csv"))
    assert any(r["outcome"] == "graded for ana" for r in files), files
    assert len(files) == len(names) + 1, files  # every file listed, graded or not yet


@test
def the_grades_page_is_readable_at_1280_px(lab):
    """grades.html in headless Chromium at 1280 px: no column narrower than its header's longest
    word, a file's one error in one cell, distinct headers, a strict Content-Security-Policy. The
    page allows no script, so a copy without the policy carries the measuring script."""
    chromium = shutil.which("chromium")
    if not chromium:
        raise Skip("chromium is not installed (make test-deps installs it where the distribution packages it)")
    c = synthetic_class(lab)
    page = os.path.join(c["submissions"], "grades.html")
    if not os.path.exists(page):
        assert grade(lab, c["submissions"]).returncode == 0
    html = open(page).read()
    assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'; ' \
           'img-src \'self\'">' in html
    for table in re.findall(r"<thead>(.*?)</thead>", html):
        headers = re.findall(r"<th>(.*?)</th>", table)
        assert len(headers) == len(set(headers)), headers
    frank = next(row for row in html.split("<tr") if ">frank<" in row)
    assert frank.count("a text file") == 1 and 'colspan="10"' in frank, frank
    probe = page.replace("grades.html", "probe.html")
    script = """<script>
const bad = [];
for (const th of document.querySelectorAll('th')) {
  const longest = th.textContent.split(/\\s+/).reduce((a, b) => b.length > a.length ? b : a, '');
  const span = document.createElement('span');
  span.style.whiteSpace = 'nowrap';
  span.textContent = longest;
  th.appendChild(span);
  const need = span.getBoundingClientRect().width;
  th.removeChild(span);
  const style = getComputedStyle(th);
  const inner = th.getBoundingClientRect().width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  if (inner + 0.5 < need) bad.push(th.textContent + ':' + inner.toFixed(1) + '<' + need.toFixed(1));
}
document.body.setAttribute('data-narrow', bad.join(','));
document.body.setAttribute('data-measured', document.querySelectorAll('th').length);
</script></body>"""
    with open(probe, "w") as f:
        f.write(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace("</body>", script))
    import tempfile
    profile = tempfile.mkdtemp(prefix="maillab-chromium-")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
            "--window-size=1280,900"]
    try:
        out = subprocess.run(base + ["--dump-dom", "file://" + probe], capture_output=True, text=True, timeout=120)
        shot = os.path.join(tempfile.gettempdir(), "maillab-grades-1280.png")  # the page as an instructor sees it
        subprocess.run(base + [f"--screenshot={shot}", "file://" + page], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = out.stdout
    assert 'data-measured="' in dom, out.stderr[-800:]
    assert int(dom.split('data-measured="')[1].split('"')[0]) >= 15, dom[:2000]
    narrow = dom.split('data-narrow="')[1].split('"')[0]
    assert narrow == "", f"columns narrower than their header's longest word at 1280 px: {narrow}"


@test
def a_class_server_listens_on_every_address_with_the_class_settings(lab):
    """What `make class-senderserver` starts: common/class.properties (every address, provenance on)."""
    from captures.labprocess import has_ipv6_loopback
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
    # The record, read as the grader reads it: through the store's tool, never the database itself.
    import json
    out = subprocess.run([lab.exe("maillab-admin"), "--db", server.db, "tls-sessions", "--json"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert any(r["service"] == "smtp" and r["account"] == "classy@447.edu" and len(r["client_random"]) == 64 and
               len(r["server_random"]) == 64 for r in rows), rows

