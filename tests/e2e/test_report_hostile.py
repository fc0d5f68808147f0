"""Hostile captures (issue 18 #5, #6): what a capture says is data, never markup or a terminal
command, and one file cannot stall check, report or grade. The captures are made here, byte by byte
(a pcap written with struct: Ethernet, IPv4, TCP, plaintext SMTP and HTTP, TLS ClientHellos), so
they need no root, no servers and a fraction of a second.

- an EHLO name, an AUTH PLAIN user, a request URI, an SNI and a Subject holding HTML, script,
  markdown links and ESC/OSC/C1 bytes: report.html has none of it as markup (and, with Chromium,
  the page's DOM shows it as text), it carries a strict Content-Security-Policy under which its
  ladder images still load, and check/report/grade print no control byte;
- 2,500 SYNs to as many ports and 3,000 connections that each carry a ClientHello: check and report
  finish in bounded time, the report draws a bounded number of ladders and says how many it left
  out, and grade cuts off a file past --file-seconds with the reason in its row."""

import csv
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from tests.e2e.harness import Skip, test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = "/usr/bin/python3"

# ---- a pcap, byte by byte ------------------------------------------------------------------------


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Pcap:
    """Ethernet/IPv4/TCP frames into a classic pcap file (link type 1), one microsecond apart."""

    def __init__(self):
        self.frames = []
        self.clock = 1_790_000_000.0

    def frame(self, src, dst, sport, dport, seq, ack, flags, payload=b""):
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, bytes(src), bytes(dst))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        pseudo = struct.pack("!4s4sBBH", bytes(src), bytes(dst), 0, 6, len(tcp) + len(payload))
        tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp + payload)) + tcp[18:]
        ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
        self.clock += 0.000001
        self.frames.append((self.clock, ether + ip + tcp + payload))

    def write(self, path):
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            for t, data in self.frames:
                f.write(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(data), len(data)) + data)


CLIENT, SERVER = (10, 0, 0, 2), (10, 0, 0, 1)


class Conn:
    """One TCP connection: handshake, segments each way, FINs."""

    def __init__(self, pcap, cport, sport, client=CLIENT, server=SERVER):
        self.p, self.cport, self.sport, self.c, self.s = pcap, cport, sport, client, server
        self.cseq, self.sseq = 1000, 5000
        pcap.frame(client, server, cport, sport, self.cseq, 0, 0x02)
        pcap.frame(server, client, sport, cport, self.sseq, self.cseq + 1, 0x12)
        self.cseq += 1
        self.sseq += 1
        pcap.frame(client, server, cport, sport, self.cseq, self.sseq, 0x10)

    def client(self, data):
        self.p.frame(self.c, self.s, self.cport, self.sport, self.cseq, self.sseq, 0x18, data)
        self.cseq += len(data)

    def server(self, data):
        self.p.frame(self.s, self.c, self.sport, self.cport, self.sseq, self.cseq, 0x18, data)
        self.sseq += len(data)

    def close(self):
        self.p.frame(self.c, self.s, self.cport, self.sport, self.cseq, self.sseq, 0x11)
        self.p.frame(self.s, self.c, self.sport, self.cport, self.sseq, self.cseq + 1, 0x11)
        self.p.frame(self.c, self.s, self.cport, self.sport, self.cseq + 1, self.sseq + 1, 0x10)


def client_hello(sni, seed=0):
    """A TLS 1.3 ClientHello record: one suite, supported_versions 1.3, the server_name given."""
    name = sni.encode("utf-8", "surrogateescape")
    server_name = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    extensions = struct.pack("!HH", 0, len(server_name)) + server_name
    extensions += struct.pack("!HHB", 0x2B, 3, 2) + b"\x03\x04"
    random = struct.pack("!I", seed) * 8
    body = b"\x03\x03" + random + b"\x20" + random + struct.pack("!H", 2) + b"\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(extensions)) + extensions
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(handshake)) + handshake


# What a student can type, or put on the wire with a script of her own.
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
ESC = "\x1b]0;owned\x07\x1b[31m"   # OSC (set the title), then a colour
C1 = "\u009b31m"                    # CSI as one C1 character
LINK = "[click](javascript:alert(1))"


