"""Captures, checks and reports, end to end: tshark really captures the scripted session in each
mode, check.py finds the lab's sequence, report.py's tables match the known session, and a capture
without keys is reported as undecryptable rather than as an error."""

import os
import subprocess

from tests.e2e.harness import Skip, test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def can_capture():
    if os.geteuid() == 0:
        return True
    probe = subprocess.run(["dumpcap", "-i", "lo", "-c", "1", "-a", "duration:1", "-w", "/dev/null", "-q"],
                           capture_output=True, text=True)
    return probe.returncode == 0


_captures = {}


def captures(lab):
    """The three modes captured once for all tests here."""
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")
    if not _captures:
        out_dir = lab.path("captures")
        os.makedirs(out_dir)
        build = os.path.relpath(lab.build, ROOT)
        run = subprocess.run(["/usr/bin/python3", "-m", "captures.capture", "session", "--out", out_dir,
                              "--build", build], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert run.returncode == 0, run.stdout + run.stderr
        for mode in ("implicit", "starttls", "off"):
            _captures[mode] = os.path.join(out_dir, f"lab-{mode}.pcapng")
            assert os.path.getsize(_captures[mode]) > 1000
        run = subprocess.run(["/usr/bin/python3", "-m", "captures.capture", "session", "--out", out_dir,
                              "--build", build, "--modes", "implicit", "--name", "nokeys", "--without-keys"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert run.returncode == 0, run.stdout + run.stderr
        _captures["nokeys"] = os.path.join(out_dir, "nokeys-implicit.pcapng")
    return _captures


def check(path):
    return subprocess.run(["/usr/bin/python3", "-m", "captures.check", path],
                          capture_output=True, text=True, timeout=120)


@test
def capture_files_open_decrypted_and_pass_the_check(lab):
    files = captures(lab)
    for mode in ("implicit", "starttls", "off"):
        out = check(files[mode])
        assert out.returncode == 0, out.stdout + out.stderr
        assert "all of the lab's sequence is there" in out.stdout
        info = subprocess.run(["capinfos", files[mode]], capture_output=True, text=True).stdout
        assert f"maillab mode={mode}" in info
        if mode != "off":
            assert "Number of decryption secrets in file: 1" in info
            assert "[ok] TLS 1.3 handshake" in out.stdout
        # Every connection ends with close_notify and FINs, never a reset.
        resets = subprocess.run(["tshark", "-r", files[mode], "-Y", "tcp.flags.reset == 1"], capture_output=True,
                                text=True).stdout
        assert resets.strip() == "", f"{mode}: {resets}"
    # Readable by the user who made them.
    assert os.stat(files["implicit"]).st_mode & 0o444 == 0o444


@test
def a_capture_without_keys_is_undecryptable_not_an_error(lab):
    files = captures(lab)
    out = check(files["nokeys"])
    assert out.returncode == 2, out.stdout + out.stderr
    assert "undecryptable" in out.stdout and "Traceback" not in out.stderr


@test
def check_finds_what_is_missing_and_guesses_ports_without_our_comment(lab):
    files = captures(lab)
    # A student's capture of only the SMTP part: no GET.
    smtp_only = lab.path("smtp-only.pcapng")
    port = subprocess.run(["capinfos", files["off"]], capture_output=True, text=True).stdout.split("smtp=")[1].split()[0]
    subprocess.run(["tshark", "-r", files["off"], "-2", "-R", f"tcp.port == {port}", "-w", smtp_only],
                   check=True, capture_output=True)
    out = check(smtp_only)
    assert out.returncode == 1 and "missing: HTTP GET" in out.stdout, out.stdout + out.stderr
    assert f"smtp port={port}" in out.stdout  # found without the comment


@test
def report_tables_match_the_known_session(lab):
    files = captures(lab)
    out_dir = lab.path("report")
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "lab", "--out", out_dir,
                          files["implicit"], files["starttls"], files["off"]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = os.path.join(out_dir, "lab")
    md = open(os.path.join(report, "report.md")).read()
    assert os.path.getsize(os.path.join(report, "report.html")) > 10000
    # Handshake table: TLS 1.3 chosen, the suite and group our contexts prefer, the lab certificate.
    # (one row per distinct value, with the connections that share it)
    for row in ("| version chosen (supported_versions) | TLS 1.3 | all ", "| cipher suite chosen | TLS_AES_256_GCM_SHA384 | all ",
                "| key_share group chosen | x25519 | all ", "| certificate subject | CN=localhost,O=maillab | all ",
                "| certificate issuer | CN=maillab lab CA,O=maillab | all "):
        assert row in md, row
    assert "ClientHello, " not in md or "ServerHello" in md
    # (capture text reaches pandoc escaped: "<" is "\<", never an autolink or HTML)
    for line in ("C: | EHLO ", "C: | AUTH PLAIN ", "C: | MAIL FROM:\\<ana@447.edu\\>", "C: | RCPT TO:\\<bob@447.edu\\>",
                 "C: | DATA", "S: | 250 2.0.0 Ok: queued as ", "C: | QUIT", "S: | 221 2.0.0"):
        assert line in md, line
    assert "C: | GET /mailboxes/bob@447.edu/messages |" in md and "S: | 200 OK | application/json" in md
    # Side by side: in plaintext the credentials are readable, with TLS nothing is.
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ") and "readable" not in line}
    # The NUL separators of AUTH PLAIN are marked boxes, never "\\0" run into the digits of a password.
    assert "base64 of `\\0`{.nul" in rows["plaintext"] and "`ana@447.edu`{.credential}`\\0`{.nul" in rows["plaintext"]
    assert "new password in the 235 reply" in rows["plaintext"]  # registration leaks the password too
    html = open(os.path.join(report, "report.html")).read()
    assert 'id="TOC"' in html and "max-width: 1240px" in html
    assert html.count("<h1") == 1, "one title"
    # The implicit-TLS section comes first.
    assert md.index("lab-implicit.pcapng: ") < md.index("lab-starttls.pcapng: ") < md.index("lab-off.pcapng: ")
    assert rows["implicit TLS (RFC 8314)"].rstrip().endswith("| 0 | 0 | nothing |")
    assert rows["STARTTLS (RFC 3207)"].rstrip().endswith("| 0 | nothing |")  # SMTP before STARTTLS is readable
    ladders = [f for f in os.listdir(report) if f.startswith("ladder-")]
    assert any(f.endswith(".svg") for f in ladders) and any(f.endswith(".png") for f in ladders)
    # One set of ladders per capture: the plaintext section never shows the TLS capture's.
    assert any(f.startswith("ladder-lab-implicit-") for f in ladders)
    assert any(f.startswith("ladder-lab-off-") for f in ladders)
    # The TLS 1.3 lesson: after the ServerHello every record is application_data on the wire, and
    # the certificate is only the decrypted inner content.
    assert "| application_data | handshake | " in md and "Certificate" in md
    assert "| handshake | (none: in clear) | " in md  # ClientHello/ServerHello: handshake on the wire
    # Every decrypted record's inner type is filled in, the application data's protocol named.
    assert "| application_data | application_data (SMTP) |" in md and "| application_data | application_data (HTTP) |" in md
    assert "| application_data |  |" not in md
    assert "close_notify (0)" in md
    # The HTTP lab's questions: both validators answered 304, and a response in several pieces.
    assert "If-None-Match in frame" in md and "If-Modified-Since in frame" in md, md[md.find("### Q: The HTTP lab"):][:800]
    assert md.count("answered 304 in frame") >= 6  # two per capture
    # The full headers of each exchange, Accept-Language and the 401 challenge among them.
    assert "Accept-Language: en-US" in md and "WWW-Authenticate: Basic realm=" in md
    assert "reassembled from" in md
    # The Kurose & Ross questions: SNI, supported_groups, the random; the certificate's SAN, validity, key.
    assert "| SNI (server_name) | localhost | all " in md and "| ALPN | smtp | " in md and "x25519" in md
    assert "DNS:localhost" in md and "IP Address:127.0.0.1" in md and "prime256v1" in md
    # Wire order in the ladder: within the server's first flight, ServerHello before Certificate
    # before Finished.
    msc = open(os.path.join(report, sorted(f for f in ladders if f.startswith("ladder-lab-implicit-") and
                                           f.endswith(".msc"))[0])).read()
    assert msc.index("ServerHello") < msc.index("Certificate") < msc.index("Finished"), msc
    assert msc.index("TCP SYN") < msc.index("TCP SYN-ACK") < msc.index("ClientHello") < msc.index("TCP FIN"), msc
    assert "Protocol Hierarchy Statistics" in md and "TCP Conversations" in md


def stock_tshark(path, display_filter, fields):
    """tshark as on a student's laptop: an empty HOME (no profile, no preferences), no -d or -o."""
    import tempfile
    home = tempfile.mkdtemp(prefix="maillab-empty-home-")
    env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    out = subprocess.run(["tshark", "-r", path, "-Y", display_filter, "-T", "fields"] +
                         [a for f in fields for a in ("-e", f)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@test
def stock_tshark_decodes_smtp_and_http_in_every_capture(lab):
    """The lesson is visible with no settings at all: the scripted captures use the IANA ports,
    where stock Wireshark dissects SMTP (inside TLS on 465, STARTTLS on 587, clear on 25) and HTTP
    (TLS on 443, clear on 80), with the TLS secrets embedded in the file."""
    files = captures(lab)
    for mode in ("implicit", "starttls", "off"):
        commands = stock_tshark(files[mode], "smtp.req", ["smtp.req.command"]).split()
        for verb in ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"):
            assert verb in commands, (mode, verb, commands)
        replies = stock_tshark(files[mode], "smtp.response", ["smtp.response.code"]).split()
        assert "220" in replies and "235" in replies and "250" in replies, (mode, replies)
        requests = stock_tshark(files[mode], "http.request", ["http.request.method", "http.request.uri"])
        assert "GET\t/mailboxes/bob@447.edu/messages" in requests, (mode, requests)
        statuses = stock_tshark(files[mode], "http.response", ["http.response.code"]).split()
        assert statuses and set(statuses) == {"200", "304", "401"}, (mode, statuses)


class LiveCapture:
    """`make capture-start` in a terminal: captures two ports (free ones unless given; our servers
    started on them if asked) until interrupt() sends Ctrl-C to the whole foreground group, as a
    terminal does."""

    def __init__(self, lab, name, out_dir, servers, ports=None):
        import queue
        import socket
        import threading
        os.makedirs(out_dir, exist_ok=True)
        self.ports = list(ports or [])
        while len(self.ports) < 2:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.ports.append(s.getsockname()[1])
        command = ["/usr/bin/python3", "-m", "captures.capture", "start", "--ports",
                   f"{self.ports[0]},{self.ports[1]}", "--name", name, "--out", out_dir]
        if servers:
            command += ["--servers", "--build", os.path.relpath(lab.build, ROOT)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True, cwd=ROOT)
        # Lines through a thread: select() on the pipe cannot see lines already read into the text
        # stream's buffer (which made this wait miss "capture running" when it came with the line before).
        self.lines = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in iter(self.proc.stdout.readline, "")] +
                         [self.lines.put("")], daemon=True).start()
        self.output = ""
        while "capture running" not in self.output:
            line = self.lines.get(timeout=120)
            assert line, self.output
            self.output += line

    def abandon(self):
        """A failed test's clean-up: the capture ends (and removes its pid file) whatever happened."""
        import signal
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def interrupt(self):
        """Ctrl-C at the terminal; returns what the capture printed after it."""
        import signal
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(timeout=120)
        rest = ""
        while not rest.endswith("\x00"):
            line = self.lines.get(timeout=60)
            rest += line if line else "\x00"
        assert self.proc.returncode == 0, self.output + rest
        return rest


@test
def live_capture_survives_ctrl_c_and_a_stale_pid_file(lab):
    """make capture-start as a student uses it: servers started by it on the lab's own ports, a
    session, then Ctrl-C (SIGINT to the whole foreground group, dumpcap's terminal included): the
    pcapng is written with its secrets and the lab's sequence; a stale pid file is recognised."""
    import uuid
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")
    name = "t" + uuid.uuid4().hex[:8]
    out_dir = lab.path("live")
    live = LiveCapture(lab, name, out_dir, servers=True)
    ports = live.ports
    ca = os.path.join(ROOT, "certs", "ca.pem")
    client = [os.path.join(lab.bin, "senderclient"), "--port", str(ports[0]), "--ca", ca]
    ana = subprocess.run(client + ["--user", "live" + name], capture_output=True, text=True, timeout=60)
    assert ana.returncode == 0, ana.stderr
    password = ana.stdout.split("password: ")[1].split()[0]
    sent = subprocess.run(client + ["--user", "live" + name, "--password", password, "--to", "live" + name,
                                    "--subject", "live"], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    reader = [os.path.join(lab.bin, "retrieverclient"), "--port", str(ports[1]), "--ca", ca, "--user",
              "live" + name, "--password", password]
    got = subprocess.run(reader + ["--verbose"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    # The lab's conditional GET (a step of the rubric check-capture applies): the ETag again, 304.
    import re
    etag = re.search(r"(?im)^S: etag: *(.+?)\s*$", got.stderr).group(1)
    again = subprocess.run(reader + ["--header", f"If-None-Match: {etag}"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    rest = live.interrupt()
    final = os.path.join(out_dir, f"{name}.pcapng")
    assert os.path.exists(final) and "with TLS secrets" in rest, rest
    assert not os.path.exists(os.path.join(ROOT, "captures", f".{name}.pid"))
    checked = check(final)
    assert "all of the lab's sequence is there" in checked.stdout, checked.stdout + checked.stderr
    # The report of such a capture (a plain GET, then If-None-Match): the first GET answers Q8/Q9, and the
    # repeated one Q10/Q11 by the validator it used.
    own = lab.path(f"report-{name}")
    made = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "own", "--out", own, final],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and "Traceback" not in made.stderr, made.stdout + made.stderr
    sections = lab_question_sections(open(os.path.join(own, "own", "report.html")).read())
    assert "? No: the GET of" in sections["http-8"] and "Yes: the response in frame" in sections["http-9"], sections
    assert "If-None-Match" in sections["http-10"] and "304 Not Modified in frame" in sections["http-11"], sections
    # check-capture on a batch goes on past a file that is not a capture, and sums up.
    text = os.path.join(out_dir, "notes.txt")
    with open(text, "w") as f:
        f.write("my lab notes\n")
    batch = subprocess.run(["/usr/bin/python3", "-m", "captures.check", text, final],
                           capture_output=True, text=True, timeout=120)
    assert batch.returncode == 3, batch.stdout + batch.stderr
    assert "not a capture file" in batch.stdout and "summary:" in batch.stdout and "complete" in batch.stdout
    assert "Traceback" not in batch.stderr
    # A pid file whose process is gone is recognised and removed, never signalled.
    stale = os.path.join(ROOT, "captures", f".{name}.pid")
    with open(stale, "w") as f:
        f.write("1")
    out = subprocess.run(["/usr/bin/python3", "-m", "captures.capture", "stop", "--name", name],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0 and "stale" in out.stdout and not os.path.exists(stale), out.stdout + out.stderr


@test
def a_capture_of_another_program_is_not_a_maillab_session(lab):
    """A live capture of other servers on the lab's ports (openssl s_server with its key log, Python's
    http.server) decrypts, but check-capture says it is not maillab's, and the report still reads it."""
    import uuid
    if not can_capture():
        raise Skip("capturing needs root or dumpcap's capabilities (CI runs as root)")
    name = "o" + uuid.uuid4().hex[:8]
    out_dir = lab.path("other")
    live = LiveCapture(lab, name, out_dir, servers=False)
    keylog = os.path.join(out_dir, f"{name}.keys.log")
    ca = os.path.join(ROOT, "certs")
    tls = subprocess.Popen(["openssl", "s_server", "-accept", str(live.ports[0]), "-www", "-tls1_3", "-keylogfile", keylog,
                            "-cert", os.path.join(ca, "server.pem"), "-key", os.path.join(ca, "server.key")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    plain = subprocess.Popen(["/usr/bin/python3", "-u", "-m", "http.server", str(live.ports[1]), "--bind", "127.0.0.1",
                              "--directory", out_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in tls.stdout:  # s_server's ready line, after notes that differ by OpenSSL version
            if line.startswith("ACCEPT"):
                break
        assert plain.stdout.readline().startswith("Serving HTTP")  # its ready line (-u: unbuffered)
        got = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{live.ports[1]}/"],
                             capture_output=True, text=True, timeout=30)
        assert got.stdout == "200", got.stdout + got.stderr
        got = subprocess.run(["curl", "-s", "--cacert", os.path.join(ca, "ca.pem"),
                              f"https://localhost:{live.ports[0]}/"], capture_output=True, text=True, timeout=30)
        assert got.returncode == 0 and "s_server" in got.stdout, got.stderr
    finally:
        tls.terminate()
        plain.terminate()
        tls.wait()
        plain.wait()
    live.interrupt()
    final = os.path.join(out_dir, f"{name}.pcapng")
    checked = check(final)
    assert checked.returncode == 4, checked.stdout + checked.stderr
    assert "not a maillab session" in checked.stdout and "[ok] HTTP GET" not in checked.stdout, checked.stdout
    report = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "other", "--out",
                             lab.path("other-report"), final], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stdout + report.stderr


def report_in_chromium(lab, out_name, script):
    """The lab report of the three captures, laid out by headless Chromium at 1280 px with `script` run at
    the end of its body; returns Chromium's run (its stdout: the DOM the script left). The page itself
    allows no script (its Content-Security-Policy): the copy Chromium reads extends that policy by
    inline scripts only."""
    import re
    import shutil
    import tempfile
    chromium = shutil.which("chromium")
    if not chromium:
        raise Skip("chromium is not installed (make test-deps installs it where the distribution packages it)")
    files = captures(lab)
    out_dir = lab.path(out_name)
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "lab", "--out", out_dir,
                          files["implicit"], files["starttls"], files["off"]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    page = os.path.join(out_dir, "lab", "report.html")
    probe = page.replace("report.html", "probe.html")
    html = open(page).read()
    assert re.search(r'<meta http-equiv="Content-Security-Policy" content="default-src \'none\';', html)
    html = re.sub(r'(<meta http-equiv="Content-Security-Policy" content="[^"]*)"',
                  lambda m: m[1] + "; script-src 'unsafe-inline'\"", html)
    with open(probe, "w") as f:
        f.write(html.replace("</body>", "<script>" + script + "</script></body>"))
    profile = tempfile.mkdtemp(prefix="maillab-chromium-")
    try:
        return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                               "--window-size=1280,900", "--dump-dom", "file://" + probe],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@test
def the_report_fits_a_1280_px_window(lab):
    """Rendered by headless Chromium at 1280 px: no table wider than the page (every column visible
    without a scrollbar), and a table of contents."""
    # A script that marks every table wider than the body.
    out = report_in_chromium(lab, "report-1280", """
for (const t of document.querySelectorAll('table'))
  if (t.getBoundingClientRect().right > document.body.getBoundingClientRect().right + 1) t.setAttribute('data-overflow', 'yes');
document.body.setAttribute('data-checked', document.querySelectorAll('table').length);
""")
    dom = out.stdout
    assert 'data-checked="' in dom, out.stderr[-800:]
    assert int(dom.split('data-checked="')[1].split('"')[0]) >= 8
    assert 'data-overflow="yes"' not in dom, "a table is wider than the page at 1280 px"
    assert 'id="TOC"' in dom


@test
def a_truncated_capture_is_checked_as_far_as_it_reads(lab):
    files = captures(lab)
    cut = lab.path("cut.pcapng")
    data = open(files["implicit"], "rb").read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    out = subprocess.run(["/usr/bin/python3", "-m", "captures.check", "--csv", cut],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    assert "cut short" in out.stdout and "[ok] TLS 1.3 handshake" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith(cut + ","), out.stdout


def lab_question_sections(html):
    """{anchor: the text of its section} of a report page: from the heading with that id to the next
    heading of any level."""
    import html as html_module
    import re
    sections = {}
    for m in re.finditer(r'<h4 id="([^"]+)">', html):
        end = re.search(r"<h[1-6][ >]", html[m.end():])
        body = html[m.end(): m.end() + end.start() if end else len(html)]
        sections[m.group(1)] = re.sub(r"\s+", " ", html_module.unescape(re.sub(r"<[^>]+>", "", body)))
    return sections


@test
def every_lab_question_is_answered_with_frames(lab):
    """report/questions.csv lists the Kurose & Ross TLS (24) and HTTP (19) questions; a report of
    `make capture`'s files has a section for each, linked from the table, that answers it with frame
    numbers, and the answers the issue found missing are there (both randoms, the CA's signature
    algorithm and the key's bytes, no client certificate, the TLS 1.3 mapping, 401 then Basic,
    If-Modified-Since's value, serial and parallel, segments and records)."""
    import csv
    import re
    with open(os.path.join(ROOT, "report", "questions.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["lab"] for r in rows].count("TLS") == 24 and [r["lab"] for r in rows].count("HTTP") == 19
    for lab_name, count in (("TLS", 24), ("HTTP", 19)):
        assert [int(r["number"]) for r in rows if r["lab"] == lab_name] == list(range(1, count + 1))
    assert len({r["anchor"] for r in rows}) == len(rows)
    files = captures(lab)
    out_dir = lab.path("report-questions")
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "lab", "--out", out_dir,
                          files["implicit"], files["starttls"], files["off"]], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    html = open(os.path.join(out_dir, "lab", "report.html")).read()
    sections = lab_question_sections(html)
    for r in rows:
        text = sections.get(r["anchor"])
        assert text is not None, f"no section {r['anchor']} for {r['lab']} Q{r['number']}"
        assert f'href="#{r["anchor"]}"' in html, r["anchor"]
        assert re.search(r"\b[Ff]rames?\s+\d+", text), (r["anchor"], text[:300])
        assert "Not in this capture" not in text, (r["anchor"], text[:300])
    randoms = re.findall(r"\b[0-9a-f]{64}\b", sections["tls-7"])
    assert len(set(randoms)) == 2, sections["tls-7"]
    assert "ecdsa-with-SHA256" in sections["tls-14"] and "65 bytes" in sections["tls-15"]
    assert "CN=maillab lab CA" in sections["tls-12"] and "CN=localhost" in sections["tls-12"]
    assert "No." in sections["tls-16"] and "No." in sections["tls-19"]
    assert "no ServerHelloDone" in sections["tls-17"] and "EncryptedExtensions" in sections["tls-17"]
    assert "key_share" in sections["tls-18"] and "change_cipher_spec" in sections["tls-18"]
    assert "legacy_version" in sections["tls-4"] and "supported_versions" in sections["tls-4"]
    assert "en-US" in sections["http-2"] and "If-Modified-Since: " in sections["http-10"]
    assert "304 Not Modified" in sections["http-11"] and "401 Unauthorized" in sections["http-18"]
    assert "base64, not encryption" in sections["http-19"] and "bob@447.edu:" in sections["http-19"]
    assert "In series" in sections["http-17"] and "in parallel" in sections["http-17"]
    assert "TCP segments" in sections["http-15"] and "TLS records" in sections["http-15"]
    # Plaintext alone: the HTTP lab is answered, the TLS lab says why not.
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "off", "--out", out_dir, files["off"]],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    sections = lab_question_sections(open(os.path.join(out_dir, "off", "report.html")).read())
    assert "base64, not encryption" in sections["http-19"] and "anyone on the path" in sections["http-19"]
    assert "Not in this capture" in sections["tls-1"]


@test
def the_report_reads_well_in_chromium(lab):
    """Headless Chromium at 1280 px: the title once, the contents' entries links that look like links
    (coloured, underlined), no table cell whose content overflows it, and no header or number cell
    broken inside a word (each as tall as one line unless it has a space to wrap at)."""
    import json
    import re
    out = report_in_chromium(lab, "report-chromium", """
const found = {overflow: [], broken: [], titles: 0, tocLinks: 0, tocStyled: 0, cells: 0};
found.titles = [...document.querySelectorAll('h1')].length;
for (const a of document.querySelectorAll('nav#TOC a')) {
  found.tocLinks++;
  const s = getComputedStyle(a);
  if (s.textDecorationLine.includes('underline') && s.color !== getComputedStyle(document.body).color) found.tocStyled++;
}
for (const cell of document.querySelectorAll('td, th')) {
  found.cells++;
  if (cell.scrollWidth > cell.clientWidth + 1) found.overflow.push(cell.textContent.slice(0, 60));
  // A cell of one word (a heading word, a number) must be one line: broken words are taller.
  const text = cell.textContent.trim();
  if (text && !/\s/.test(text) && !cell.querySelector('code.credential')) {
    const line = parseFloat(getComputedStyle(cell).lineHeight) || 16;
    const r = cell.getBoundingClientRect();
    const range = document.createRange(); range.selectNodeContents(cell);
    if (range.getClientRects().length > 1 && range.getBoundingClientRect().height > line * 1.5)
      found.broken.push(text.slice(0, 60));
  }
}
document.body.setAttribute('data-found', JSON.stringify(found));
""")
    import html as html_module
    m = re.search(r'data-found="([^"]*)"', out.stdout)
    assert m, out.stderr[-800:]
    found = json.loads(html_module.unescape(m.group(1)))
    assert found["titles"] == 1, found["titles"]
    assert found["tocLinks"] > 10 and found["tocStyled"] == found["tocLinks"], found
    assert found["cells"] > 100, found["cells"]
    assert not found["overflow"], f"cells whose content overflows them: {found['overflow'][:10]}"
    assert not found["broken"], f"words or numbers broken across lines: {found['broken'][:10]}"


@test
def pop3_in_the_capture_decodes_in_stock_tshark_and_the_report_compares_it(lab):
    """make capture's implicit capture also retrieves message 1 by POP3S on 995 and by STLS on 110:
    stock tshark (an empty HOME: no profile, no -d/-o) decodes RETR and its +OK with the embedded
    keys; the optional POP3 steps are found; the report compares the GET and the RETR."""
    files = captures(lab)
    info = subprocess.run(["capinfos", files["implicit"]], capture_output=True, text=True).stdout
    if "http=443" not in info:
        raise Skip("the standard ports were not free here: stock tshark needs them to decode POP")
    assert "maillab mode=implicit smtp=465 http=443 pop3=995 pop3-plain=110" in info, info
    home = lab.path("empty-home")
    os.makedirs(home)
    shown = subprocess.run(["tshark", "-r", files["implicit"], "-Y", "pop"], capture_output=True, text=True,
                           env=dict(os.environ, HOME=home), timeout=120).stdout
    for line in ("C: RETR 1", "S: +OK", "C: STLS", "S: +OK Begin TLS"):
        assert line in shown, line + "\n" + shown
    # Decrypted on 995: RETR inside TLS, on a connection to port 995.
    retr = subprocess.run(["tshark", "-r", files["implicit"], "-Y", 'pop.request.command == "RETR" && tcp.port == 995',
                           "-T", "fields", "-e", "frame.protocols"], capture_output=True, text=True,
                          env=dict(os.environ, HOME=home), timeout=120).stdout
    assert ":tls:pop" in retr, retr
    from captures import facts, rubric
    read = facts.read(files["implicit"])
    steps = rubric.load() + [rubric.Step("pop3s", 5, ""), rubric.Step("pop3_stls", 5, "")]
    verdicts = rubric.evaluate(read, steps)
    assert verdicts["pop3s"].ok and verdicts["pop3_stls"].ok, verdicts
    assert "pop3s" not in {s.name for s in rubric.load()}  # optional: not in the default rubric
    # The other modes have no POP3: the optional steps are missing there, nothing else changes.
    off = rubric.evaluate(facts.read(files["starttls"]), steps)
    assert not off["pop3s"].ok and off["get"].ok
    out_dir = lab.path("report-pop3")
    run = subprocess.run(["/usr/bin/python3", "-m", "report.report", "--name", "lab", "--out", out_dir,
                          files["implicit"]], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    md = open(os.path.join(out_dir, "lab", "report.md")).read()
    section = md.split("The same message by HTTPS GET and by POP3 RETR")[1]
    for row in ("| HTTPS GET |", "| POP3S (implicit TLS) |", "| POP3 with STLS |", "RETR 1", "C: STLS",
                "nothing but "):
        assert row in section, row
