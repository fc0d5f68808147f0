"""The first-day traps of issue 19, each as a student meets it: at a real terminal (a pseudo-terminal
with libedit), with Python's smtplib, with curl, by hand with printf | base64. Each failed on the
main of session 4."""

import base64
import email
import email.policy
import smtplib
import subprocess

from tests.e2e.harness import Server, messages, register, test
from tests.e2e.test_clients import TerminalSession, terminal_env


def login_terminal(lab, server, user, password):
    term = TerminalSession([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca], terminal_env())
    term.expect("smtp> ")
    term.type("EHLO me\r")
    term.expect("smtp> ")
    credentials = base64.b64encode(("\0" + user + "\0" + password).encode()).decode()
    term.type("AUTH PLAIN " + credentials + "\r")
    seen = term.expect("smtp> ")
    assert "235 2.7.0" in seen, seen
    return term, seen


def start_message_to(term, recipient):
    """The menu's MAIL FROM (the default sender), RCPT TO and DATA, up to the subject prompt."""
    for typed, wait in [("mail from\r", "sender"), ("\r", "smtp> "), ("rcpt to\r", "recipient"),
                        (recipient + "\r", "smtp> "), ("data\r", "subject: ")]:
        term.type(typed)
        term.expect(wait)


@test
def ctrl_c_while_typing_a_message_abandons_it_and_the_session_goes_on(lab):
    with Server(lab, "senderserver") as server:
        ana, bob = register(lab, server.port, "ana"), register(lab, server.port, "bob")
        term, seen = login_terminal(lab, server, "ana", ana)
        # The hint follows the session's real state, also after an AUTH typed as a raw line.
        assert "next: MAIL FROM" in seen, seen
        start_message_to(term, "bob")
        term.type("half a thought\r")
        term.expect("'.'")
        term.type("this must never arrive\r")
        term.type("\x03")  # Ctrl-C in the middle of the message
        seen = term.expect("smtp> ")
        assert "abandoned" in seen and "nothing was sent" in seen, seen
        assert "C: RSET" in seen and "250 2.0.0" in seen, seen
        assert "354" not in seen, seen
        # The session is still usable: a whole message goes through afterwards.
        start_message_to(term, "bob")
        term.type("the second\r")
        term.expect("'.'")
        term.type("kept\r.\r")
        seen = term.expect("smtp> ")
        assert "queued as" in seen, seen
        assert "next: MAIL FROM" in seen, seen  # after a queued message, not "AUTH"
        term.type("quit\r")
        term.expect("Bye.")
        assert term.finish() == 0
        stored = messages(server.db, "bob@447.edu")
        assert [s for s, _ in stored] == ["the second"], stored
        assert all(b"never arrive" not in raw for _, raw in stored), stored
        assert bob


@test
def raw_mail_and_rcpt_lines_then_the_menus_data_write_sensible_headers(lab):
    with Server(lab, "senderserver") as server:
        ana, bob = register(lab, server.port, "ana"), register(lab, server.port, "bob")
        term, _ = login_terminal(lab, server, "ana", ana)
        term.type("MAIL FROM:<ana>\r")  # raw lines, and bare names as at login
        seen = term.expect("smtp> ")
        assert "250 2.1.0 Sender <ana@447.edu> ok" in seen, seen
        term.type("RCPT TO:<bob>\r")
        seen = term.expect("smtp> ")
        assert "250 2.1.5" in seen and "next: RCPT TO (another) or DATA" in seen, seen
        term.type("data\r")
        term.expect("subject: ")
        term.type("Subject: half\r")  # what the course slides show, typed at the prompt
        term.expect("'.'")
        term.type("body\r.\r")
        seen = term.expect("smtp> ")
        assert "queued as" in seen, seen
        term.type("quit\r")
        term.expect("Bye.")
        term.finish()
        (subject, raw), = messages(server.db, "bob@447.edu")
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert subject == "half" and parsed["Subject"] == "half", raw
        assert parsed["From"] == "<ana@447.edu>" or parsed["From"].addresses[0].addr_spec == "ana@447.edu", raw
        assert [a.addr_spec for a in parsed["To"].addresses] == ["bob@447.edu"], raw
        assert bob


