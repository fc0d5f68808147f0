"""make check-capture FILE=...: is the lab's sequence in a capture? The same steps, the same rules and
the same reasons as the instructor's grading (captures/rubric.py on captures/facts.py): what this
says is complete earns its points when graded, provided the capture was made against the class
server with your own account (the provenance, which only the instructor can check, with the token).

  python3 -m captures.check [--rubric FILE] [--csv | --json] FILE...

Exit status (the worst file's): 0 complete, 1 steps missing, 2 undecryptable (no keys),
3 not a capture file, 4 not a maillab session."""

import argparse
import json
import sys

from . import facts as capture_facts
from . import rubric as rules

WORDS = {0: "complete", 1: "steps missing", 2: "undecryptable", 3: "not a capture", 4: "not maillab"}
MARKS = {"ok": "[ok]", "missing": "[--]", "n/a": "[n/a]", "instructor": "[..]"}


def judge(f, steps):
    """(exit code, verdicts or {}) for one file's facts."""
    if f.not_capture:
        return 3, {}
    verdicts = rules.evaluate(f, steps)
    candidates = [s for s in f.sessions if s.maillab != "no"]
    if not candidates:
        return 4, verdicts
    if rules.complete(verdicts):
        return 0, verdicts
    tls = [s for s in candidates if s.tls]
    if tls and not any(s.decrypted for s in tls) and not any(s.maillab == "yes" for s in candidates):
        return 2, verdicts
    return 1, verdicts


def check(path, steps, out=print, work=None):
    f = capture_facts.read(path, work)
    shown = capture_facts.printable(path)
    code, verdicts = judge(f, steps)
    if code == 3:
        out(f"{shown}: not a capture file Wireshark can read ({f.not_capture})")
        return code, f, verdicts
    out(f"{shown}: mode={capture_facts.printable(f.mode)} smtp port={f.smtp_port} http port={f.http_port} "
        f"secrets={'yes' if f.secrets else 'no'} sessions={len(f.sessions)}")
    for note in f.notes:
        out(f"  note: {capture_facts.printable(note)}")
    if f.truncated:
        out("  warning: the file is cut short in the middle of a packet: checked as far as it reads")
    if code == 4:
        out("  not a maillab session: no maillab greeting (220 ... maillab), no maillab realm and no request for "
            "/mailboxes/ in it")
        return code, f, verdicts
    for step in steps:
        v = verdicts[step.name]
        where = f"  (stream{'s' if len(v.streams) > 1 else ''} {', '.join(map(str, v.streams))})" if v.streams else ""
        generic = rules.MISSING.get(step.name, "").format(who="the student")
        reason = v.reason if v.reason and v.reason != generic else ""
        out(f"  {MARKS[v.status]} {step.description}" + (f": {capture_facts.printable(reason)}" if reason else "")
            + where)
    if code == 2:
        out("  undecryptable: the TLS records are there, but the capture holds no key log, so the SMTP and HTTP "
            "inside cannot be read. Capture with --keylog/SSLKEYLOGFILE (make capture-start does).")
    missing = [s.description for s in steps if verdicts[s.name].status == "missing"]
    if missing:
        out(f"missing: {', '.join(missing)}")
    else:
        out("all of the lab's sequence is there (the token and the provenance are checked by the instructor)")
    return code, f, verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m captures.check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--rubric", help="the rubric CSV (default: captures/rubric.csv)")
    parser.add_argument("--csv", action="store_true", help="the verdicts as CSV at the end")
    parser.add_argument("--json", action="store_true", help="only JSON: each file's exit code and step verdicts")
    args = parser.parse_args(argv)
    if not args.files:
        parser.print_usage()
        return 2
    try:
        steps = rules.load(args.rubric)
    except (OSError, ValueError) as e:
        print(f"rubric: {e}", file=sys.stderr)
        return 2
    import shutil
    import tempfile
    work = tempfile.mkdtemp(prefix="maillab-check-")
    results = []
    try:
        for path in args.files:
            code, f, verdicts = check(path, steps, out=(lambda line: None) if args.json else print, work=work)
            results.append((path, code, f, verdicts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps([{"file": path, "exit": code, "verdict": WORDS[code], "not_capture": f.not_capture,
                           "truncated": f.truncated,
                           "steps": {n: {"status": v.status, "reason": v.reason, "streams": v.streams}
                                     for n, v in verdicts.items()}}
                          for path, code, f, verdicts in results], indent=1))
    else:
        if len(results) > 1:
            print("\nsummary:")
            for path, code, _, _ in results:
                print(f"  {WORDS[code]:<14} {capture_facts.printable(path)}")
        if args.csv:
            import csv
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["file", "verdict", "exit"])
            for path, code, _, _ in results:
                writer.writerow([capture_facts.csv_cell(capture_facts.printable(path)), WORDS[code], code])
    return max(code for _, code, _, _ in results)


if __name__ == "__main__":
    sys.exit(main())