def hostile_capture(path):
    """Plaintext SMTP on 25 (maillab's greeting; EHLO, AUTH PLAIN, a Subject with markup and
    control bytes), HTTP on 80 (a URI and an Authorization with markup) and a TLS ClientHello on 443
    whose SNI is markup."""
    import base64
    p = Pcap()
    smtp = Conn(p, 40001, 25)
    smtp.server(b"220 localhost ESMTP maillab ready\r\n")
    smtp.client(f"EHLO {SCRIPT}{ESC}{C1}{IMG}\r\n".encode())
    smtp.server(b"250-localhost\r\n250 AUTH PLAIN LOGIN\r\n")
    user = f"\0{IMG}{ESC}@447.edu\0pw`</code>{SCRIPT}"
    smtp.client(b"AUTH PLAIN " + base64.b64encode(user.encode()) + b"\r\n")
    smtp.server(b"235 2.7.0 Authentication successful\r\n")
    smtp.client(f"MAIL FROM:<{IMG}@447.edu>\r\n".encode())
    smtp.server(b"250 2.1.0 Ok\r\n")
    smtp.client(b"RCPT TO:<bob@447.edu>\r\n")
    smtp.server(b"250 2.1.5 Ok\r\n")
    smtp.client(b"DATA\r\n")
    smtp.server(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    smtp.client(f"Subject: {SCRIPT}{ESC} {LINK}\r\n\r\nhello {IMG}\r\n.\r\n".encode())
    smtp.server(b"250 2.0.0 Ok: queued as 1\r\n")
    smtp.client(b"QUIT\r\n")
    smtp.server(b"221 2.0.0 Bye\r\n")
    smtp.close()
    web = Conn(p, 40002, 80)
    basic = base64.b64encode(f"{SCRIPT}{ESC}:pw".encode()).decode()
    web.client(f"GET /mailboxes/{IMG}{LINK}/`x`{SCRIPT}%1b HTTP/1.1\r\nHost: localhost\r\n"
               f"Authorization: Basic {basic}\r\n\r\n".encode())
    web.server(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"maillab\"\r\n"
               b"Content-Type: text/html\r\nContent-Length: 0\r\n\r\n")
    web.close()
    tls = Conn(p, 40003, 443)
    tls.client(client_hello(f"{IMG}{ESC}.example", 7))
    tls.close()
    p.write(path)


def flood_capture(path, ports=2500, hellos=3000):
    """SYNs to `ports` ports (no answer), and `hellos` connections to 443 that each carry a ClientHello."""
    p = Pcap()
    for i in range(ports):
        p.frame(CLIENT, SERVER, 30000 + i % 20000, 1024 + i, 77, 0, 0x02)
    for i in range(hellos):
        c = Conn(p, 10000 + i, 443)
        c.client(client_hello("localhost", i))
        c.close()
    p.write(path)


# ---- helpers -------------------------------------------------------------------------------------

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u0080-\u009f]")


def run(argv, timeout=600, cwd=ROOT):
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, errors="surrogateescape", timeout=timeout, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    done.seconds = time.monotonic() - start
    return done


def no_control_bytes(done, what):
    for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
        bad = CONTROL.search(text)
        assert not bad, f"{what} printed a control byte {bad[0]!r} on {stream}: " \
                        f"{text[max(0, bad.start() - 120):bad.start() + 60]!r}"


def markup_in(page):
    """Tags and attributes in a page that run or fetch anything: [(what, where)]."""
    from html.parser import HTMLParser
    found = []

    class Finder(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag in ("script", "iframe", "object", "embed", "form", "base", "link", "svg", "math"):
                found.append(("tag", tag))
            for name, value in attrs:
                if name.startswith("on"):
                    found.append(("attribute", f"{tag} {name}"))
                if name in ("href", "src") and value and re.match(r"^\s*[a-z][a-z0-9+.-]*:", value, re.I):
                    found.append(("url", f"{tag} {name}={value}"))

    Finder().feed(page)
    return found


def chromium_dom(page, extra=()):
    chromium = shutil.which("chromium")
    if not chromium:
        return None
    profile = tempfile.mkdtemp(prefix="maillab-chromium-")
    try:
        out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--no-first-run",
                              f"--user-data-dir={profile}", "--window-size=1280,900", *extra, "--dump-dom",
                              "file://" + page], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out.stdout