@test
def bare_names_work_everywhere_the_login_takes_them(lab):
    with Server(lab, "senderserver") as sender, \
            Server(lab, "retrieverserver", db=sender.db) as retriever:
        ana, bob = register(lab, sender.port, "ana"), register(lab, sender.port, "bob")
        # smtplib as a student writes it: bare names in the login, the envelope and the headers.
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            smtp.login("ana", ana)
            refused = smtp.sendmail("ana", ["bob"], "Subject: bare\r\n\r\nhi\r\n")
            assert refused == {}, refused
        # curl's --mail-from / --mail-rcpt with bare names.
        done = subprocess.run(["curl", "-sS", "--cacert", lab.ca, f"smtps://localhost:{sender.port}",
                               "--user", f"ana:{ana}", "--mail-from", "ana", "--mail-rcpt", "bob", "-T", "-"],
                              input=b"Subject: curl\r\n\r\nhi\r\n", capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert [s for s, _ in messages(sender.db, "bob@447.edu")] == ["bare", "curl"]
        # The mailbox URL with a bare name is the same mailbox.
        done = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "-u", f"bob:{bob}", "-H", "Accept: application/json",
                               f"https://localhost:{retriever.port}/mailboxes/bob/messages"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "curl" in done.stdout and "bare" in done.stdout, done.stdout
        # Someone else's mailbox: refused with the address of one's own.
        done = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "-u", f"bob:{bob}",
                               f"https://localhost:{retriever.port}/mailboxes/ana/messages", "-w", "%{http_code}"],
                              capture_output=True, text=True, timeout=30)
        assert done.stdout.endswith("403") and "/mailboxes/bob@447.edu/messages" in done.stdout, done.stdout


@test
def refusals_name_the_next_step(lab):
    with Server(lab, "senderserver") as sender, \
            Server(lab, "retrieverserver", db=sender.db) as retriever:
        ana = register(lab, sender.port, "ana")
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            try:
                smtp.login("ana", "12345447")
                raise AssertionError("a wrong password was accepted")
            except smtplib.SMTPAuthenticationError as e:
                assert e.smtp_code == 535 and b"make password USER=ana" in e.smtp_error, e
        with smtplib.SMTP_SSL("localhost", sender.port, context=lab.ssl_context()) as smtp:
            smtp.login("ana", ana)
            code, text = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0bob\0").decode())
            assert code == 503 and b"QUIT and connect again" in text, text
            smtp.mail("ana")
            code, text = smtp.rcpt("nobody")
            assert code == 550 and b"registers by logging in once" in text, text
        done = subprocess.run(["curl", "-sS", "--cacert", lab.ca, "-u", "ana:12345447", "-w", "%{http_code}",
                               f"https://localhost:{retriever.port}/mailboxes/ana/messages"],
                              capture_output=True, text=True, timeout=30)
        assert done.stdout.endswith("401") and "make password" in done.stdout, done.stdout


@test
def the_documented_auth_plain_recipe_works_for_any_password(lab):
    """printf '\\0%s\\0%s' user pass | base64: the recipe in docs/protocol.md. The digits of a lab
    password right after \\0 in one printf string would be read as an octal escape."""
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        recipe = subprocess.run(["bash", "-c", "printf '\\0%s\\0%s' \"$1\" \"$2\" | base64", "-", "ana@447.edu", ana],
                                capture_output=True, text=True, check=True).stdout.strip()
        assert base64.b64decode(recipe) == f"\0ana@447.edu\0{ana}".encode()
        with smtplib.SMTP_SSL("localhost", server.port, context=lab.ssl_context()) as smtp:
            smtp.ehlo()
            code, text = smtp.docmd("AUTH", "PLAIN " + recipe)
            assert code == 235, text
        docs = open("docs/protocol.md").read()
        assert "printf '\\0%s\\0%s'" in docs, "docs/protocol.md must give the recipe"
