"""The docs tell the truth about the tree: every file a README or docs/*.md names exists, and `make
help` lists every target a user types. Reads files and runs `make help`; no servers."""

import fnmatch
import glob
import os
import re
import subprocess

from tests.e2e.harness import test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Named in the docs, made at run time, so absent from a fresh checkout: each with why.
MADE_AT_RUN_TIME = {
    "build/*": "the build's output (make all, make classroom, make bench QUICK=1)",
    "users/maillab.db*": "the store, created by the first server that starts (with its -wal/-shm/-generations files)",
    "users/instructor.secret": "the token secret, made by the first make token",
    "certs/*.pem": "the lab CA and server certificate, made by make certs or the first server start",
    "captures/*.pcapng": "captures, made by make capture and make capture-start",
    "captures/*.keys.log": "TLS key logs written beside a capture",
    "report/*/": "make report's folder for one capture or session, report/<name>/",
    "report/*/*": "make report's output in it (report.html, report.md)",
    "report.html": "make report's page, in report/<name>/",
    "roster.csv": "the instructor's own roster, named as an example argument",
    "submissions/*": "the instructor's folder of students' captures, where make grade writes its results",
    "grades*.csv": "written by make grade into the folder it grades",
    "grades.html": "written by make grade into the folder it grades",
    "certs/scenarios/*": "certificates made by make capture SCENARIO=... for its TLS failures",
    "scenario-*.scenario.json": "records written beside each scenario capture",
}

# .PHONY targets nobody types, each with why.
INTERNAL_TARGETS = {
    "bench-platform": "run inside each Debian chroot by make bench-platforms",
}

TICKED = re.compile(r"`([^`\s]+)`")
LINKED = re.compile(r"\]\(([^)\s#]+)")
FILE_NAME = re.compile(r"^[\w.-]+\.(md|py|cpp|h|properties|csv|sh|txt|json|html)$")


def tracked_names():
    """Every file's and folder's base name in the tree (the build and platform caches left out)."""
    names = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "build", ".platforms", "__pycache__")]
        names.update(files)
        names.update(d + "/" for d in dirs)
    return names


def doc_files():
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    docs += sorted(glob.glob(os.path.join(ROOT, "*", "README.md")))
    return [d for d in docs if os.path.isfile(d)]


def named_paths(text):
    """Backticked or linked references that look like files or folders of this tree: a path whose
    first part is one of its top folders, or a bare file name (`session.cpp`, in a table row under
    its folder). HTTP paths, MIME types and URLs are not files."""
    tops = {e for e in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, e)) and not e.startswith(".")}
    for match in list(TICKED.finditer(text)) + list(LINKED.finditer(text)):
        ref = match.group(1)
        if "://" in ref or ref.startswith("/") or ref.startswith("-"):
            continue
        if "/" in ref:
            if ref.split("/", 1)[0] in tops | {"docs"}:
                yield ref
            elif FILE_NAME.match(ref.rsplit("/", 1)[-1]) and not ref.split("/", 1)[0].isupper():
                yield ref  # relative to the doc's own folder, e.g. a link to student.md
        elif FILE_NAME.match(ref):
            yield ref


@test
def every_file_the_docs_name_exists(lab):
    names = tracked_names()
    missing = []
    for doc in doc_files():
        here = os.path.dirname(doc)
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        for ref in sorted(set(named_paths(text))):
            if any(fnmatch.fnmatch(ref, pattern) for pattern in MADE_AT_RUN_TIME):
                continue
            if "/" not in ref:
                found = ref in names
            else:
                found = any(os.path.exists(os.path.join(base, ref.rstrip("/"))) for base in (ROOT, here))
            if not found:
                missing.append(f"{os.path.relpath(doc, ROOT)}: `{ref}`")
    assert not missing, "the docs name files that do not exist:\n  " + "\n  ".join(missing)


def phony_targets():
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    targets = set()
    for line in re.findall(r"^\.PHONY:(.*)$", text, re.M):
        targets.update(line.split())
    return targets


@test
def make_help_lists_every_target_a_user_types(lab):
    out = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    words = set(re.findall(r"[\w-]+", out.stdout))
    targets = phony_targets()
    assert {"all", "test", "senderserver", "help"} <= targets, targets
    missing = sorted(t for t in targets - set(INTERNAL_TARGETS) - {"help"} if t not in words)
    assert not missing, f"make help does not list: {', '.join(missing)}\n{out.stdout}"
    for target in INTERNAL_TARGETS:
        assert target in targets, f"{target} is no longer a target: drop it from INTERNAL_TARGETS"


@test
def every_server_target_takes_its_ports_the_same_way(lab):
    """PORT= and RPORT= from the command line or the environment, for the lab's and the class's
    servers alike (make -n shows the command each would run)."""
    def command(target, env_extra=None, args=()):
        env = {k: v for k, v in os.environ.items() if k not in ("PORT", "RPORT")}
        env.update(env_extra or {})
        # -o: the programs are taken as they are (nothing is built to print a command line).
        keep = [arg for name in ("bin/senderserver", "bin/retrieverserver", "bin/maillab-certs", ".deps-ok")
                for arg in ("-o", "build/" + name)]
        out = subprocess.run(["make", "-s", "-n", "--no-print-directory", *keep, target, "HOSTNAME=lab.example.edu",
                              *args],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if "--port=" in line][-1]

    for target, variable, default in (("senderserver", "PORT", "9000"), ("retrieverserver", "RPORT", "9100"),
                                      ("class-senderserver", "PORT", "465"),
                                      ("class-retrieverserver", "RPORT", "443")):
        assert f"--port={default}" in command(target), (target, command(target))
        assert "--port=2001" in command(target, args=[f"{variable}=2001"]), target
        assert "--port=2002" in command(target, env_extra={variable: "2002"}), target
    # PORT alone moves the lab's retriever too; the class retriever keeps its own.
    assert "--port=2003" in command("retrieverserver", args=["PORT=2003"])
    assert "--port=443" in command("class-retrieverserver", args=["PORT=2003"])


@test
def common_keeps_its_two_floors(lab):
    """common/net is the generic network floor: nothing in it may include the lab's own floor
    (common/lab), the protocol folders or the tools; sender/ and retriever/ never include each other."""
    include = re.compile(r'#include "([^"]+)"')
    upward = []
    sources = []
    for top in ("common", "sender", "retriever"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            sources += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f.endswith((".h", ".cpp"))]
    for path in sources:
        folder = os.path.dirname(path)
        rules = {"common/net": ("common/lab", "common/tools", "sender", "retriever"),
                 "common/lab": ("common/tools", "sender", "retriever"),
                 "sender": ("retriever",), "retriever": ("sender",)}.get(folder, ())
        with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                m = include.search(line)
                if not m:
                    continue
                target = os.path.normpath(os.path.join(folder, m.group(1)))
                if any(target == r or target.startswith(r + "/") for r in rules):
                    upward.append(f"{path}:{number} includes {target}")
    assert os.path.isdir(os.path.join(ROOT, "common/net")) and os.path.isdir(os.path.join(ROOT, "common/lab")), \
        "common/ should hold its two floors, net/ and lab/"
    assert not upward, "an include points up or sideways:\n" + "\n".join(upward)