# ---- the tests -----------------------------------------------------------------------------------

@test
def a_capture_full_of_markup_is_reported_as_text(lab):
    """EHLO, AUTH user, Subject, URI, Basic user and SNI with <script>, onerror=, a javascript: link
    and ESC/OSC/C1 bytes: report.md escapes them, report.html has no markup from them and a strict
    Content-Security-Policy (the ladders still load under it), Chromium shows them as text, and
    check and report print no control byte."""
    work = lab.path("hostile")
    os.makedirs(work)
    cap = os.path.join(work, f"evil{ESC}{IMG}.pcap")  # a file name is the student's text too
    hostile_capture(cap)
    checked = run([PY, "-m", "captures.check", "--", cap], timeout=120)
    assert "Traceback" not in checked.stderr, checked.stderr
    assert "mode=off smtp port=25 http port=80" in checked.stdout, checked.stdout
    no_control_bytes(checked, "check")
    out = os.path.join(work, "report")
    made = run([PY, "-m", "report.report", "--name", "evil", "--out", out, "--", cap], timeout=300)
    assert made.returncode == 0, made.stdout + made.stderr
    no_control_bytes(made, "report")
    md = open(os.path.join(out, "evil", "report.md"), encoding="utf-8").read()
    page = open(os.path.join(out, "evil", "report.html"), encoding="utf-8").read()
    # The capture's text is there, as text.
    assert "EHLO \\<script\\>alert(1)\\</script\\>" in md, md[md.find("EHLO"):][:300]
    text = " ".join(page.split())  # pandoc wraps long lines
    # The control bytes shown escaped: by tshark itself (4.4 and later write BEL as \a) or by the report.
    assert re.search(r"EHLO &lt;script&gt;alert\(1\)&lt;/script&gt;\\x1b\]0;owned\\(x07|a)", text), \
        text[text.find("EHLO"):][:300]
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    lowered = page.lower()
    assert "<script" not in lowered and "<img src=x" not in lowered and "javascript:" not in \
        re.sub(r"\[click\]\(javascript:alert\(1\)\)", "", page), "markup from the capture in report.html"
    assert not markup_in(page), markup_in(page)
    assert not CONTROL.search(page) and not CONTROL.search(md), "a control byte in the report"
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy and "default-src 'none'" in policy[1] and "script-src" not in policy[1], policy
    # The ladders are drawn, and load under the policy (a copy with the policy and a measuring script).
    ladders = re.findall(r'<img\s+src="(ladder-[^"]+\.png)"', page)
    assert ladders, "no ladder image in the report"
    for name in ladders:
        assert os.path.getsize(os.path.join(out, "evil", name)) > 100
    svg = open(os.path.join(out, "evil", ladders[0].replace(".png", ".svg")), encoding="utf-8").read()
    assert "<script" not in svg.lower(), "markup in a ladder's SVG"
    if shutil.which("chromium"):
        dom = chromium_dom(os.path.join(out, "evil", "report.html"))
        assert dom and "<body" in dom, "chromium printed no DOM"
        assert not markup_in(dom), markup_in(dom)  # the DOM Chromium built: no script, handler or scheme
        assert "EHLO &lt;script&gt;alert(1)&lt;/script&gt;" in " ".join(dom.split()), dom[:3000]
        probe = os.path.join(out, "evil", "probe.html")
        measured = page.replace(policy[1], policy[1] + "; script-src 'unsafe-inline'").replace("</body>", """<script>
addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img')];
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length);
});
</script></body>""")
        with open(probe, "w", encoding="utf-8") as f:
            f.write(measured)
        dom = chromium_dom(probe, ["--virtual-time-budget=3000"])
        loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom or "")
        assert loaded and loaded[1] == loaded[2] != "0", f"ladder images blocked by the policy: {loaded and loaded[0]}"


