"""The one set of rules: which steps of the lab a capture shows. check (the student's `make
check-capture`) and grade (the instructor's `make grade`) both call evaluate() on the same facts
(captures/facts.py); the only difference is the Grading record grade passes and check does not have:

- check (grading=None): every session that looks like maillab's (its greeting, its realm, its
  mailbox URIs; or TLS it cannot read) counts; the token and provenance steps say "checked by the
  instructor" (no instructor secret, no class server record).
- grade (a Grading): a step other than tls13/secrets counts only in a session that is on the class
  server's record for this student's account, matched by (client_random, server_random), whose server
  certificate (when readable) is the class server's. tls13/secrets count in any maillab session that
  is not on record for another account.

So "check says complete" means grade gives those points, provenance aside.

    steps = rubric.load()                                   # captures/rubric.csv, or a copy
    verdicts = rubric.evaluate(facts, steps)                # check
    verdicts = rubric.evaluate(facts, steps, Grading(...))  # grade
    verdicts["auth"].status in ("ok", "missing", "n/a", "instructor"); .reason; .streams"""

import csv
import dataclasses
import os
import urllib.parse

DEFAULT_RUBRIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rubric.csv")

# The steps the rules know, in the default rubric's order, with the optional comparison captures.
KNOWN_STEPS = ("tls13", "secrets", "greeting", "auth", "mail", "token", "get", "conditional", "provenance",
               "starttls_capture", "plaintext_capture", "pop3s", "pop3_stls")
# Steps that count in any maillab session (not only in the student's own recorded sessions).
UNGATED = ("tls13", "secrets")


@dataclasses.dataclass
class Step:
    name: str
    points: float
    description: str


@dataclasses.dataclass
class Verdict:
    status: str              # "ok", "missing", "n/a" (cannot be in a capture of this mode), "instructor" (check only)
    reason: str = ""         # why not, when not ok
    streams: list = dataclasses.field(default_factory=list)  # the TCP streams that earned it

    @property
    def ok(self):
        return self.status == "ok"


@dataclasses.dataclass
class Grading:
    """What grade knows and check does not."""
    account: str                   # the student's account, lower case ("" when unknown)
    token: str                     # the student's token ("" when there is no secret or no student id)
    own: dict                      # stream -> "" when it counts (own, on record, class certificate), else why not
    foreign: set = dataclasses.field(default_factory=set)  # streams on record for another account
    summary: str = ""              # the file's provenance, in words
    no_token_reason: str = ""      # why token is "" (no secret, no student id)


def load(path=None):
    """The rubric: a CSV with the columns step,points,description ("#" lines are comments)."""
    path = path or DEFAULT_RUBRIC
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step") and not r["step"].strip().startswith("#")]
    steps = []
    for r in rows:
        step = r["step"].strip()
        if step not in KNOWN_STEPS:
            raise ValueError(f"{path}: unknown step {step!r} (the rules know {', '.join(KNOWN_STEPS)})")
        steps.append(Step(step, float(r["points"]), (r.get("description") or step).strip()))
    return steps


def _client(s, verb):
    return [l for l in s.smtp if l["dir"] == "C" and l["text"].upper().startswith(verb)]


def _server(s, prefix):
    return [l for l in s.smtp if l["dir"] == "S" and l["text"].startswith(prefix)]


def _mail_sent(s):
    """MAIL FROM, RCPT TO and DATA in that order, and the 250 that queued the message."""
    wanted, seen = ["MAIL FROM", "RCPT TO", "DATA"], 0
    for line in s.smtp:
        if line["dir"] == "C" and seen < 3 and line["text"].upper().startswith(wanted[seen]):
            seen += 1
    return seen == 3 and any(l["text"].startswith("250") and "queued" in l["text"] for l in _server(s, "250"))


def _pop_answered(s, verb, clear=None):
    """A POP3 command `verb` answered +OK (the next server line); clear: only one sent in plaintext
    (True) or only one inside TLS (False)."""
    for i, line in enumerate(s.pop):
        if line["dir"] == "C" and line["text"].upper().split(" ", 1)[0] == verb and \
                (clear is None or line["clear"] == clear):
            reply = next((l for l in s.pop[i + 1:] if l["dir"] == "S"), None)
            if reply and reply["text"].startswith("+OK"):
                return True
    return False


def _pop_retrieved(s):
    """RETR answered +OK inside TLS (RFC 1939 7), after a login inside TLS."""
    return _pop_answered(s, "RETR", clear=False) and \
        (_pop_answered(s, "PASS", clear=False) or _pop_answered(s, "AUTH", clear=False))


def _pop_upgraded(s):
    """STLS sent in plaintext and answered +OK (RFC 2595 4), no credentials before it."""
    return _pop_answered(s, "STLS", clear=True) and \
        not any(l["clear"] and l["dir"] == "C" and l["text"].upper().split(" ", 1)[0] in ("USER", "PASS", "AUTH", "APOP")
                for l in s.pop)


def _own_mailbox(uri, account):
    path = urllib.parse.unquote(uri.split("?", 1)[0]).lower()
    if path == "/":
        return True  # the HTML inbox of whoever logged in
    return bool(account) and (path == f"/mailboxes/{account}" or path.startswith(f"/mailboxes/{account}/"))


