"""make grade DIR=submissions/ [ROSTER=roster.csv] [SECRET=...] [DB=users/maillab.db] [RUBRIC=...]:
grades a folder of students' captures in one run (docs/instructors.md, "3. Grade a folder").

  python3 -m report.grade DIR [--roster CSV] [--secret TEXT | --secret-file FILE] [--db DB]
                              [--admin build/bin/maillab-admin] [--cert certs/server.pem ...]
                              [--rubric captures/rubric.csv] [--out DIR] [--no-reports]

Each file is read once (captures/facts.py) and judged by the same rules as `make check-capture`
(captures/rubric.py), with what only the instructor has: the token (HMAC of the student id under
the instructor's secret) and the class server's record of TLS sessions, read through the store's
tool (`maillab-admin --db DB tls-sessions --json CLIENT_RANDOM...`, never the database directly). A
step other than tls13/secrets earns its points only in a TLS session that is on that record for the
student's account, matched by (client_random, server_random), and whose server certificate (when
the capture shows it) is the class server's (--cert, by SHA-256 of the DER).

Every roster student has a row ("no submission" when none); every file in DIR is named with what
became of it. Written as each file finishes (a stopped run leaves what it had):
  DIR/grades.csv        one row per student: a column per rubric step (its points or 0), total, max,
                        files, verdict, reasons
  DIR/grades-files.csv  one row per file: what became of it (outcome), its provenance_verdict, each
                        step's status (ok, missing, n/a) and the reasons
  DIR/grades.html       both tables (Content-Security-Policy: no scripts, nothing fetched)
  DIR/grades-reports/   the report of each capture (python3 -m report.report --for-grading: SVG ladders
                        only; it reuses the file's tshark read from its facts), linked from the page

Exit status: 0 when the folder was graded (whatever the grades), 2 for a usage error (no folder, no
class server record, a bad rubric or roster)."""

import argparse
import collections
import csv
import hashlib
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed

from captures import facts as capture_facts
from captures import labtoken
from captures import rubric as rules
from captures.facts import csv_cell, printable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ("grades.csv", "grades-files.csv", "grades.html")
REPORTS = "grades-reports"
KEY_SUFFIXES = (".keys.log", ".keys")
BATCH = 200  # client randoms per maillab-admin run
CUT = "the file is cut short: graded as far as it reads"
FILE_SECONDS = 120  # a file's time budget (--file-seconds): its reading, then its report


def cut_off_reason(seconds, what="reading it"):
    return f"cut off: {what} took longer than {seconds:g} s (--file-seconds), not graded"


