"""The sender client attaches files (issue 20): --attach FILE (repeatable) and the menu's `attach`;
Python's email package, a reader nobody here wrote, reads the stored message back."""

import email
import email.policy
import os

from tests.e2e.harness import Server, messages, register, run_client, test
from tests.e2e.test_clients import TerminalSession, terminal_env


def read_back(db, mailbox):
    (subject, raw), = messages(db, mailbox)
    return email.message_from_bytes(raw, policy=email.policy.default)


@test
def attach_option_sends_files_byte_identical_with_their_names(lab):
    with Server(lab, "senderserver") as server:
        ana, bob = register(lab, server.port, "ana"), register(lab, server.port, "bob")
        picture = os.path.join(lab.dir, "Übung 1.png")
        data = bytes(range(256)) * 40
        with open(picture, "wb") as f:
            f.write(data)
        notes = os.path.join(lab.dir, "notes.txt")
        with open(notes, "w") as f:
            f.write(".a line that starts with a dot\n")
        body = lab.path("body.txt")
        with open(body, "w") as f:
            f.write("Zwei Dateien für dich\n")
        out = run_client(lab, server.port, ["--user", "ana", "--password", ana, "--to", "bob", "--subject",
                                            "Diagramm für die Übung", "--body-file", body,
                                            "--attach", picture, "--attach", notes])
        assert out.returncode == 0, out.stderr
        parsed = read_back(server.db, "bob@447.edu")
        assert parsed["Subject"] == "Diagramm für die Übung", parsed["Subject"]
        assert parsed.get_content_type() == "multipart/mixed"
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Zwei Dateien für dich\n"
        files = {part.get_filename(): part for part in parsed.iter_attachments()}
        assert set(files) == {"Übung 1.png", os.path.basename(notes)}, files
        assert files["Übung 1.png"].get_content_type() == "image/png"
        assert files["Übung 1.png"].get_content() == data
        assert files[os.path.basename(notes)].get_content().replace("\r\n", "\n") == ".a line that starts with a dot\n"
        assert bob


@test
def attach_option_refuses_a_missing_file_before_connecting(lab):
    with Server(lab, "senderserver") as server:
        ana = register(lab, server.port, "ana")
        out = run_client(lab, server.port, ["--user", "ana", "--password", ana, "--to", "ana",
                                            "--attach", "/no/such/file.png"])
        assert out.returncode == 2 and "cannot attach /no/such/file.png: no such file" in out.stderr, out
        assert messages(server.db, "ana@447.edu") == []


@test
def the_menus_attach_goes_with_the_next_message_and_says_what_travels(lab):
    with Server(lab, "senderserver") as server:
        ana, bob = register(lab, server.port, "ana"), register(lab, server.port, "bob")
        path = os.path.join(lab.dir, "plan.csv")
        with open(path, "w") as f:
            f.write("week,topic\n1,TLS\n")
        term = TerminalSession([lab.exe("senderclient"), "--port", str(server.port), "--ca", lab.ca], terminal_env())
        for typed, wait in [("ehlo\r", "your name"), ("\r", "smtp> "), ("auth\r", "email"), ("ana\r", "password"),
                            (ana + "\r", "smtp> "), ("attach\r", "file to attach"), (path + "\r", "smtp> "),
                            ("mail from\r", "sender"), ("\r", "smtp> "), ("rcpt to\r", "recipient"),
                            ("bob\r", "smtp> "), ("data\r", "subject: "), ("Plan für Woche 1\r", "'.'")]:
            term.type(typed)
            seen = term.expect(wait)
            if typed == path + "\r":
                assert "attached plan.csv (text/csv" in seen, seen
        term.type("see the plan\r.\r")
        seen = term.expect("smtp> ")
        assert "RFC 2047" in seen and "=?UTF-8?" in seen, seen
        assert "attachment plan.csv: text/csv" in seen and "queued as" in seen, seen
        term.type("quit\r")
        term.expect("Bye.")
        term.finish()
        parsed = read_back(server.db, "bob@447.edu")
        (part,) = parsed.iter_attachments()
        assert part.get_filename() == "plan.csv" and part.get_content().replace("\r\n", "\n") == "week,topic\n1,TLS\n"
        assert parsed["Subject"] == "Plan für Woche 1"
        assert bob
