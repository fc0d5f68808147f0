"""A class on a network, on one machine (tests/classroom.py, `make classroom`): network namespaces
for the class server lab.maillab.test, eight students and the instructor; every student's verdict
and score from `make grade`, the class board mid-class, and nothing left behind. Also: `make
capture-start HOST=` from a student's machine captures only that host's traffic on the lab's ports,
and `make report FILE=` reports exactly that file into its own folder.

Needs root and `ip netns` (skipped, saying so, without them)."""

import csv
import os
import shutil
import signal
import subprocess
import uuid

from captures.labprocess import ServerProcess, password_from
from tests import classroom
from tests.e2e.harness import Skip, test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def needs_namespaces():
    why = classroom.available()
    if why:
        raise Skip(why)
    from tests.e2e.test_captures import can_capture
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")


def rubric_points():
    """step -> points of the rubric `make grade` uses by default (the steps graded, not the ones
    commented out)."""
    for path in (os.path.join(ROOT, "captures", "rubric.csv"), os.path.join(ROOT, "report", "rubric.csv")):
        if os.path.exists(path):
            with open(path, newline="") as f:
                return {r["step"].strip(): float(r["points"]) for r in csv.DictReader(f)
                        if r.get("step") and not r["step"].startswith("#")}
    raise AssertionError("no rubric.csv in captures/ or report/")


def number(text):
    return float(text) if text not in ("", None) else 0.0


def step_points(row, step):
    """A step's column in grades.csv: its points ("10") or 0; older graders wrote ok/missing."""
    value = row[step]
    if value in ("ok", "missing", "n/a"):
        return value
    return number(value)


def score(row):
    return number(row.get("total", row.get("score")))


def reasons(row):
    return " ".join(row.get(k, "") or "" for k in ("verdict", "reasons", "notes", "provenance_verdict", "files", "file"))


def leftovers(tag):
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = [line.split()[0] for line in names.splitlines() if line.startswith(tag + "-")]
    if os.path.isdir("/etc/netns"):
        mine += [f"/etc/netns/{d}" for d in os.listdir("/etc/netns") if d.startswith(tag + "-")]
    return mine


