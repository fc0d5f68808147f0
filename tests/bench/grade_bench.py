#!/usr/bin/python3
"""make bench-grade: how long `make grade` takes on a class of 60 submissions (issue 17: under a
minute on this 2-core machine). The submissions are real: the virtual classroom's files
(tests/classroom.py, run first when BUILD/classroom/ has none; it needs root), each handed in again
under 60 student names, so the folder holds honest files, copies, a capture of another server,
unrelated traffic, a cut-short file and a text file in the class's proportions. Graded against the
classroom's own class server record, with a report per capture and without (--no-reports).
Measured here, never asserted in a test. --doc writes the figures into docs/benchmarks.md."""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def grade(build, folder, lab, secret_file, roster, reports):
    cmd = ["/usr/bin/python3", "-m", "report.grade", folder, "--admin", os.path.join(build, "bin", "maillab-admin"),
           "--db", os.path.join(lab, "users", "maillab.db"), "--cert", os.path.join(lab, "certs", "server.pem"),
           "--secret-file", secret_file, "--roster", roster]
    if not reports:
        cmd.append("--no-reports")
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"grade failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build")
    parser.add_argument("--students", type=int, default=60)
    parser.add_argument("--doc", help="write the section into this Markdown file (docs/benchmarks.md)")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    classroom = os.path.join(build, "classroom")
    submissions = os.path.join(classroom, "submissions")
    if not os.path.isdir(submissions):
        if os.geteuid() != 0:
            sys.exit("bench-grade needs the virtual classroom's files: run `sudo make classroom` first")
        subprocess.run(["/usr/bin/python3", "-m", "tests.classroom", "--build", build,
                        "--out", classroom], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    lab = os.path.join(classroom, "lab")
    secret_file = os.path.join(lab, "users", "instructor.secret")
    handed = sorted(f for f in os.listdir(submissions)
                    if not f.startswith(("grades", ".")) and os.path.isfile(os.path.join(submissions, f)))
    work = tempfile.mkdtemp(prefix="maillab-bench-grade-")
    try:
        folder = os.path.join(work, "submissions")
        os.makedirs(folder)
        roster = os.path.join(work, "roster.csv")
        with open(roster, "w") as f:
            f.write("student,account\n")
            for i in range(args.students):
                source = handed[i % len(handed)]
                stem, ext = os.path.splitext(source)
                student = f"s{i:03d}"
                shutil.copy(os.path.join(submissions, source), os.path.join(folder, f"{student}-{stem}{ext}"))
                f.write(f"{student},{student}@447.edu\n")
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        with_reports, out = grade(build, folder, lab, secret_file, roster, reports=True)
        rows = re.search(r"(\d+) files?, (\d+) students?", out)
        shutil.rmtree(folder + "-out", ignore_errors=True)
        for f in os.listdir(folder):
            if f.startswith("grades"):
                path = os.path.join(folder, f)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        without_reports, _ = grade(build, folder, lab, secret_file, roster, reports=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    lines = [
        "<!-- grade:begin -->",
        "## Grading a class (make bench-grade)",
        "",
        f"`make grade` on {args.students} submissions ({size / 1e6:.1f} MB: the virtual classroom's files, each "
        f"handed in again under {args.students} names: honest captures, copies, another server's, unrelated "
        f"traffic, a cut-short file, a text file), graded against the class server's record on {cores} cores:",
        "",
        "| | seconds | per file |",
        "| --- | --- | --- |",
        f"| with a report per capture | {with_reports:.1f} | {with_reports / args.students:.2f} |",
        f"| `--no-reports` | {without_reports:.1f} | {without_reports / args.students:.2f} |",
        "",
        f"Target: under 60 s. {'Met.' if with_reports < 60 else 'Not met with reports.'}"
        + (f" ({rows.group(0)} in the grader's summary.)" if rows else ""),
        "<!-- grade:end -->",
    ]
    section = "\n".join(lines)
    print(section)
    if args.doc:
        with open(args.doc) as f:
            text = f.read()
        if "<!-- grade:begin -->" in text:
            text = re.sub(r"<!-- grade:begin -->.*?<!-- grade:end -->", lambda _: section, text, flags=re.S)
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        with open(args.doc, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
