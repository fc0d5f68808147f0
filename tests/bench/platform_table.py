#!/usr/bin/python3
"""Turns the per-release results of `make bench-platforms` (RESULTS/<release>-bench.json, one run)
into the table of docs/benchmarks.md, between its `platforms` markers, with each rate as a ratio of
Debian 12's (the release the lab was first built on). Prints the table; exits 1 when a ratio on
another release is below 0.9, the issue's bar.

  python3 -m tests.bench.platform_table RESULTS_DIR release [release ...]"""

import datetime
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- platforms:begin -->", "<!-- platforms:end -->"
RATES = [("handshake_per_s", "handshakes/s"), ("session_per_s", "SMTP sessions/s"), ("smtplib_per_s", "smtplib sessions/s")]


def main():
    results_dir, releases = sys.argv[1], sys.argv[2:]
    rows = []
    for release in releases:
        path = os.path.join(results_dir, f"{release}-bench.json")
        if os.path.exists(path):
            rows.append((release, json.load(open(path))))
    if not rows:
        print("no results: run `make bench-platforms` first")
        return 2
    base = dict(rows).get("bookworm", rows[0][1])
    lines = [f"Measured {datetime.date.today().isoformat()} in one `make bench-platforms` run, each release in "
             "a fresh debootstrap chroot on the same 2-core machine, one after the other (8 s per figure, "
             "c=20; ratios against Debian 12).", "",
             "| release | Poco | OpenSSL | Python | " + " | ".join(label for _, label in RATES) +
             " | smtplib p99 |", "|---|---|---|---|" + "---|" * len(RATES) + "---|"]
    worst = 10.0
    for release, r in rows:
        cells = []
        for key, _ in RATES:
            ratio = r[key] / base[key] if base[key] else 0
            if r is not base:
                worst = min(worst, ratio)
            cells.append(f"{r[key]:,.0f} ({ratio:.2f}x)")
        lines.append(f"| {r['release']} | {r['poco']} | {r['openssl']} | {r['python']} | " + " | ".join(cells) +
                     f" | {r['smtplib_p99_ms']:.0f} ms |")
    table = "\n".join(lines)
    print(table)
    text = open(DOC).read() if os.path.exists(DOC) else ""
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text += f"\n## The same speed on every release\n\n{block}\n"
    # bench.py keeps everything from that heading on when it rewrites the file
    with open(DOC, "w") as f:
        f.write(text)
    print(f"\nwrote the table into {os.path.relpath(DOC, ROOT)}; lowest ratio {worst:.2f}x (target 0.9x)")
    return 0 if worst >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
