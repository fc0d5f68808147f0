"""MIME as people send it, read in every view of the retriever: a message built with Python's
email package (an RFC 2047 subject, a quoted-printable text with non-ASCII and a long line, a PNG
with a non-ASCII file name) sent with smtplib over SMTPS to the real sender, then read as JSON, as
a part download, with our client (and --save-attachments) and in headless Chromium. Hostile file
names and an HTML mail with script and a remote image are shown to do nothing."""

import http.client
import json
import os
import shutil
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import urllib.parse
import zlib
from email.message import EmailMessage

from tests.e2e.harness import Skip, run_client, test
from tests.e2e.test_retriever import Lab2, basic

SUBJECT = "Diagramm für dich: Größe und Übersicht ✓"
TEXT = ("Hallo Bob, hier ist das Diagramm für dich. Grüße aus Zürich!\n"
        "Eine lange Zeile, die quoted-printable weich umbrechen muss: " + "äöü " * 40 + "Ende.\n")
FILE_NAME = "Größe-Übersicht.png"


def png(width=24, height=16):
    """A small valid PNG (an orange rectangle) made here: its exact bytes are what must come back."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\0" + b"\xff\x80\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def send_with_smtplib(lab, l2, message):
    with smtplib.SMTP_SSL("localhost", l2.sender.port, context=lab.ssl_context(), timeout=30) as smtp:
        smtp.login("ana@447.edu", l2.ana)
        if isinstance(message, EmailMessage):
            smtp.send_message(message)
        else:
            smtp.sendmail("ana@447.edu", ["bob@447.edu"], message)


def attachment_mail():
    m = EmailMessage()
    m["From"] = "Ana Müller <ana@447.edu>"
    m["To"] = "bob@447.edu"
    m["Subject"] = SUBJECT
    m.set_content(TEXT, charset="utf-8", cte="quoted-printable")
    m.add_attachment(png(), maintype="image", subtype="png", filename=FILE_NAME)
    return m


def newest(l2):
    code, body = l2.curl(l2.url("/mailboxes/bob@447.edu/messages?limit=1"))
    assert code == 200, body
    return json.loads(body)["messages"][0]


def fetch(lab, l2, path):
    conn = http.client.HTTPSConnection("localhost", l2.retriever.port, context=lab.ssl_context(), timeout=30)
    conn.request("GET", path, headers={"Authorization": basic("bob@447.edu", l2.bob)})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


@test
def mime_attachment_decoded_in_json_part_download_and_client(lab):
    with Lab2(lab) as l2:
        message = attachment_mail()
        wire = message.as_string()
        assert "=?utf-8?" in wire and "quoted-printable" in wire and "filename*=" in wire  # really encoded
        send_with_smtplib(lab, l2, message)
        summary = newest(l2)
        assert summary["subject"] == SUBJECT, summary
        assert summary["from"] == "Ana Müller <ana@447.edu>" and summary["to"] == "bob@447.edu", summary
        mid = summary["id"]
        code, body = l2.curl(l2.url(f"/mailboxes/bob@447.edu/messages/{mid}"))
        data = json.loads(body)
        assert data["subject"] == SUBJECT and data["body_type"] == "text/plain"
        assert data["body"] == TEXT, data["body"]  # soft line breaks gone, the long line whole
        assert data["mime_problems"] == []
        [attachment] = data["attachments"]
        assert attachment["name"] == FILE_NAME and attachment["type"] == "image/png", attachment
        assert attachment["size"] == len(png())
        resp, content = fetch(lab, l2, attachment["url"])
        assert resp.status == 200 and content == png()
        assert resp.getheader("Content-Type") == "image/png"
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        disposition = resp.getheader("Content-Disposition")
        assert disposition.startswith('attachment; filename="') and \
            disposition.endswith("filename*=UTF-8''" + urllib.parse.quote(FILE_NAME)), disposition
        # The client: decoded fields and text, the attachment listed, and saved byte for byte.
        args = ["--user", "bob", "--password", l2.bob, "--id", str(mid)]
        out = run_client(lab, l2.retriever.port, args, program="retrieverclient")
        assert out.returncode == 0, out.stderr
        assert f"Subject: {SUBJECT}\n" in out.stdout and "From: Ana Müller <ana@447.edu>\n" in out.stdout, out.stdout
        assert TEXT in out.stdout and f"[2] {FILE_NAME} (image/png, " in out.stdout, out.stdout
        folder = lab.path("saved")
        out = run_client(lab, l2.retriever.port, args + ["--save-attachments", folder], program="retrieverclient")
        assert out.returncode == 0, out.stderr
        with open(os.path.join(folder, FILE_NAME), "rb") as f:
            assert f.read() == png()
        # Saved again: a numbered copy, the first one left as it was.
        out = run_client(lab, l2.retriever.port, args + ["--save-attachments", folder], program="retrieverclient")
        assert out.returncode == 0 and "Größe-Übersicht (1).png" in out.stdout, out.stdout
        assert sorted(os.listdir(folder)) == sorted([FILE_NAME, "Größe-Übersicht (1).png"])
        # Raw stays one click away, as sent.
        code, raw = l2.curl(l2.url(f"/mailboxes/bob@447.edu/messages/{mid}/raw"))
        assert "=?utf-8?" in raw and SUBJECT not in raw


@test
def mime_hostile_file_names_are_neutralised(lab):
    with Lab2(lab) as l2:
        # Written by hand: Python's email package refuses CR/LF in a header, an attacker does not.
        # RFC 2231 percent-encoding carries them inside a perfectly folded header.
        raw = ("From: ana@447.edu\r\nTo: bob@447.edu\r\nSubject: names\r\nMIME-Version: 1.0\r\n"
               "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
               "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
               "--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=\"../../etc/passwd\"\r\n\r\n"
               "root:x:0:0\r\n"
               "--b\r\nContent-Type: text/html\r\n"
               "Content-Disposition: attachment; filename*=utf-8''a%22%0D%0AX-Evil%3A%201.txt\r\n\r\n"
               "<script>alert(1)</script>\r\n--b--\r\n")
        send_with_smtplib(lab, l2, raw)
        mid = newest(l2)["id"]
        code, body = l2.curl(l2.url(f"/mailboxes/bob@447.edu/messages/{mid}"))
        names = [a["name"] for a in json.loads(body)["attachments"]]
        # The JSON says what was sent, on one line (a CR LF in a name is two spaces there).
        assert names == ["../../etc/passwd", 'a"  X-Evil: 1.txt'], names
        resp, content = fetch(lab, l2, f"/mailboxes/bob@447.edu/messages/{mid}/parts/2")
        assert resp.getheader("Content-Disposition") == 'attachment; filename="passwd"; filename*=UTF-8\'\'passwd'
        resp, content = fetch(lab, l2, f"/mailboxes/bob@447.edu/messages/{mid}/parts/3")
        assert resp.getheader("X-Evil") is None
        assert resp.getheader("Content-Disposition") == \
            "attachment; filename=\"a_ X-Evil_ 1.txt\"; filename*=UTF-8''a_%20X-Evil_%201.txt"
        assert resp.getheader("Content-Type") == "application/octet-stream"  # HTML is never served as HTML
        assert content == b"<script>alert(1)</script>"
        folder = lab.path("inbox-files")
        out = run_client(lab, l2.retriever.port, ["--user", "bob", "--password", l2.bob, "--id", str(mid),
                                                  "--save-attachments", folder], program="retrieverclient")
        assert out.returncode == 0, out.stderr
        assert sorted(os.listdir(folder)) == ["a_ X-Evil_ 1.txt", "passwd"]
        assert "\x1b" not in out.stdout and "\r" not in out.stdout


def chromium_or_skip():
    chromium = shutil.which("chromium")
    if not chromium:
        raise Skip("chromium is not installed (make test-deps installs it where the distribution packages it)")
    return chromium


def chromium(lab, l2, path, extra=()):
    """Headless Chromium on one retriever URL as bob: its DOM after load (the page's own scripts, had
    it any, would have run)."""
    spki = subprocess.run(
        f"openssl x509 -in {lab.certs}/server.pem -pubkey -noout | openssl pkey -pubin -outform der | "
        "openssl dgst -sha256 -binary | base64", shell=True, capture_output=True, text=True, check=True).stdout.strip()
    profile = tempfile.mkdtemp(prefix="maillab-chromium-")
    try:
        out = subprocess.run([chromium_or_skip(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--disable-component-update", "--disable-sync",
                              "--no-first-run", f"--user-data-dir={profile}",
                              f"--ignore-certificate-errors-spki-list={spki}", *extra,
                              f"https://bob%40447.edu:{l2.bob}@localhost:{l2.retriever.port}{path}"],
                             capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out


@test
def mime_message_page_in_chromium(lab):
    chromium_or_skip()
    with Lab2(lab) as l2:
        send_with_smtplib(lab, l2, attachment_mail())
        mid = newest(l2)["id"]
        page = f"/mailboxes/bob@447.edu/messages/{mid}/page"
        dom = chromium(lab, l2, page, ["--dump-dom"]).stdout
        assert f'<h1 id="subject">{SUBJECT}</h1>' in dom, dom[:800]
        assert "Ana Müller &lt;ana@447.edu&gt;" in dom
        assert "Grüße aus Zürich!" in dom and "äöü " * 40 + "Ende." in dom  # the whole text, decoded
        assert f'href="/mailboxes/bob@447.edu/messages/{mid}/parts/2">{FILE_NAME}</a>' in dom
        assert f'href="/mailboxes/bob@447.edu/messages/{mid}/raw?view=text"' in dom
        # The raw link opens in the tab as text (message/rfc822 would be saved as a file instead).
        shown = chromium(lab, l2, f"/mailboxes/bob@447.edu/messages/{mid}/raw?view=text", ["--dump-dom"]).stdout
        assert "<pre" in shown and "MIME-Version: 1.0" in shown and "Received: from" in shown, shown[:800]
        inbox = chromium(lab, l2, "/", ["--dump-dom"]).stdout
        assert f'{page}">{SUBJECT}</a>' in inbox, inbox[:800]
        for name, path in (("message-page.png", page), ("inbox.png", "/")):
            shot = lab.path(name)
            chromium(lab, l2, path, [f"--screenshot={shot}", "--window-size=1000,700", "--hide-scrollbars"])
            with open(shot, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
            if os.environ.get("MAILLAB_SCREENSHOTS"):  # to look at them: MAILLAB_SCREENSHOTS=DIR
                shutil.copy(shot, os.path.join(os.environ["MAILLAB_SCREENSHOTS"], name))


@test
def mime_html_mail_cannot_run_script_or_load_anything(lab):
    # A listener on loopback stands in for the tracker: nothing may reach it.
    tracker = socket.socket()
    tracker.bind(("127.0.0.1", 0))
    tracker.listen(8)
    tracker.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                conn, _ = tracker.accept()
                hits.append(conn.recv(200))
                conn.close()
            except OSError:
                pass
    watcher = threading.Thread(target=watch)
    watcher.start()
    port = tracker.getsockname()[1]
    try:
        with Lab2(lab) as l2:
            html = (f"<html><head><title>Pwned</title></head><body><p>Visible &lt;b&gt;text&lt;/b&gt; here</p>"
                    f"<script>document.title='pwned';fetch('http://127.0.0.1:{port}/script')</script>"
                    f"<img src=\"http://127.0.0.1:{port}/pixel.png\" onerror=\"document.title='pwned'\">"
                    f"<style>body{{background:url(http://127.0.0.1:{port}/css)}}</style></body></html>")
            m = EmailMessage()
            m["From"] = "ana@447.edu"
            m["To"] = "bob@447.edu"
            m["Subject"] = "HTML only"
            m.set_content(html, subtype="html")
            send_with_smtplib(lab, l2, m)
            mid = newest(l2)["id"]
            page = f"/mailboxes/bob@447.edu/messages/{mid}/page"
            resp, body = fetch(lab, l2, page)
            policy = resp.getheader("Content-Security-Policy")
            assert policy and "default-src 'none'" in policy and "script" not in policy, policy
            assert resp.getheader("X-Content-Type-Options") == "nosniff"
            text = body.decode()
            assert "Visible &lt;b&gt;text&lt;/b&gt; here" in text and "<script" not in text and "<img" not in text
            if shutil.which("chromium"):
                dom = chromium(lab, l2, page, ["--dump-dom", "--virtual-time-budget=3000"]).stdout
                assert "<title>HTML only</title>" in dom and "pwned" not in dom.lower(), dom[:800]
                assert "Visible &lt;b&gt;text&lt;/b&gt; here" in dom
                # The HTML part itself downloads as octets, never rendered.
                resp, body = fetch(lab, l2, f"/mailboxes/bob@447.edu/messages/{mid}/parts/1")
                assert resp.getheader("Content-Type") == "application/octet-stream"
                assert resp.getheader("Content-Disposition").startswith("attachment;")
    finally:
        stop.set()
        watcher.join()
        tracker.close()
    assert hits == [], hits