@test
def a_class_on_a_virtual_network_is_graded_and_torn_down(lab):
    """Eight students in their own namespaces against the class server lab.maillab.test: the honest
    ones get every point; the copy, the capture of another server, the unrelated traffic, the cut
    file, the text file and the absent student get what they must; the board shows the class
    mid-way; and no namespace, /etc/netns folder or process is left."""
    needs_namespaces()
    room = classroom.Classroom(build=os.path.relpath(lab.build, ROOT), out=lab.path("classroom"), quiet=True)
    result = room.run()
    tag = room.net.tag
    assert leftovers(tag) == [], leftovers(tag)
    assert result["timings"]["total"] < 180, result["timings"]

    points = rubric_points()
    full = sum(points.values())
    rows = result["grades"]
    students = [s for s, _, _ in classroom.STUDENTS]
    assert sorted(rows) == sorted(students), sorted(rows)  # hal too: on the roster, nothing handed in
    for honest in ("ana", "bob"):
        r = rows[honest]
        for step, value in points.items():
            assert step_points(r, step) in (value, "ok"), (honest, step, r)
        assert score(r) == full and number(r["max"]) == full, (honest, r)
        assert f"own TLS sessions of {honest}@447.edu" in reasons(r), r
    assert "carol.pcapng" in reasons(rows["ana"]), rows["ana"]  # the copy is flagged on the original's row too
    # Carol's file is Ana's: its sessions are on record for ana, not carol: nothing that needs the
    # class server counts, and the copy is named on her row.
    carol = rows["carol"]
    assert score(carol) == 0, carol
    assert "copy" in reasons(carol) and "ana@447.edu" in reasons(carol), carol
    # Dave did the lab against his own servers: a maillab session, TLS 1.3 with its secrets, but
    # none of it on the class server's record.
    dave = rows["dave"]
    for step in points:
        if step in ("tls13", "secrets"):
            assert step_points(dave, step) in (points[step], "ok"), (step, dave)
        else:
            assert step_points(dave, step) in (0, "missing"), (step, dave)
    assert score(dave) == points.get("tls13", 0) + points.get("secrets", 0), dave
    assert "not captured against this server" in reasons(dave) or "not on the class server" in reasons(dave), dave
    # Erin's file holds curl and Python's http.server: not a maillab session at all.
    erin = rows["erin"]
    assert score(erin) == 0 and "no maillab session" in reasons(erin), erin
    # Frank's file was cut in half: what it holds before the cut counts (his registration), the
    # end (the conditional GET) is missing, and the row says the file is cut short.
    frank = rows["frank"]
    assert step_points(frank, "auth") in (points["auth"], "ok"), frank
    assert step_points(frank, "conditional") in (0, "missing"), frank
    assert 0 < score(frank) < full and "cut short" in reasons(frank), frank
    # Gina handed in a text file named like a capture.
    gina = rows["gina"]
    assert score(gina) == 0 and "not a capture" in reasons(gina), gina
    hal = rows["hal"]
    assert score(hal) == 0 and "no submission" in reasons(hal).lower(), hal
    html = open(os.path.join(result["submissions"], "grades.html")).read()
    assert all(s in html for s in students)

    # The board, as the instructor sees it during the class (maillab-admin class-status).
    if result["board_mid"] is None:
        raise Skip(f"grades asserted; the class board was not: {result['board_note']}")
    before = {r["student"]: r for r in result["board_before"]["students"]}
    assert sorted(before) == sorted(students) and not any(r["registered_at"] for r in before.values()), before
    mid = {r["student"]: r for r in result["board_mid"]["students"]}
    for done in ("ana", "bob", "frank"):
        r = mid[done]
        assert all(r[k] for k in ("registered_at", "lab_message_at", "mailbox_read_at", "not_modified_at")), r
        assert r["failed_logins"] == 0, r
    assert mid["carol"]["registered_at"] and not mid["carol"]["lab_message_at"], mid["carol"]
    assert "lab message" in mid["carol"]["hint"], mid["carol"]
    assert mid["gina"]["failed_logins"] >= 1 and mid["gina"]["last_failed_login_at"], mid["gina"]
    for away in ("dave", "erin", "hal"):  # never on the class server
        assert mid[away]["registered_at"] is None and mid[away]["last_seen_at"] is None, mid[away]
        assert "regist" in mid[away]["hint"], mid[away]
    assert "ana@447.edu" in result["board_table"] and "hal" in result["board_table"], result["board_table"]


def capture_host_network():
    """A tiny class: the server (lab.maillab.test, our two servers and a web server on 8080), the
    student who captures, and a neighbour running a senderserver of her own on 465."""
    return classroom.Network([classroom.Host("lab", 1, [classroom.SERVER_NAME]),
                              classroom.Host("s1", 11, ["s1.maillab.test"]),
                              classroom.Host("s2", 12, ["s2.maillab.test"])])