def _shows(step, s, account, token):
    """Does session s show the step? (Which sessions may count is decided by the caller.)"""
    if step == "tls13":
        return s.version == "TLS 1.3"
    if step == "secrets":
        return s.tls and s.decrypted
    if step == "greeting":
        return s.greeting and bool(_client(s, "EHLO ") or _client(s, "HELO ") or
                                   any(l["text"].upper() in ("EHLO", "HELO") for l in s.smtp if l["dir"] == "C"))
    if step == "auth":
        return bool(_server(s, "235"))
    if step == "mail":
        return _mail_sent(s)
    if step == "token":
        return bool(token) and any(token.lower() in subject.lower() for subject in s.subjects)
    if step == "get":
        return any(x["method"] == "GET" and x["status"] == "200" and
                   _own_mailbox(x["uri"], account or x["account"]) for x in s.http)
    if step == "conditional":
        return any(x["conditional"] and x["status"] == "304" for x in s.http)
    if step == "pop3s":
        return s.tls and not any(l["clear"] for l in s.pop) and _pop_retrieved(s)
    if step == "pop3_stls":
        return s.tls and _pop_upgraded(s) and _pop_retrieved(s)
    if step == "starttls_capture":
        return s.tls and s.greeting and bool(_client(s, "STARTTLS"))
    if step == "plaintext_capture":
        return not s.tls and s.greeting and bool(_server(s, "235")) and (not account or account in s.accounts)
    return False


MISSING = {
    "tls13": "no TLS 1.3 handshake (ServerHello supported_versions)",
    "secrets": "no decryption secrets that decrypt its TLS sessions",
    "greeting": "no 220 maillab greeting answered by HELO or EHLO",
    "auth": "no AUTH answered 235",
    "mail": "no MAIL FROM, RCPT TO and DATA answered 250 (queued)",
    "get": "no GET of {who}'s own mailbox answered 200",
    "conditional": "no conditional GET (If-None-Match or If-Modified-Since) answered 304 (ask for your mailbox "
                   "again with --header 'If-None-Match: ETAG', the ETag of its first answer)",
    "pop3s": "no POP3 RETR answered +OK over implicit TLS (POP3S; make capture retrieves by POP3 in its "
             "implicit capture)",
    "pop3_stls": "no POP3 session upgraded by STLS whose RETR was answered +OK inside TLS",
    "starttls_capture": "no STARTTLS session (a server started with --tls starttls)",
    "plaintext_capture": "no plaintext session with AUTH answered 235 (--tls off --allow-plaintext-auth)",
}


def evaluate(facts, rubric, grading=None):
    """{step name: Verdict} for every step of the rubric, from one file's facts."""
    out = {}
    if facts.not_capture:
        for step in rubric:
            out[step.name] = Verdict("missing", "not a capture: " + facts.not_capture)
        return out
    sessions = facts.sessions
    account = grading.account if grading else ""

    def counts(s, step):
        if grading is None:
            return s.maillab != "no"
        if step in UNGATED:
            return grading.own.get(s.stream) == "" or (s.maillab == "yes" and s.stream not in grading.foreign)
        if step == "plaintext_capture":  # no TLS session to look up: the account and the greeting decide
            return not s.tls and s.maillab == "yes"
        return grading.own.get(s.stream) == ""

    candidates = [s for s in sessions if s.maillab != "no" or (grading and s.stream in grading.own)]
    undecrypted = [s for s in candidates if s.tls and not s.decrypted]
    for step in rubric:
        n = step.name
        if n in UNGATED and facts.mode == "off":
            out[n] = Verdict("n/a", "a plaintext capture (for comparison): no TLS in it")
            continue
        comparison = {"starttls_capture": ("starttls", "STARTTLS"), "plaintext_capture": ("off", "plaintext")}.get(n)
        if comparison and facts.mode != comparison[0]:
            out[n] = Verdict("n/a", f"no {comparison[1]} session in this capture (a step of the {comparison[1]} "
                                    f"comparison capture; this one's mode is {facts.mode})")
            continue
        if n == "provenance":
            if grading is None:
                out[n] = Verdict("instructor", "checked by the instructor against the class server's record")
            else:
                earned = [s.stream for s in sessions if grading.own.get(s.stream) == ""]
                out[n] = Verdict("ok" if earned else "missing", "" if earned else grading.summary, earned)
            continue
        if n == "token" and (grading is None or not grading.token):
            subjects = sorted({x for s in candidates for x in s.subjects})
            seen = ("; subjects seen: " + ", ".join(repr(x[:40]) for x in subjects[:3])) if subjects else \
                "; no Subject seen"
            if grading is None:
                out[n] = Verdict("instructor", "checked by the instructor (the token needs the instructor's secret)" + seen)
            else:
                out[n] = Verdict("missing", (grading.no_token_reason or "no token to look for") + seen)
            continue
        token = grading.token if grading else ""
        showing = [s for s in candidates if _shows(n, s, account, token)]
        earned = [s.stream for s in showing if counts(s, n)]
        if earned:
            out[n] = Verdict("ok", "", earned)
            continue
        if n == "token":
            subjects = sorted({x for s in candidates for x in s.subjects})
            reason = f"the token {token} is not in the Subject of any message" + \
                (f" (subjects seen: {', '.join(repr(x[:40]) for x in subjects[:3])})" if subjects else " (no Subject seen)")
        else:
            reason = MISSING[n].format(who=account or "the student")
        if showing and grading is not None:
            why = grading.own.get(showing[0].stream) or "not the student's own session"
            reason = f"only in sessions that do not count ({why})"
        elif n == "secrets" and not facts.secrets:
            reason = "no decryption secrets in the capture (embed them, or hand in NAME.keys.log beside it)"
        elif not showing and undecrypted and n != "tls13" and all(not s.decrypted for s in candidates if s.tls):
            reason += " (its TLS sessions cannot be read: no keys in the capture)"
        if not candidates and n not in UNGATED:
            reason = "no maillab session in it"
        out[n] = Verdict("missing", reason)
    return out


def complete(verdicts):
    """What check calls complete: every step ok, not applicable, or left to the instructor."""
    return all(v.status in ("ok", "n/a", "instructor") for v in verdicts.values())
