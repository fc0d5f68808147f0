#!/usr/bin/python3
"""make grade DIR=submissions/ [ROSTER=roster.csv] [SECRET=...] [DB=users/maillab.db] [RUBRIC=...]:
grades a folder of students' captures in one run and writes DIR/grades.csv and DIR/grades.html.

Every file in the folder gets a row, whatever it is (a pcapng with or without embedded keys, with an
optional <name>.keys.log beside it; a truncated file is read as far as it goes; a text file or a
capture of another program is said to be one). Per student, a verdict for each step of the rubric
(report/rubric.csv: the README's lab by default), with the reason for every failed step; the
accounts and EHLO names seen, the start time; and provenance: the capture's TLS client_randoms looked
up in the class server's record (servers started with store.provenance = true, `make class-servers`):
"own session of ana@447.edu at 10:42", "session of another account", or "not captured against this
server". Files that share TLS sessions (a renamed copy) are flagged on both rows.

Students are matched by ROSTER (CSV with the columns student,account: a file whose name contains a
student id is that student's; else the account that logged in), or without a roster by the account
that logged in. A student's files make one row (a step is done when any of them shows it: the lab's
capture and its STARTTLS and plaintext comparisons). Each row links to the report of each capture
(report/report.py), the answer key.

Exit status: 0 when every file was graded (whatever the grades), 2 for a usage error."""

import argparse
import base64
import csv
import html
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "captures"))  # grading builds on the captures' reader, as the report does
from analyze import Capture  # noqa: E402
import labtoken  # noqa: E402

DEFAULT_RUBRIC = os.path.join(HERE, "rubric.csv")


def load_rubric(path):
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step") and not r["step"].startswith("#")]
    return [(r["step"].strip(), float(r["points"]), r["description"].strip()) for r in rows]


def load_roster(path):
    """student id -> account, from a CSV with the columns student,account."""
    if not path:
        return {}
    with open(path, newline="") as f:
        return {r["student"].strip().lower(): r["account"].strip().lower() for r in csv.DictReader(f)}


def decoded_account(text):
    """The user of an AUTH PLAIN line or a Basic Authorization value, else ""."""
    parts = text.split()
    try:
        if len(parts) >= 3 and parts[0].upper() == "AUTH" and parts[1].upper() == "PLAIN":
            fields = base64.b64decode(parts[2]).split(b"\0")
            return fields[1].decode(errors="replace").lower() if len(fields) == 3 else ""
        if len(parts) == 2 and parts[0].lower() == "basic":
            return base64.b64decode(parts[1]).decode(errors="replace").split(":", 1)[0].lower()
    except ValueError:
        return ""
    return ""


def with_keys_beside(path, work):
    """The capture with the key log beside it embedded (editcap --inject-secrets), when it has none."""
    stem = os.path.splitext(path)[0]
    for keys in (path + ".keys.log", stem + ".keys.log", stem + ".keys"):
        if os.path.exists(keys) and os.path.getsize(keys) > 0:
            target = os.path.join(work, os.path.basename(stem) + ".with-keys.pcapng")
            done = subprocess.run(["editcap", "--inject-secrets", f"tls,{keys}", path, target],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                return target, keys
    return path, None


class Provenance:
    """The class server's record of TLS sessions (the tls_sessions table), by client_random."""

    def __init__(self, db):
        self.sessions = {}
        if db and os.path.exists(db):
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                for random, service, peer, started, account in con.execute(
                        "SELECT client_random, service, peer, started_at, account FROM tls_sessions"):
                    self.sessions[random.lower()] = (service, peer, started, account)
            except sqlite3.OperationalError:
                pass  # a database from before provenance: nothing recorded
            finally:
                con.close()

    def verdict(self, randoms, account):
        found = [self.sessions[r] for r in randoms if r in self.sessions]
        if not randoms:
            return "no TLS sessions in the capture", False
        if not found:
            return "not captured against this server (none of its TLS sessions is in the server's record)", False
        accounts = sorted({a for _, _, _, a in found if a})
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(min(s for _, _, s, _ in found)))
        if account and accounts and accounts != [account]:
            return f"session of another account ({', '.join(accounts)}), not {account}", False
        owner = account or (accounts[0] if accounts else "no account")
        return f"own session of {owner} at {when} ({len(found)} of {len(randoms)} TLS sessions on record)", True


