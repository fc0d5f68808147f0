"""A message's own story (issue 19): the retriever shows the SMTP session that delivered each message
(when, from where, TLS version, cipher and group, the account, the transcript with AUTH redacted),
read with curl and Python's smtplib, tools nobody here wrote."""

import base64
import json
import re
import smtplib
import subprocess

from tests.e2e.harness import Server, register, test


def get(lab, port, path, user, password, accept=None):
    cmd = ["curl", "-sS", "--cacert", lab.ca, "-u", f"{user}:{password}", "-w", "\n%{http_code}"]
    if accept:
        cmd += ["-H", f"Accept: {accept}"]
    done = subprocess.run(cmd + [f"https://localhost:{port}{path}"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def newest_id(lab, port, user, password):
    status, body = get(lab, port, f"/mailboxes/{user}/messages", user, password, "application/json")
    assert status == 200, body
    return json.loads(body)["messages"][0]["id"]


@test
def each_message_tells_the_story_of_the_session_that_delivered_it(lab):
    with Server(lab, "senderserver") as sender, Server(lab, "retrieverserver", db=sender.db) as retriever:
        ana, bob = register(lab, sender.port, "ana"), register(lab, sender.port, "bob")
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            smtp.ehlo("laptop-of-ana")
            smtp.login("ana@447.edu", ana)
            smtp.sendmail("ana@447.edu", ["bob@447.edu"], "Subject: with a story\r\n\r\nhello\r\n")
        mid = newest_id(lab, retriever.port, "bob@447.edu", bob)
        status, page = get(lab, retriever.port, f"/mailboxes/bob@447.edu/messages/{mid}/story", "bob@447.edu", bob)
        assert status == 200, page
        # smtplib writes its commands in lower case (3.13 also "from:"); localhost may be ::1 first.
        for expected in ["how message", "laptop-of-ana", "tlsv1.3", "key exchange group",
                         "implicit tls", "ana@447.edu", "c: ehlo laptop-of-ana", "c: auth plain &lt;redacted&gt;",
                         "s: 235 2.7.0 authentication successful", "c: mail from:&lt;ana@447.edu&gt;",
                         "s: 354 ", "c: &lt;the message: ", "queued as"]:
            assert expected in page.lower(), (expected, page)
        assert "<dd>127.0.0.1</dd>" in page or "<dd>::1</dd>" in page, page
        secret = base64.b64encode(f"\0ana@447.edu\0{ana}".encode()).decode()
        assert secret not in page and ana not in page, page
        status, story = get(lab, retriever.port, f"/mailboxes/bob/messages/{mid}/story", "bob", bob, "application/json")
        assert status == 200, story
        story = json.loads(story)
        assert story["account"] == "ana@447.edu" and story["tls"].startswith("TLSv1.3 "), story
        assert story["tls_group"] and story["starttls"] is False, story
        assert re.fullmatch(r"[0-9A-F]{12}", story["queue_id"]), story
        # Two representations (Vary: Accept), two strong validators (RFC 9110 8.8.3): the page's ETag
        # does not revalidate the JSON.
        def head(*extra):
            done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-D", "-", "--cacert", lab.ca, "-u", f"bob:{bob}",
                                   *extra, f"https://localhost:{retriever.port}/mailboxes/bob/messages/{mid}/story"],
                                  capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            return int(done.stdout.split()[1]), re.search(r"(?im)^etag: *(\S+)", done.stdout).group(1)
        page_status, page_tag = head()
        json_status, json_tag = head("-H", "Accept: application/json")
        assert page_status == json_status == 200 and page_tag != json_tag, (page_tag, json_tag)
        assert head("-H", "Accept: application/json", "-H", f"If-None-Match: {page_tag}")[0] == 200
        assert head("-H", "Accept: application/json", "-H", f"If-None-Match: {json_tag}")[0] == 304
        # Only the mailbox's owner reads it.
        status, _ = get(lab, retriever.port, f"/mailboxes/bob@447.edu/messages/{mid}/story", "ana@447.edu", ana)
        assert status == 403
        # The inbox links to it.
        status, inbox = get(lab, retriever.port, "/", "bob@447.edu", bob)
        assert f"/messages/{mid}/story" in inbox, inbox


@test
def a_starttls_session_story_shows_the_plaintext_part_and_the_upgrade(lab):
    with Server(lab, "senderserver", args=["--tls", "starttls"]) as sender, \
            Server(lab, "retrieverserver", db=sender.db) as retriever:
        with smtplib.SMTP("localhost", sender.port) as smtp:
            smtp.starttls(context=lab.ssl_context())
            code, reply = smtp.login("carol@447.edu", "")  # registers: the password is in the 235 reply
            assert code == 235, reply
            smtp.sendmail("carol@447.edu", ["carol@447.edu"], "Subject: upgraded\r\n\r\nhi\r\n")
        carol = re.search(rb"password: (\d{8})", reply).group(1).decode()
        mid = newest_id(lab, retriever.port, "carol@447.edu", carol)
        status, page = get(lab, retriever.port, f"/mailboxes/carol/messages/{mid}/story", "carol", carol)
        assert status == 200, page
        assert "S: 220 " in page and "C: STARTTLS" in page and "TLS handshake after STARTTLS" in page, page
        assert "after STARTTLS, RFC 3207" in page and "password: " not in page, page