def run_bounded(argv, seconds, **kwargs):
    """(returncode, stdout, stderr) of a command given `seconds`, or None when its time ran out: then
    it and everything it started (its own process group: tshark, mscgen, pandoc) are killed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        return None
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    return proc.returncode, out, err


def read_facts(path, work, seconds, cache=None):
    """(facts, "") for one file, read by `python3 -m captures.facts` in a process of its own, or
    (facts that hold nothing, the cut-off reason) when it took longer than `seconds` (issue 18 #6).
    cache: a folder where that process leaves its tshark read for the file's report to reuse."""
    done = run_bounded([sys.executable, "-m", "captures.facts", "--work", work] + (["--cache", cache] if cache else []) +
                       ["--", path], seconds, cwd=ROOT)  # a module, from the repository root (captures/__init__.py)
    if done is None:
        reason = cut_off_reason(seconds)
        f = capture_facts.FileFacts(path=os.path.abspath(path), name=os.path.basename(path), not_capture=reason)
        return f, reason
    code, out, err = done
    try:
        if code != 0:
            raise ValueError((err.strip().splitlines() or [f"exit {code}"])[-1][:200])
        return capture_facts.from_json(json.loads(out)), ""
    except (ValueError, TypeError) as e:
        f = capture_facts.FileFacts(path=os.path.abspath(path), name=os.path.basename(path),
                                    not_capture=f"could not be read ({printable(e)})")
        return f, ""


class UsageError(Exception):
    pass


# ---- the class server's record ---------------------------------------------------------------------

class Record:
    """The class server's TLS sessions in which an account logged in, read through maillab-admin for
    the client randoms the captures name (never the whole table, never sqlite3 directly)."""

    def __init__(self, admin, db):
        self.admin, self.db = admin, db
        self.by_pair = {}        # (client_random, server_random) -> record row
        self.clients = set()     # client randoms on record (any server_random)
        self.asked = set()
        self.lock = threading.Lock()
        # store.url: an SQLite file (sqlite:FILE or a bare path) must exist; a PostgreSQL URL is tried.
        if not db.startswith(("postgresql://", "postgres://")) and not os.path.isfile(db):
            raise UsageError(f"no class server database at {printable(db)} (DB=...: the database of the class "
                             "servers, started with `make class-senderserver`)")
        if not (os.path.isfile(admin) and os.access(admin, os.X_OK)):
            raise UsageError(f"no {printable(admin)} (build it with `make`, or --admin PATH)")
        self._run(["0" * 64])  # the tool answers, and knows tls-sessions

    def _run(self, randoms):
        done = subprocess.run([self.admin, "--db", self.db, "tls-sessions", "--json"] + randoms,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise UsageError(f"{printable(self.admin)} tls-sessions failed (exit {done.returncode}): "
                             f"{printable((done.stderr or done.stdout).strip()[:300])}")
        try:
            rows = json.loads(done.stdout or "[]")
        except ValueError as e:
            raise UsageError(f"{printable(self.admin)} tls-sessions printed no JSON array ({e})")
        return [r for r in rows if isinstance(r, dict)]

    def lookup(self, randoms):
        with self.lock:
            wanted = sorted({r for r in randoms if re.fullmatch(r"[0-9a-f]{64}", r)} - self.asked)
            for i in range(0, len(wanted), BATCH):
                for row in self._run(wanted[i:i + BATCH]):
                    client = str(row.get("client_random", "")).lower()
                    server = str(row.get("server_random", "")).lower()
                    self.clients.add(client)
                    self.by_pair[(client, server)] = {"account": str(row.get("account", "")).lower(),
                                                      "service": row.get("service", ""),
                                                      "peer": row.get("peer", ""),
                                                      "started_at": row.get("started_at", 0)}
            self.asked.update(wanted)

    def get(self, session):
        return self.by_pair.get((session.client_random, session.server_random))


# ---- one file ------------------------------------------------------------------------------------

class FileResult:
    """One entry of DIR and what became of it."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self.kind = "capture"       # capture, keys, folder, refused
        self.note = ""              # for keys/folder/refused entries
        self.facts = None
        self.student = self.account = self.assigned_by = ""
        self.own = {}               # stream -> "" (counts) or why not
        self.foreign = {}           # stream -> the account it is on record for
        self.on_record = []         # streams on record (any account)
        self.provenance = ""        # in words
        self.failure = ""           # a file-level reason it earns nothing ("" when it may)
        self.verdicts = {}
        self.report = ""            # path of its report, relative to the output folder
        self.cut_off = ""           # why the file was cut off (past --file-seconds), "" when it was not
        self.done = False

    @property
    def shown(self):
        return printable(self.name)


def list_folder(folder, out_dir):
    """Every entry of the folder, in name order, except the grader's own outputs."""
    real = os.path.realpath(folder)
    ours = set(OUTPUTS) | {REPORTS} if os.path.realpath(out_dir) == real else set()
    entries = []
    for name in sorted(os.listdir(folder)):
        if name in ours or (name.startswith(".grades") and ".tmp" in name):
            continue
        path = os.path.join(folder, name)
        r = FileResult(name, path)
        target = os.path.realpath(path)
        if os.path.islink(path) and os.path.commonpath([real, target]) != real:
            r.kind, r.note = "refused", "refused: a link out of the folder"
        elif os.path.isdir(path):
            r.kind, r.note = "folder", "skipped: a folder (only the files in DIR itself are graded)"
        elif name.endswith(KEY_SUFFIXES):
            r.kind = "keys"
        entries.append(r)
    captures = {r.name for r in entries if r.kind == "capture"}
    for r in entries:
        if r.kind == "keys":
            base = r.name[:-len(".keys.log")] if r.name.endswith(".keys.log") else r.name[:-len(".keys")]
            owners = sorted(c for c in captures if c == base or os.path.splitext(c)[0] == base)
            if os.path.islink(r.path) and os.path.commonpath([real, os.path.realpath(r.path)]) != real:
                r.note = "refused: a key log that links out of the folder"
            elif owners:
                r.note = "the key log of " + ", ".join(printable(o) for o in owners)
            else:
                r.note = "a key log with no capture beside it"
    return entries


def load_roster(path):
    """student id -> account, from a CSV with the columns student,account."""
    if not path:
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UsageError(f"roster {printable(path)}: {e.strerror}")
    if rows and not {"student", "account"} <= set(rows[0]):
        raise UsageError(f"roster {printable(path)}: the columns must be student,account")
    roster = {}
    for r in rows:
        student, account = (r.get("student") or "").strip().lower(), (r.get("account") or "").strip().lower()
        if student:
            roster[student] = account
    return roster


def assign(r, roster, record):
    """The student a file is for: a roster id in its name, else the account on the class server's
    record for its sessions, else the account it logged in as. Without a roster: the account."""
    stem = r.name.lower()
    for student in sorted(roster, key=len, reverse=True):
        if re.search(r"(^|[^a-z0-9])" + re.escape(student) + r"($|[^a-z0-9])", stem):
            return student, roster[student], "its name"
    f = r.facts
    recorded = collections.Counter(record.get(s)["account"] for s in f.sessions if record.get(s)) if f else {}
    seen = [a for a, _ in recorded.most_common()] + (f.accounts() if f else [])
    by_account = {a: s for s, a in roster.items()}
    for account in seen:
        if roster and account in by_account:
            return by_account[account], account, "its account"
        if not roster:
            return account.split("@")[0], account, "its account"
    return "", "", ""


def judge_provenance(r, record, certificates):
    """Which of the file's sessions count for its student, and the file's provenance in words."""
    f, account = r.facts, r.account
    r.own, r.foreign, r.on_record = {}, {}, []
    mismatched = 0
    for s in f.sessions:
        if not s.tls:
            r.own[s.stream] = "a plaintext connection: no TLS session to look up"
            continue
        if not (s.client_random and s.server_random):
            r.own[s.stream] = "its handshake (ClientHello and ServerHello) is not in the capture"
            continue
        row = record.get(s)
        if row is None:
            r.own[s.stream] = ("its server_random is not the one on the class server's record"
                               if s.client_random in record.clients else "not on the class server's record")
            continue
        r.on_record.append(s.stream)
        if s.cert_sha256 and s.cert_sha256 not in certificates:
            mismatched += 1
            r.own[s.stream] = "its server certificate is not the class server's"
        elif not account or row["account"] != account:
            r.foreign[s.stream] = row["account"]
            r.own[s.stream] = f"on record for {row['account']}" + (f", not {account}" if account else "")
        else:
            r.own[s.stream] = ""
    own = [s for s in f.sessions if r.own.get(s.stream) == ""]
    tls = [s for s in f.sessions if s.tls]
    maillab = [s for s in f.sessions if s.maillab != "no"]
    if own:
        first = min(record.get(s)["started_at"] or 0 for s in own)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(first)) if first else "?"
        r.provenance = f"own TLS sessions of {account} from {when} ({len(own)} of {len(tls)} on record)"
        r.failure = ""
    elif r.foreign:
        owner = collections.Counter(r.foreign.values()).most_common(1)[0][0]
        r.provenance = f"copy of the TLS sessions of {owner}" if account else \
            f"TLS sessions of {owner}, an account not on the roster"
        r.failure = r.provenance
    elif mismatched:
        r.provenance = "not captured against the class server: its server certificate is not the class server's"
        r.failure = r.provenance
    elif maillab or tls:
        r.provenance = ("not captured against the class server" +
                        (f": none of its {len(tls)} TLS sessions is on the class server's record" if tls else
                         ": plaintext, no TLS session to look up"))
        r.failure = r.provenance if not any(s.maillab == "yes" and not s.tls for s in maillab) else ""
    else:
        r.provenance = "no maillab session in it"
        r.failure = r.provenance


def cross_reference(results):
    """Files that hold the same TLS sessions: a copy names the file it copied, the original names
    the copy."""
    holders = collections.defaultdict(set)
    for r in results:
        if r.facts and not r.facts.not_capture:
            for s in r.facts.sessions:
                if s.client_random and s.server_random:
                    holders[(s.client_random, s.server_random)].add(r.name)
    by_name = {r.name: r for r in results}
    for r in results:
        if not r.facts or r.facts.not_capture:
            continue
        pairs = {(s.client_random, s.server_random) for s in r.facts.sessions if s.client_random and s.server_random}
        sharing = sorted({n for p in pairs for n in holders[p]} - {r.name})
        if not sharing:
            continue
        if r.foreign and not any(v == "" for v in r.own.values()):
            owners = set(r.foreign.values())
            originals = [n for n in sharing if by_name[n].account in owners]
            if originals:
                r.provenance += " (file " + ", ".join(printable(n) for n in originals) + ")"
                r.failure = r.provenance
        else:
            copiers = [n for n in sharing if by_name[n].account != r.account or not by_name[n].account]
            same = [n for n in sharing if n not in copiers]
            if copiers:
                r.provenance += "; its TLS sessions were handed in also by " + ", ".join(printable(n) for n in copiers)
            if same:
                r.provenance += "; the same TLS sessions as " + ", ".join(printable(n) for n in same)


def grading_for(r, secret):
    token = labtoken.token(secret, r.student) if secret and r.student else ""
    reason = "" if token else ("no instructor secret (SECRET=, --secret-file or users/instructor.secret)"
                               if not secret else "no student id to compute the token for")
    return rules.Grading(account=r.account, token=token, own=r.own, foreign=set(r.foreign),
                         summary=r.provenance, no_token_reason=reason)


def outcome(r):
    """What became of the file, in words."""
    if r.kind != "capture":
        return r.note
    if not r.done:
        return "not graded yet (the run was stopped before this file)"
    f = r.facts
    if r.cut_off:
        return r.cut_off + (f" (for {r.student})" if r.student else "")
    if f.not_capture:
        head = f"not a capture: {f.not_capture}"
        return head + (f" (for {r.student})" if r.student else "")
    if not r.student:
        return "unassigned: no roster id in its name and no roster account on record or in it"
    text = f"graded for {r.student}"
    if f.truncated:
        text += ": truncated (" + CUT + ")"
    return text


# ---- the grading run -----------------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.folder = os.path.abspath(args.dir)
        self.out = os.path.abspath(args.out or args.dir)
        self.steps = rules.load(args.rubric)
        self.roster = load_roster(args.roster)
        self.secret = args.secret or ""
        if not self.secret:
            path = args.secret_file or labtoken.DEFAULT_SECRET_FILE
            if os.path.exists(path):
                self.secret = labtoken.load_secret(None, path, create=False)
        self.certificates = set()
        for cert in args.cert or [os.path.join(ROOT, "certs", "server.pem")]:
            try:
                self.certificates.add(capture_facts.certificate_sha256(cert))
            except (OSError, ValueError) as e:
                raise UsageError(f"the class server's certificate {printable(cert)}: {e} (--cert FILE, or CERT= for make "
                                 "grade: the server.pem that `maillab-certs` wrote for the class servers)")
        db = args.db if args.db.startswith(("postgresql://", "postgres://")) else os.path.abspath(args.db.removeprefix("sqlite:"))
        self.record = Record(os.path.abspath(args.admin), db)
        self.entries = list_folder(self.folder, self.out)
        self.lock = threading.Lock()
        self.title = f"maillab grades: {os.path.basename(self.folder)}"
        self.file_seconds = max(1.0, float(getattr(args, "file_seconds", FILE_SECONDS) or FILE_SECONDS))

    def regrade(self):
        """Every file's student, provenance and verdicts from what is known now."""
        done = [r for r in self.entries if r.kind == "capture" and r.done]
        for r in done:
            r.student, r.account, r.assigned_by = assign(r, self.roster, self.record) if r.facts else ("", "", "")
            if r.cut_off:
                r.failure, r.provenance = r.cut_off, ""
            elif r.facts.not_capture:
                r.failure, r.provenance = "not a capture: " + r.facts.not_capture, ""
            else:
                judge_provenance(r, self.record, self.certificates)
        cross_reference(done)
        for r in done:
            r.verdicts = {s.name: rules.Verdict("missing", "the file was cut off (--file-seconds)")
                          for s in self.steps} if r.cut_off else \
                rules.evaluate(r.facts, self.steps, grading_for(r, self.secret))

    def students(self):
        """One row per student: the roster's (in its order) and any other student a file is for."""
        rows = collections.OrderedDict((s, {"student": s, "account": a, "files": []}) for s, a in self.roster.items())
        for r in self.entries:
            if r.kind == "capture" and r.done and r.student:
                row = rows.setdefault(r.student, {"student": r.student, "account": r.account, "files": []})
                row["files"].append(r)
        for row in rows.values():
            row["steps"], row["total"] = {}, 0.0
            for step in self.steps:
                verdicts = [(r, r.verdicts[step.name]) for r in row["files"] if step.name in r.verdicts]
                earned = [(r, v) for r, v in verdicts if v.ok]
                if earned:
                    row["steps"][step.name] = ("ok", step.points, "")
                    row["total"] += step.points
                elif not verdicts:
                    row["steps"][step.name] = ("missing", 0, "no submission")
                else:
                    status = "n/a" if all(v.status == "n/a" for _, v in verdicts) else "missing"
                    reasons = list(dict.fromkeys(v.reason for _, v in verdicts if v.reason))
                    if len(row["files"]) > 1:
                        reasons = list(dict.fromkeys(f"{r.shown}: {v.reason}" for r, v in verdicts if v.reason))
                    row["steps"][step.name] = (status, 0, "; ".join(reasons))
            files = row["files"]
            if not files:
                row["verdict"] = "no submission"
            else:
                row["verdict"] = "; ".join(f"{r.shown}: {r.failure or r.provenance}" +
                                           (" (" + CUT + ")" if r.facts.truncated else "")
                                           for r in files)
            # One reason for the whole row when every file failed as a whole (shown once, not per step).
            row["failure"] = "; ".join(dict.fromkeys(
                (f"{r.shown}: " if len(files) > 1 else "") + r.failure +
                (" (" + CUT + ")" if r.facts.truncated else "") for r in files)) \
                if files and all(r.failure for r in files) and row["total"] == 0 else ""
        return list(rows.values())

    # ---- outputs, rewritten as each file finishes ----

    def publish(self):
        with self.lock:
            self.regrade()
            students = self.students()
            self._write("grades.csv", lambda f: self._students_csv(f, students))
            self._write("grades-files.csv", lambda f: self._files_csv(f))
            self._write("grades.html", lambda f: f.write(self._html(students)))
            return students

    def _write(self, name, fill):
        target = os.path.join(self.out, name)
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out)
        try:
            with os.fdopen(handle, "w", newline="", encoding="utf-8") as f:
                fill(f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @property
    def maximum(self):
        return sum(s.points for s in self.steps)

    def _students_csv(self, f, students):
        w = csv.writer(f)
        w.writerow(["student", "account"] + [s.name for s in self.steps] + ["total", "max", "files", "verdict", "reasons"])
        for row in students:
            reasons = "; ".join(f"{', '.join(names)}: {why}" for why, names in grouped(row)) if row["files"] else ""
            w.writerow([csv_cell(printable(x)) for x in
                        [row["student"], row["account"]] + [f"{row['steps'][s.name][1]:g}" for s in self.steps] +
                        [f"{row['total']:g}", f"{self.maximum:g}", " ".join(r.shown for r in row["files"]),
                         row["verdict"], row["failure"] or reasons]])

    def _files_csv(self, f):
        w = csv.writer(f)
        w.writerow(["file", "outcome", "student", "account", "provenance_verdict", "truncated", "start", "mode", "sessions",
                    "sessions_on_record", "accounts_seen", "ehlo", "keys", "notes", "report"] +
                   [s.name for s in self.steps] + ["reasons"])
        for r in self.entries:
            fx = r.facts
            live = fx is not None and not fx.not_capture
            w.writerow([csv_cell(printable(x)) for x in [
                r.name, outcome(r), r.student, r.account, r.provenance,
                "yes" if live and fx.truncated else "", fx.start if live else "", fx.mode if live else "",
                len(fx.sessions) if live else "", len(r.on_record) if live else "",
                " ".join(fx.accounts()) if live else "",
                " ".join(sorted({e for s in fx.sessions for e in s.ehlo})) if live else "",
                fx.keys if fx else "", "; ".join(fx.notes) if fx else "", r.report] +
                [r.verdicts[s.name].status if r.verdicts else "" for s in self.steps] +
                ["; ".join(f"{n}: {v.reason}" for n, v in r.verdicts.items() if v.status != "ok" and v.reason)]])

    def _html(self, students):
        e = lambda text: html.escape(printable(text))  # noqa: E731
        steps = self.steps
        out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
               '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
               'style-src \'unsafe-inline\'; img-src \'self\'">',
               f'<title>{e(self.title)}</title>',
               "<style>body{font-family:sans-serif;margin:0 auto;padding:12px;font-size:14px;max-width:1800px}"
               "table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}"
               "th,td{border:1px solid #bbb;padding:3px 6px;vertical-align:top;text-align:left;overflow-wrap:break-word}"
               "th{background:#eee}td.num{text-align:right;white-space:nowrap}td.ok{background:#e6f4ea}"
               "td.no{background:#fce8e6}td.na{background:#f3f3f3;color:#666}tr.why td{border-top:none;color:#444}"
               "div.scroll{overflow-x:auto}dl{font-size:12px}dt{font-weight:bold;display:inline}dd{display:inline;margin:0 12px 0 4px}"
               "</style></head><body>",
               f"<h1>{e(self.title)}</h1>",
               f"<p>{len([s for s in students if s['files']])} of {len(students)} students handed in; "
               f"{len(self.entries)} entries in the folder. Steps, points and meaning:</p><dl>" +
               "".join(f"<dt>{e(s.name)}</dt><dd>{s.points:g}: {e(s.description)}</dd>" for s in steps) + "</dl>",
               '<h2>Students</h2><div class="scroll"><table id="students"><thead><tr><th>student</th><th>account</th>'
               "<th>score</th>" + "".join(f"<th>{e(s.name)}</th>" for s in steps) + "<th>files</th></tr></thead><tbody>"]
        for row in students:
            cells = [f"<td>{e(row['student'])}</td>", f"<td>{e(row['account'])}</td>",
                     f'<td class="num">{row["total"]:g} / {self.maximum:g}</td>']
            if row["failure"] or not row["files"]:
                cells.append(f'<td class="no" colspan="{len(steps)}">{e(row["failure"] or "no submission")}</td>')
            else:
                for s in steps:
                    status, points, _ = row["steps"][s.name]
                    css = {"ok": "ok", "n/a": "na"}.get(status, "no")
                    cells.append(f'<td class="num {css}">{points:g}' + ("" if status != "n/a" else " (n/a)") + "</td>")
            cells.append("<td>" + "<br>".join(e(r.name) + (" (truncated)" if r.facts.truncated else "")
                                              for r in row["files"]) + "</td>")
            out.append('<tr class="student">' + "".join(cells) + "</tr>")
            why = [] if row["failure"] or not row["files"] else \
                [f"<b>{e(', '.join(names))}</b>: {e(reason)}" for reason, names in grouped(row)]
            notes = [e(row["verdict"])] if row["files"] and not row["failure"] else []
            if why or notes:
                out.append(f'<tr class="why"><td></td><td colspan="{len(steps) + 3}">' + "<br>".join(notes + why) +
                           "</td></tr>")
        out.append("</tbody></table></div>")
        out.append('<h2>Files</h2><div class="scroll"><table id="files"><thead><tr><th>file</th><th>outcome</th>'
                   "<th>provenance</th><th>accounts seen</th><th>start</th><th>mode</th><th>report</th></tr></thead><tbody>")
        for r in self.entries:
            fx = r.facts
            live = fx is not None and not fx.not_capture
            link = f'<a href="{html.escape(urllib.parse.quote(r.report))}">report</a>' if r.report else ""
            notes = "; ".join(fx.notes) if fx else ""
            out.append('<tr class="file">' + "".join([
                f"<td>{e(r.name)}</td>", f"<td>{e(outcome(r))}" + (f"<br><i>{e(notes)}</i>" if notes else "") + "</td>",
                f"<td>{e(r.provenance)}</td>", f"<td>{e(' '.join(fx.accounts())) if live else ''}</td>",
                f"<td>{e(fx.start) if live else ''}</td>", f"<td>{e(fx.mode) if live else ''}</td>",
                f"<td>{link}</td>"]) + "</tr>")
        out.append("</tbody></table></div></body></html>")
        return "\n".join(out) + "\n"

    # ---- the steps of the run ----

    def read_all(self, work, cache=None):
        captures = [r for r in self.entries if r.kind == "capture"]
        with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 2)) as pool:
            futures = {pool.submit(read_facts, r.path, work, self.file_seconds, cache): r for r in captures}
            for future in as_completed(futures):
                r = futures[future]
                r.facts, r.cut_off = future.result()
                self.record.lookup(r.facts.client_randoms())
                r.done = True
                self.publish()
                print(printable(f"  {r.shown}: {outcome(r)}" + (f"; {r.provenance}" if r.provenance else "")),
                      flush=True)

    def reports(self, cache=None):
        """A report per capture (`report.report --for-grading`: SVG ladders only), each reusing the
        read its facts left in cache (the run's private work folder) instead of reading it again."""
        folder = os.path.join(self.out, REPORTS)
        wanted = [r for r in self.entries if r.kind == "capture" and r.facts and not r.facts.not_capture and
                  not r.cut_off and
                  any(s.maillab != "no" or s.tls for s in r.facts.sessions)]
        if not wanted:
            return
        os.makedirs(folder, exist_ok=True)
        taken = set()
        names = {r.name: report_folder(r.name, taken) for r in wanted}

        def one(r):
            name = names[r.name]
            done = run_bounded([sys.executable, "-m", "report.report", "--name", name, "--out", folder, "--for-grading",
                                "--shown-as=" + r.facts.name] +  # one word: a name may start with "-"
                               (["--cache", cache] if cache else []) + ["--", r.facts.readable],
                               self.file_seconds, cwd=ROOT)
            if done is None:
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                r.facts.notes.append(f"no report: making it took longer than {self.file_seconds:g} s (--file-seconds)")
            elif done[0] == 0:
                r.report = os.path.relpath(os.path.join(folder, name, "report.html"), self.out)
            else:
                r.facts.notes.append("no report: " + (done[2].strip().splitlines() or ["report.py failed"])[-1][:200])
            self.publish()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(one, wanted))