def examine(path, work):
    """What one file shows: steps seen, accounts, EHLO names, client_randoms, subjects. Never raises."""
    facts = {"file": os.path.basename(path), "notes": []}
    if not os.path.isfile(path):
        facts["error"] = "not a file"
        return facts
    readable, keys = with_keys_beside(path, work)
    if keys:
        facts["notes"].append(f"keys from {os.path.basename(keys)}")
    try:
        cap = Capture(readable)
    except (RuntimeError, OSError) as e:
        facts["error"] = "not a capture file Wireshark can read (" + str(e).splitlines()[0][:120] + ")"
        return facts
    if cap.truncated:
        facts["notes"].append("the file is cut short: graded as far as it reads")
    m = re.search(r"First packet time:\s*(.+)", cap.capinfos)
    facts["start"] = m[1].strip() if m else ""
    try:
        handshakes = cap.handshakes() if cap.has_tls else []
        smtp = cap.smtp_lines()
        http = cap.http_messages()
        subjects = [r["imf.subject"] for r in cap.table() if r.get("imf.subject")]
    except RuntimeError as e:
        facts["error"] = "tshark could not read it (" + str(e).splitlines()[0][:120] + ")"
        return facts
    client = [s for s in smtp if s["dir"] == "C"]
    server = [s for s in smtp if s["dir"] == "S"]
    facts["tls13"] = any(h.get("chosen_version") == "TLS 1.3" for h in handshakes)
    facts["secrets"] = bool(cap.secrets) and bool(client)
    facts["encrypted_unread"] = cap.has_tls and not client
    facts["greeting"] = any(s["text"].startswith("220 ") and "maillab" in s["text"] for s in server)
    facts["ehlo"] = sorted({s["text"].split(" ", 1)[1] for s in client
                            if s["text"].upper().startswith(("EHLO ", "HELO ")) and " " in s["text"]})
    facts["smtp_accounts"] = sorted({decoded_account(s["text"]) for s in client} - {""})
    facts["auth"] = any(s["text"].startswith("235 ") for s in server)
    facts["mail"] = any(s["text"].upper().startswith("MAIL FROM") for s in client) and \
        any(s["text"].startswith("250 2.0.0 Ok: queued as") for s in server)
    facts["subjects"] = subjects
    facts["http_accounts"] = sorted({decoded_account(m["authorization"]) for m in http if m["authorization"]} - {""})
    requests = {}
    for m in http:
        if m["method"]:
            requests.setdefault(m["stream"], []).append(m)
    gets, conditional = [], False
    for m in http:
        if not m["method"] and m["status"]:
            asked = [q for q in requests.get(m["stream"], []) if q["frame"] < m["frame"]]
            if asked:
                q = asked[-1]
                if m["status"] == "200" and q["method"] == "GET":
                    gets.append((q["uri"], decoded_account(q["authorization"])))
                if m["status"] == "304":
                    conditional = True
    facts["gets"] = gets
    facts["conditional"] = conditional
    facts["randoms"] = sorted({h["client_random"].lower() for h in handshakes if h.get("client_random")})
    facts["mode"] = cap.mode
    facts["maillab"] = facts["greeting"] or any(u.startswith("/mailboxes") or u == "/" for u, _ in gets) or \
        any(m["uri"].startswith("/mailboxes") for m in http if m["method"])
    facts["capture"] = cap
    return facts


def judge(facts, student, account, rubric, secret, provenance):
    """The row: each rubric step ok or not, with a reason when not."""
    row = {"file": facts["file"], "student": student or "", "account": account or ""}
    steps = {}

    def step(name, ok, reason):
        steps[name] = (bool(ok), "" if ok else reason)

    if "error" in facts:
        for name, _, _ in rubric:
            step(name, False, facts["error"])
        row.update(steps=steps, provenance=facts["error"], score=0.0, notes="; ".join(facts["notes"]),
                   accounts="", ehlo="", start="")
        return row
    unread = "the TLS records are there but the capture holds no keys (embed them or put NAME.keys.log beside it)"
    foreign = "" if facts["maillab"] or facts["encrypted_unread"] else \
        " (no maillab greeting or /mailboxes request: a capture of another program?)"
    step("tls13", facts["tls13"], "no TLS 1.3 handshake (ServerHello supported_versions)")
    step("secrets", facts["secrets"], unread if facts["encrypted_unread"] else "no decryption secrets in the capture")
    step("greeting", facts["greeting"], (unread if facts["encrypted_unread"] else "no 220 maillab greeting") + foreign)
    step("auth", facts["auth"], unread if facts["encrypted_unread"] else "no AUTH answered 235")
    step("mail", facts["mail"], unread if facts["encrypted_unread"] else "no MAIL/RCPT/DATA answered 250 (queued)")
    wanted = labtoken.token(secret, student) if secret and student else ""
    step("token", wanted and any(wanted in s for s in facts["subjects"]),
         ("no student id to compute the token for" if not student else
          f"the token {wanted} is not in the Subject of any message" +
          (f" (subjects seen: {', '.join(repr(s[:40]) for s in facts['subjects'][:3])})" if facts["subjects"] else "")))
    own = [u for u, who in facts["gets"] if u == "/" or u.startswith("/?") or
           (account and u.startswith(f"/mailboxes/{account}/"))]
    step("get", own, f"no GET of {account or 'the student'}'s own mailbox answered 200")
    step("conditional", facts["conditional"], "no conditional GET answered 304 (If-None-Match or If-Modified-Since)")
    # The comparison captures some labs ask for: the same session with STARTTLS, and in plaintext.
    step("starttls_capture", facts["mode"] == "starttls" and facts["greeting"],
         "no STARTTLS capture (the session on a server started with --tls starttls)")
    step("plaintext_capture", facts["mode"] == "off" and facts["auth"],
         "no plaintext capture (the session on a server started with --tls off --allow-plaintext-auth)")
    verdict, own_session = provenance.verdict(facts["randoms"], account)
    if facts.get("shared_with"):
        verdict += "; shares its TLS sessions with " + ", ".join(facts["shared_with"])
        # With the student known from the file name, the record says whose sessions they are (the
        # other file's owner passes, the copy does not); without, nobody can tell who copied whom.
        own_session = own_session and facts.get("named", False)
    step("provenance", own_session, verdict)
    score = sum(points for name, points, _ in rubric if steps.get(name, (False,))[0])
    row.update(steps=steps, provenance=verdict, score=score, notes="; ".join(facts["notes"]),
               accounts=", ".join(sorted(set(facts["smtp_accounts"]) | set(facts["http_accounts"]))),
               ehlo=", ".join(facts["ehlo"]), start=facts.get("start", ""))
    return row


