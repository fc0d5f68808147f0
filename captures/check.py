#!/usr/bin/python3
"""make check-capture FILE=...: checks a capture (ours or a student's) for the lab's sequence: a TLS 1.3
handshake, then EHLO, AUTH, MAIL, RCPT, DATA, QUIT on SMTP, then the GETs on HTTP. Says what is missing.
Exit status: 0 all present, 1 something missing, 2 encrypted and no keys to read it (not an error of
the capture: say so in the report)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyze import Capture  # noqa: E402

SMTP_SEQUENCE = ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"]


def check(path, out=print):
    cap = Capture(path)
    out(f"{path}: mode={cap.mode} smtp port={cap.smtp_port} http port={cap.http_port} "
        f"secrets={'yes' if cap.secrets else 'no'}")
    missing = []
    if cap.truncated:
        out("  warning: the file is cut short in the middle of a packet: checked as far as it reads")

    def item(ok, text):
        out(f"  [{'ok' if ok else '--'}] {text}")
        if not ok:
            missing.append(text)

    if cap.mode == "off":
        item(not cap.has_tls, "no TLS (a plaintext capture, for comparison)")
    else:
        hs = cap.handshakes()
        tls13 = [h for h in hs if h.get("chosen_version") == "TLS 1.3"]
        item(bool(tls13), "TLS 1.3 handshake (ServerHello supported_versions = TLS 1.3)")
        if cap.has_tls and not cap.secrets:
            smtp = cap.smtp_lines()
            if not [line for line in smtp if line["dir"] == "C"]:
                out("  undecryptable: the TLS records are there, but the capture holds no key log, so the SMTP "
                    "and HTTP inside cannot be read. Capture with --keylog/SSLKEYLOGFILE and `make capture`.")
                return 2
    smtp = cap.smtp_lines()
    # A capture of some other program (our comment only says which ports were captured): no maillab
    # greeting and no request for a maillab mailbox. Without keys there is no telling.
    ours = any(line["dir"] == "S" and line["text"].startswith("220") and "maillab" in line["text"] for line in smtp) or \
        any(m["uri"].startswith("/mailboxes") for m in cap.http_messages())
    if not ours and not (cap.has_tls and not cap.secrets):
        out("  not a maillab session: no maillab greeting (220 ... maillab) and no request for /mailboxes/")
        return 4
    # HELO counts as the greeting step as much as EHLO (the README teaches `helo`).
    commands = [(line["frame"], line["text"].split(" ")[0].upper().replace("HELO", "EHLO")) for line in smtp
                if line["dir"] == "C"]
    position = 0
    last_frame = 0
    for wanted in SMTP_SEQUENCE:
        found = next(((f, c) for f, c in commands[position:] if c == wanted), None)
        if found:
            position = commands.index(found) + 1
            last_frame = found[0]
        item(found is not None, f"SMTP {'HELO or EHLO' if wanted == 'EHLO' else wanted}" + ("" if found else f" (not seen after the {SMTP_SEQUENCE[SMTP_SEQUENCE.index(wanted) - 1] if wanted != 'EHLO' else 'handshake'})"))
    gets = [m for m in cap.http_messages() if m["method"] == "GET" and m["frame"] > last_frame]
    item(bool(gets), f"HTTP GET after the mail was sent ({len(gets)} seen)")
    if missing:
        out(f"missing: {', '.join(missing)}")
        return 1
    out("all of the lab's sequence is there")
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    # Exit status: 0 all there, 1 steps missing, 2 undecryptable (no keys), 3 not a capture file,
    # 4 a capture of something else (no maillab session in it). --csv: the verdicts as CSV at the end.
    csv_out = "--csv" in sys.argv
    if csv_out:
        sys.argv.remove("--csv")
    words = {0: "complete", 1: "steps missing", 2: "undecryptable", 3: "not a capture", 4: "not maillab"}
    worst = 0
    results = []
    for path in sys.argv[1:]:
        try:
            code = check(path)
        except (RuntimeError, OSError) as e:
            print(f"{path}: not a capture file Wireshark can read ({str(e).splitlines()[0][:160]})")
            code = 3
        results.append((path, code))
        worst = max(worst, code)
    if len(results) > 1:
        print("\nsummary:")
        for path, code in results:
            print(f"  {words[code]:<14} {path}")
    if csv_out:
        print("file,verdict,exit")
        for path, code in results:
            print(f"{path},{words[code]},{code}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