@test
def a_report_for_grading_reuses_the_facts_read_and_draws_svg_ladders(lab):
    """make grade's report of a file (report.report --for-grading --cache DIR, after captures.facts
    --cache DIR): it reads the capture through the facts' cached read (no capinfos, no tshark table
    pass: only the statistics' run), says the same as make report's except that its ladders are SVG
    images only, keeps the policy under which they load and holds no active content; a file changed
    since its read is read again."""
    work = lab.path("grading-report")
    os.makedirs(work)
    cap = os.path.join(work, f"evil{ESC}.pcap")
    hostile_capture(cap)
    cache = os.path.join(work, "reads")
    os.makedirs(cache)
    # tshark and capinfos through wrappers that note each run.
    tools, log = os.path.join(work, "tools"), os.path.join(work, "runs.log")
    os.makedirs(tools)
    for tool in ("tshark", "capinfos"):
        with open(os.path.join(tools, tool), "w") as f:
            f.write(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexec {shutil.which(tool)} "$@"\n')
        os.chmod(os.path.join(tools, tool), 0o755)
    env = dict(os.environ, PYTHONPATH=ROOT, PATH=tools + os.pathsep + os.environ["PATH"])

    def runs():  # the runs noted since the last call
        if not os.path.exists(log):
            return []
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        os.unlink(log)
        return lines

    def report(name, *extra):
        done = subprocess.run([PY, "-m", "report.report", "--name", name, "--out", work, *extra, "--", cap],
                              capture_output=True, text=True, errors="surrogateescape", cwd=ROOT, env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        no_control_bytes(done, "report")
        return open(os.path.join(work, name, "report.md"), encoding="utf-8").read()

    facts = subprocess.run([PY, "-m", "captures.facts", "--cache", cache, "--", cap], capture_output=True, text=True,
                           errors="surrogateescape", cwd=ROOT, env=env, timeout=300)
    assert facts.returncode == 0 and '"not_capture": ""' in facts.stdout, facts.stdout + facts.stderr
    assert len([f for f in os.listdir(cache) if f.endswith(".capture.json")]) == 1, os.listdir(cache)
    runs()
    graded = report("graded", "--for-grading", "--cache", cache)
    used = runs()
    assert len(used) == 1 and used[0].startswith("tshark") and " -z " in used[0], used  # the statistics alone
    full = report("full")
    assert len(runs()) >= 3  # capinfos, the table, the statistics
    # The same answers; only the heading line and the ladders' images differ.
    ladder_line = re.compile(r"Connection \d+( \(\[SVG\]\([^)]*\)\))?:|!\[connection \d+\]\([^)]*\)")

    def answers(md):
        return [line for line in md.splitlines()[1:]
                if not line.startswith("Generated by") and not ladder_line.fullmatch(line)]
    assert answers(graded) == answers(full), "the report for grading answers differently"
    # make grade reads a copy (the key log beside embedded): the report names the file handed in.
    named = report("named", "--for-grading", "--cache", cache, "--shown-as", "ana-lab3.pcapng")
    assert "## ana-lab3.pcapng:" in named and "from `ana-lab3.pcapng`" in named, named[:800]
    assert os.path.basename(cap) not in named, named[:800]
    assert "Made for grading" in graded and "make report FILE=" in graded, graded[:600]
    files = os.listdir(os.path.join(work, "graded"))
    assert not [f for f in files if f.endswith(".png")], files
    page = open(os.path.join(work, "graded", "report.html"), encoding="utf-8").read()
    ladders = re.findall(r'<img\s+src="(ladder-[^"]+\.svg)"', page)
    assert ladders and all(os.path.getsize(os.path.join(work, "graded", n)) > 100 for n in ladders), ladders
    assert not markup_in(page), markup_in(page)
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    assert policy and "default-src 'none'" in policy[1] and "img-src 'self'" in policy[1], policy
    if shutil.which("chromium"):
        probe = os.path.join(work, "graded", "probe.html")
        with open(probe, "w", encoding="utf-8") as f:
            f.write(page.replace(policy[1], policy[1] + "; script-src 'unsafe-inline'").replace("</body>", """<script>
addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img')];
  document.body.setAttribute('data-loaded', imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length);
});
</script></body>"""))
        dom = chromium_dom(probe, ["--virtual-time-budget=3000"])
        loaded = re.search(r'data-loaded="(\d+)/(\d+)"', dom or "")
        assert loaded and loaded[1] == loaded[2] != "0", f"SVG ladders blocked by the policy: {loaded and loaded[0]}"
    # Changed since its read (a new mtime): read again, not taken from the cache.
    os.utime(cap, (time.time() + 5, time.time() + 5))
    again = report("again", "--for-grading", "--cache", cache)
    assert len(runs()) >= 3 and answers(again) == answers(full)


@test
def a_flood_of_ports_and_connections_is_checked_and_reported_in_bounded_time(lab):
    """2,500 SYNs to as many ports and 3,000 connections with a ClientHello each (a few MB made in a
    second): check guesses the ports in one pass (not two tshark runs per port), the report draws
    at most --max-ladders ladders and says how many connections it left out."""
    work = lab.path("flood")
    os.makedirs(work)
    cap = os.path.join(work, "flood.pcap")
    flood_capture(cap)
    checked = run([PY, "-m", "captures.check", "--", cap], timeout=600)
    assert "Traceback" not in checked.stderr, checked.stderr
    assert checked.seconds < 60, f"check took {checked.seconds:.0f} s"
    out = os.path.join(work, "report")
    made = run([PY, "-m", "report.report", "--name", "flood", "--out", out, "--", cap], timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    assert made.seconds < 120, f"report took {made.seconds:.0f} s"
    files = os.listdir(os.path.join(out, "flood"))
    ladders = [f for f in files if f.startswith("ladder-")]
    assert 0 < len(ladders) <= 12 * 3, len(ladders)  # .msc, .svg, .png for each of at most 12
    assert len(files) <= 12 * 3 + 4, len(files)
    md = open(os.path.join(out, "flood", "report.md"), encoding="utf-8").read()
    assert re.search(r"ladders of the first 12 connections; \d+ more left out", md), md[md.find("message by message"):][:600]
    small = run([PY, "-m", "report.report", "--max-ladders", "2", "--name", "two", "--out", out, "--", cap], timeout=900)
    assert small.returncode == 0, small.stdout + small.stderr
    assert len([f for f in os.listdir(os.path.join(out, "two")) if f.endswith(".png")]) == 2


@test
def grading_cuts_off_a_file_past_its_time_budget(lab):
    """grade --file-seconds: a file that takes longer is cut off, with the reason in its row, and
    the other files are graded."""
    work = lab.path("budget")
    folder = os.path.join(work, "submissions")
    os.makedirs(folder)
    # Minutes of tshark on the slowest machines; on a fast one the reading may end within the budget
    # and the report past it: either is cut off, with the reason in its row (outcome or notes).
    flood_capture(os.path.join(folder, "slow.pcap"), ports=500, hellos=55000)
    hostile_capture(os.path.join(folder, f"quick{ESC}.pcap"))
    db = os.path.join(work, "maillab.db")
    subprocess.run([lab.exe("maillab-admin"), "--db", db, "list"], capture_output=True)  # an empty store
    if not os.path.exists(db):
        open(db, "wb").close()
    argv = [PY, "-m", "report.grade", "--secret", "s", "--db", db, "--admin", lab.exe("maillab-admin"),
            "--cert", os.path.join(lab.certs, "server.pem"), "--file-seconds", "20", "--", folder]
    done = run(argv, timeout=600)
    assert done.seconds < 200, f"grade took {done.seconds:.0f} s with --file-seconds 20"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    no_control_bytes(done, "grade")
    with open(os.path.join(folder, "grades-files.csv"), newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    slow = rows["slow.pcap"]
    read_cut = "cut off" in slow["outcome"] and "--file-seconds" in slow["outcome"]
    report_cut = "no report: making it took longer than 20 s (--file-seconds)" in slow["notes"] and not slow["report"]
    assert read_cut or report_cut, rows
    quick = next(r for name, r in rows.items() if name.startswith("quick"))
    assert "cut off" not in quick["outcome"] and "--file-seconds" not in quick["notes"], quick
    assert quick["report"], quick
    page = open(os.path.join(folder, "grades.html"), encoding="utf-8").read()
    assert ("cut off" if read_cut else "took longer than 20 s (--file-seconds)") in page