def student_of(name, facts, roster):
    """(student id, account) for a file: a roster id in the file name, else the account that logged in."""
    accounts = facts.get("smtp_accounts", []) + facts.get("http_accounts", [])
    lowered = os.path.splitext(name)[0].lower()
    for student, account in sorted(roster.items(), key=lambda kv: -len(kv[0])):
        if re.search(r"(^|[^a-z0-9])" + re.escape(student) + r"($|[^a-z0-9])", lowered):
            facts["named"] = True
            return student, account
    if accounts:
        account = accounts[0]
        for student, acc in roster.items():
            if acc == account:
                return student, account
        return account.split("@")[0], account
    return "", ""


def merge(rows, rubric):
    """One row per student: a step is done when any of the student's files shows it (the lab's main
    capture and its STARTTLS and plaintext comparisons are separate files)."""
    by_student, order = {}, []
    for r in rows:
        key = r["student"] or "file:" + r["file"]
        if key not in by_student:
            order.append(key)
        by_student.setdefault(key, []).append(r)
    merged = []
    for key in order:
        group = by_student[key]
        if len(group) == 1:
            merged.append(group[0])
            continue
        steps = {}
        for name in {n for r in group for n in r["steps"]}:
            done = [r for r in group if r["steps"].get(name, (False, ""))[0]]
            steps[name] = (True, "") if done else (False, "; ".join(sorted({r["steps"][name][1] for r in group
                                                                               if name in r["steps"]})))
        first = group[0]
        merged.append({"student": first["student"], "account": first["account"], "steps": steps,
                       "file": ", ".join(r["file"] for r in group),
                       "score": sum(points for name, points, _ in rubric if steps.get(name, (False,))[0]),
                       "provenance": "; ".join(dict.fromkeys(f"{r['file']}: {r['provenance']}" for r in group)),
                       "notes": "; ".join(r["notes"] for r in group if r["notes"]),
                       "accounts": ", ".join(sorted({a for r in group for a in r["accounts"].split(", ") if a})),
                       "ehlo": ", ".join(sorted({e for r in group for e in r["ehlo"].split(", ") if e})),
                       "start": min((r["start"] for r in group if r["start"]), default=""),
                       "reports": [x for r in group for x in r.get("reports", [])]})
    return merged