def grouped(row):
    """[(reason, [steps])]: the steps a row misses, those with the same reason together."""
    groups = collections.OrderedDict()
    for name, (status, _, reason) in row["steps"].items():
        if status != "ok" and reason:
            groups.setdefault(reason, []).append(name)
    return list(groups.items())


def report_folder(name, taken):
    """A folder name for a file's report: its name where that is a safe one, else the safe spelling
    and a hash of the real name (so "x y" and "x_y", or "-x" and "x", never share a folder)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-") or "capture"
    if safe != name:
        safe += "-" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    while safe in taken:
        safe += "_"
    taken.add(safe)
    return safe


def summary(run, students):
    entries = run.entries
    captures = [r for r in entries if r.kind == "capture"]
    assigned = [r for r in captures if r.student]
    unassigned = [r for r in captures if not r.student]
    cut = [r for r in assigned if r.cut_off]
    graded = [r for r in assigned if not r.facts.not_capture]
    truncated = [r for r in graded if r.facts.truncated]
    not_capture = [r for r in assigned if r.facts.not_capture and not r.cut_off]
    unassigned_nc = [r for r in unassigned if r.facts.not_capture and not r.cut_off]
    keys = [r for r in entries if r.kind == "keys"]
    other = [r for r in entries if r.kind in ("folder", "refused")]
    handed = [s for s in students if s["files"]]
    parts = [f"{len(graded)} graded" + (f" ({len(truncated)} of them truncated)" if truncated else ""),
             f"{len(not_capture)} not a capture"] + ([f"{len(cut)} cut off (--file-seconds)"] if cut else []) + \
        [f"{len(unassigned)} unassigned" +
         (f" ({len(unassigned_nc)} of them not a capture)" if unassigned_nc else ""),
             f"{len(keys)} key log{'s' if len(keys) != 1 else ''}", f"{len(other)} skipped"]
    return (f"{len(entries)} files ({', '.join(parts)}), {len(students)} students "
            f"({len(handed)} with a submission, {len(students) - len(handed)} without)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m report.grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--roster", help="CSV with the columns student,account")
    parser.add_argument("--secret", help="the instructor's token secret (default: --secret-file)")
    parser.add_argument("--secret-file", help="default users/instructor.secret")
    parser.add_argument("--db", default=os.path.join(ROOT, "users", "maillab.db"),
                        help="the class servers' database: an SQLite file or their store.url (postgresql://...)")
    parser.add_argument("--admin", default=os.path.join(ROOT, "build", "bin", "maillab-admin"),
                        help="the store's tool that reads the record (default build/bin/maillab-admin)")
    parser.add_argument("--cert", action="append",
                        help="the class server's certificate (PEM; default certs/server.pem); repeat for several")
    parser.add_argument("--rubric", default=rules.DEFAULT_RUBRIC)
    parser.add_argument("--out", help="where grades.csv, grades-files.csv, grades.html go (default: DIR)")
    parser.add_argument("--no-reports", action="store_true", help="do not write a report per capture")
    parser.add_argument("--file-seconds", type=float, default=FILE_SECONDS, metavar="S",
                        help=f"a file's time budget: reading it, then its report (default {FILE_SECONDS}); a file "
                             "that takes longer is cut off, with the reason in its row, and the rest graded")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.dir):
        print(f"usage: make grade DIR=folder-of-captures (no folder {printable(args.dir)})", file=sys.stderr)
        return 2
    try:
        run = Run(args)
    except (UsageError, ValueError, OSError) as e:
        print(f"grade: {printable(e)}", file=sys.stderr)
        return 2
    os.makedirs(run.out, exist_ok=True)
    print(f"grading {len(run.entries)} file(s) in {printable(run.folder)} ...", flush=True)
    work = tempfile.mkdtemp(prefix="maillab-grade-")
    cache = os.path.join(work, "reads")  # each file's tshark read, left by its facts for its report
    os.mkdir(cache, 0o700)
    try:
        run.publish()  # every file listed as not graded yet, every roster student as no submission
        try:
            run.read_all(work, None if args.no_reports else cache)
        except UsageError as e:  # the record tool failed half-way: what is graded stays written
            print(f"grade: {printable(e)}", file=sys.stderr)
            return 2
        if not args.no_reports:
            run.reports(cache)
        students = run.publish()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in run.entries:
        if r.kind != "capture":
            print(printable(f"  {r.shown}: {outcome(r)}"))
    print(f"wrote {printable(os.path.join(run.out, 'grades.csv'))}, grades-files.csv and grades.html")
    print(summary(run, students))
    return 0


if __name__ == "__main__":
    sys.exit(main())