@test
def capture_start_with_host_captures_only_that_hosts_traffic(lab):
    """`make capture-start HOST=<the server's name> PORT=465 RPORT=443` on a student's machine:
    dumpcap on the interface that routes there; the file holds the sessions with that host on those
    ports and nothing else (not its web server on 8080, not a neighbour's server on 465), with only
    its own connections' secrets embedded; capture-stop prints the two commands that come next."""
    needs_namespaces()
    name = "mlct" + uuid.uuid4().hex[:8]
    work = lab.path("capture-host")
    os.makedirs(work)
    files = [os.path.join(ROOT, "captures", f"{name}{ext}") for ext in (".pcapng", ".keys.log")]
    net = capture_host_network()
    capture = None
    try:
        with net:
            room = classroom.Classroom(build=os.path.relpath(lab.build, ROOT), out=work)
            certs = os.path.join(work, "certs")
            subprocess.run(net.cmd("lab", [room.exe("maillab-certs"), "--host", classroom.SERVER_NAME, certs]),
                           check=True, capture_output=True)
            common = [f"--config={ROOT}/common/class.properties", f"--db={work}/class.db", f"--certs={certs}"]
            room.server(net, "lab", "senderserver", common + ["--port=465"], os.path.join(work, "s.log"), work)
            room.server(net, "lab", "retrieverserver", common + ["--port=443"], os.path.join(work, "r.log"), work)
            web = ServerProcess(net.cmd("lab", ["/usr/bin/python3", "-u", "-c",
                                                "import http.server as h; s = h.HTTPServer(('0.0.0.0', 8080), "
                                                "h.SimpleHTTPRequestHandler); print('ready port=8080', flush=True); "
                                                "s.serve_forever()"]),
                                os.path.join(work, "web.log"), cwd=work)
            net.procs.append(web.proc)
            other = os.path.join(work, "other-certs")
            subprocess.run(net.cmd("s2", [room.exe("maillab-certs"), "--host", "s2.maillab.test", other]), check=True,
                           capture_output=True)
            room.server(net, "s2", "senderserver", [f"--db={work}/other.db", f"--certs={other}", "--port=465",
                                                    f"--bind={net.address('s2')}"], os.path.join(work, "o.log"), work)

            capture = net.popen("s1", ["make", "-s", "-C", ROOT, "capture-start", f"HOST={net.ns('lab')}", "PORT=465",
                                       "RPORT=443", f"NAME={name}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
            said = ""
            while "capture running" not in said:
                line = capture.stdout.readline()
                assert line, said
                said += line
            assert "on eth0, only the traffic with " + net.ns("lab") in said, said
            assert "--keylog" in said and "SSLKEYLOGFILE" in said, said  # how to write the key log
            keylog = files[1]
            env = dict(os.environ, SSLKEYLOGFILE=keylog)
            ca = os.path.join(certs, "ca.pem")

            def client(program, port, args, host=net.ns("lab"), ca=ca, servername=classroom.SERVER_NAME):
                out = subprocess.run(net.cmd("s1", [room.exe(program), "--host", host, "--port", str(port), "--ca", ca,
                                                    "--servername", servername] + args),
                                     capture_output=True, text=True, env=env, timeout=60)
                assert out.returncode == 0, out.stdout + out.stderr
                return out
            password = password_from(client("senderclient", 465, ["--user", "sam"]).stdout)
            client("retrieverclient", 443, ["--user", "sam", "--password", password])
            web_get = subprocess.run(net.cmd("s1", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                    f"http://{net.ns('lab')}:8080/"]), capture_output=True, text=True,
                                     timeout=30)
            assert web_get.stdout == "200", web_get.stdout + web_get.stderr
            client("senderclient", 465, ["--user", "nia"], host="s2.maillab.test", ca=os.path.join(other, "ca.pem"),
                   servername="s2.maillab.test")

            stop = subprocess.run(net.cmd("s1", ["make", "-s", "-C", ROOT, "capture-stop", f"NAME={name}"]),
                                  capture_output=True, text=True, timeout=120)
            assert stop.returncode == 0, stop.stdout + stop.stderr
            assert f"make check-capture FILE=captures/{name}.pcapng" in stop.stdout, stop.stdout
            assert f"make report FILE=captures/{name}.pcapng" in stop.stdout, stop.stdout
            rest = capture.communicate(timeout=120)[0]
            assert capture.returncode == 0, rest
            # The key log holds the neighbour's connection too: only the two with the server are embedded.
            import re
            written = len(open(keylog).read().splitlines())
            embedded = re.search(r"with TLS secrets: (\d+) key log lines", rest)
            assert embedded and 0 < int(embedded.group(1)) < written, (written, rest)

        final = files[0]
        rows = subprocess.run(["tshark", "-r", final, "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.srcport",
                               "-e", "tcp.dstport", "-e", "udp.port"], capture_output=True, text=True).stdout.splitlines()
        server, me = net.address("lab"), net.address("s1")
        assert len(rows) > 20, rows
        for row in rows:
            src, dst, sport, dport, udp = (row.split("\t") + [""] * 5)[:5]
            assert {src, dst} == {server, me}, row  # no neighbour, nothing else
            assert not udp and ({sport, dport} & {"465", "443"}), row  # no web server, no probe
        ports = {r.split("\t")[3] for r in rows if r.split("\t")[0] == me}
        assert ports == {"465", "443"}, ports
        # Decrypted with the embedded secrets alone (465 and 443 need no Decode As).
        smtp = subprocess.run(["tshark", "-r", final, "-Y", "smtp.req.command", "-T", "fields", "-e",
                               "smtp.req.command"], capture_output=True, text=True).stdout.split()
        http = subprocess.run(["tshark", "-r", final, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri"],
                              capture_output=True, text=True).stdout.split()
        assert "AUTH" in smtp and http == ["/mailboxes/sam@447.edu/messages"], (smtp, http)
        info = subprocess.run(["capinfos", final], capture_output=True, text=True).stdout
        assert "host=" + net.ns("lab") in info and "interface=eth0" in info, info
    finally:
        if capture is not None and capture.poll() is None:
            os.killpg(capture.pid, signal.SIGINT)
            capture.wait(timeout=60)
        for path in files + [os.path.join(ROOT, "captures", f".{name}.pid")]:
            if os.path.exists(path):
                os.unlink(path)
    assert leftovers(net.tag) == [], leftovers(net.tag)


@test
def make_report_file_reports_that_file_into_its_own_folder(lab):
    """`make report FILE=...` reports exactly that file, into report/<its name>/: no scripted capture
    is made, report/lab/ is not touched, and a file name is a file name (nothing in it runs)."""
    from tests.e2e.test_captures import captures
    source = captures(lab)["implicit"]  # skips without capture rights
    tag = "mlcr" + uuid.uuid4().hex[:8]
    work = lab.path("report-file")
    os.makedirs(work)
    plain = os.path.join(work, f"{tag}.pcapng")
    # Shell and make syntax in a file name: quotes, ;, backquotes, $(shell ...).
    odd = os.path.join(work, f"it's;touch INJECTED-{tag};`touch INJECTED2-{tag}`$(shell touch INJECTED3-{tag}).pcapng")
    shutil.copy(source, plain)
    shutil.copy(source, odd)
    lab_report = os.path.join(ROOT, "report", "lab")
    stamp = lambda: os.stat(lab_report).st_mtime_ns if os.path.exists(lab_report) else None  # noqa: E731
    before = (stamp(), sorted(f for f in os.listdir(os.path.join(ROOT, "captures")) if f.endswith(".pcapng")))
    import re
    made = [os.path.join(ROOT, "report", tag),
            os.path.join(ROOT, "report", re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(odd)[:-len(".pcapng")]))]
    try:
        out = subprocess.run(["make", "-s", "report", f"FILE={plain}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        md = open(os.path.join(made[0], "report.md")).read()
        assert f"Generated by `make report` from `{tag}.pcapng`." in md, md[:400]
        assert md.count("## ") >= 1 and "lab-implicit" not in md
        assert f"report/{tag}/report.html" in out.stdout, out.stdout
        out = subprocess.run(["make", "-s", "report", f"FILE={odd}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert os.path.exists(os.path.join(made[1], "report.html")), (os.listdir(os.path.join(ROOT, "report")), out.stdout)
        for where in (ROOT, work, os.path.join(ROOT, "report")):
            assert not [f for f in os.listdir(where) if f.startswith("INJECTED")], os.listdir(where)
        missing = subprocess.run(["make", "-s", "report", f"FILE={work}/nothing.pcapng"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)
        assert missing.returncode != 0 and "no such file" in missing.stdout + missing.stderr, missing.stdout
        after = (stamp(), sorted(f for f in os.listdir(os.path.join(ROOT, "captures")) if f.endswith(".pcapng")))
        assert after == before, (before, after)  # report/lab/ untouched, no scripted capture made
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