def write_html(path, rows, rubric, title):
    steps = [name for name, _, _ in rubric]
    total = sum(points for _, points, _ in rubric)
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>",
           "<style>body{font-family:sans-serif;max-width:1240px;margin:0 auto;padding:12px;font-size:14px}"
           "table{border-collapse:collapse;width:100%;font-size:12px}td,th{border:1px solid #ccc;padding:2px 5px;"
           "vertical-align:top;overflow-wrap:anywhere}td.ok{background:#e6f4ea}td.no{background:#fce8e6}</style>",
           "</head><body><h1>" + html.escape(title) + "</h1>",
           "<p>Steps: " + "; ".join(f"<b>{html.escape(n)}</b> ({p:g}) {html.escape(d)}" for n, p, d in rubric) + "</p>",
           "<table><thead><tr><th>student</th><th>file</th><th>score</th>" +
           "".join(f"<th>{html.escape(s)}</th>" for s in steps) +
           "<th>provenance</th><th>accounts / EHLO / start</th><th>report</th></tr></thead><tbody>"]
    for r in rows:
        cells = []
        for s in steps:
            ok, reason = r["steps"].get(s, (False, "not graded"))
            cells.append(f"<td class=\"{'ok' if ok else 'no'}\">{'ok' if ok else html.escape(reason)}</td>")
        report = " ".join(f"<a href=\"{html.escape(x)}\">report</a>" for x in r.get("reports", []))
        out.append(f"<tr class=\"student\"><td>{html.escape(r['student'])}</td><td>{html.escape(r['file'])}"
                   f"{'<br><i>' + html.escape(r['notes']) + '</i>' if r['notes'] else ''}</td>"
                   f"<td>{r['score']:g} / {total:g}</td>" + "".join(cells) +
                   f"<td>{html.escape(r['provenance'])}</td><td>{html.escape(r['accounts'])}<br>"
                   f"{html.escape(r['ehlo'])}<br>{html.escape(r['start'])}</td><td>{report}</td></tr>")
    out.append("</tbody></table></body></html>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--roster")
    parser.add_argument("--secret")
    parser.add_argument("--secret-file")
    parser.add_argument("--db", default=os.path.join(ROOT, "users", "maillab.db"))
    parser.add_argument("--rubric", default=DEFAULT_RUBRIC)
    parser.add_argument("--out", help="where grades.csv and grades.html go (default: DIR)")
    parser.add_argument("--no-reports", action="store_true", help="do not write a report per capture")
    args = parser.parse_args()
    if not os.path.isdir(args.dir):
        print(f"usage: make grade DIR=folder-of-captures (no folder {args.dir})", file=sys.stderr)
        return 2
    out_dir = args.out or args.dir
    rubric = load_rubric(args.rubric)
    roster = load_roster(args.roster)
    secret = args.secret
    if not secret:
        path = args.secret_file or labtoken.DEFAULT_SECRET_FILE
        secret = labtoken.load_secret(None, path, create=False) if os.path.exists(path) else ""
    provenance = Provenance(args.db)
    generated = {"grades.csv", "grades.html"}
    files = sorted(f for f in os.listdir(args.dir) if not f.startswith(".") and f not in generated and
                   not f.endswith((".keys.log", ".keys")) and os.path.isfile(os.path.join(args.dir, f)))
    work = tempfile.mkdtemp(prefix="maillab-grade-")
    print(f"grading {len(files)} file(s) in {args.dir} ...", flush=True)
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            facts = list(pool.map(lambda f: examine(os.path.join(args.dir, f), work), files))
        # Copies: TLS sessions (client_randoms) that appear in more than one file.
        owners = {}
        for f in facts:
            for r in f.get("randoms", []):
                owners.setdefault(r, set()).add(f["file"])
        for f in facts:
            others = sorted({o for r in f.get("randoms", []) for o in owners[r]} - {f["file"]})
            if others:
                f["shared_with"] = others
        rows = []
        for f in facts:
            student, account = student_of(f["file"], f, roster)
            rows.append(judge(f, student, account, rubric, secret, provenance))
            print(f"  {f['file']}: {rows[-1]['score']:g} points; {rows[-1]['provenance']}", flush=True)
        if not args.no_reports:
            reports = os.path.join(out_dir, "reports")
            os.makedirs(reports, exist_ok=True)

            def report(pair):
                f, row = pair
                cap = f.get("capture")
                if not cap or not (f.get("maillab") or f.get("encrypted_unread")):
                    return
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(f["file"])[0])
                done = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "report", "report.py"), "--name", name,
                                       "--out", reports, cap.path], capture_output=True, text=True)
                if done.returncode == 0:
                    row["reports"] = [os.path.relpath(os.path.join(reports, name, "report.html"), out_dir)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(report, zip(facts, rows)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = merge(rows, rubric)
    steps = [name for name, _, _ in rubric]
    with open(os.path.join(out_dir, "grades.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "file", "score", "max"] + steps + ["reasons", "provenance_verdict", "accounts", "ehlo", "start",
                                                                   "notes", "report"])
        total = sum(points for _, points, _ in rubric)
        for r in rows:
            w.writerow([r["student"], r["file"], f"{r['score']:g}", f"{total:g}"] +
                       ["ok" if r["steps"][s][0] else "missing" for s in steps] +
                       ["; ".join(f"{s}: {r['steps'][s][1]}" for s in steps if not r["steps"][s][0]),
                        r["provenance"], r["accounts"], r["ehlo"], r["start"], r["notes"], " ".join(r.get("reports", []))])
    write_html(os.path.join(out_dir, "grades.html"), rows, rubric, f"maillab grades: {os.path.basename(os.path.abspath(args.dir))}")
    print(f"wrote {os.path.join(out_dir, 'grades.csv')} and grades.html ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
