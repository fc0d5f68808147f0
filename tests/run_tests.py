#!/usr/bin/env python3
"""Runs every test: the Catch2 unit tests (counted per test case from their JUnit report) and the
end-to-end tests in tests/e2e. Ends with the line `N passed, N failed` and a non-zero exit on failure.

`make test` runs it as `python3 -m tests.run_tests` from the repository root, where the lab's Python
packages are (captures, report, tests: see captures/__init__.py). Run as a file (`python3
tests/run_tests.py`, from anywhere) it becomes that same command first."""

import argparse
import glob
import importlib
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

if __name__ == "__main__" and not __package__:
    # As a file, Python looks for imports in tests/ only, where `tests.e2e` is not: the repository
    # root is the one place the packages are found from, so restart there as the module.
    os.chdir(ROOT)
    os.execv(sys.executable, [sys.executable, "-m", "tests.run_tests"] + sys.argv[1:])

from tests.e2e import harness  # noqa: E402

# Every tests/e2e/test_*.py registers its tests when imported: a new module cannot be forgotten.
# (Sorted, so the order is the same on every machine.)
# The short names of the days of sys.path insertions, each with its full name now.
FULL_NAMES = {"harness": "tests.e2e.harness", "labprocess": "captures.labprocess", "bench": "tests.bench.bench",
              "attack": "tests.bench.attack", "classroom": "tests.classroom", "pg_cluster": "tests.pg_cluster"}
for module in sorted(glob.glob(os.path.join(HERE, "e2e", "test_*.py"))):
    name = "tests.e2e." + os.path.splitext(os.path.basename(module))[0]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        short = e.name or ""
        if short in FULL_NAMES or short.startswith("test_"):
            sys.exit(f"{name}: `{short}` is not found by its short name: import it by its full name from the "
                     f"repository root, {FULL_NAMES.get(short, 'tests.e2e.' + short)} (captures/__init__.py)")
        raise


def run_unit(build, env=None):
    report = tempfile.mktemp(suffix=".xml")
    exe = os.path.join(build, "bin", "unit-tests")
    proc = subprocess.run([exe, "-r", "junit", "-o", report], env=env)
    passed = failed = 0
    try:
        root = ET.parse(report).getroot()
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                print(f"FAIL unit: {case.get('name')}")
                for node in list(case):
                    print(node.text or "")
            else:
                passed += 1
        os.unlink(report)
    except (ET.ParseError, FileNotFoundError):
        print(f"FAIL unit: no report (exit {proc.returncode})")
        failed += 1
    if proc.returncode != 0 and failed == 0:
        print(f"FAIL unit: exit code {proc.returncode}")
        failed += 1
    print(f"unit tests: {passed} passed, {failed} failed", flush=True)
    return passed, failed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", default="build")
    parser.add_argument("--only", nargs="*", help="run only e2e tests whose names contain these")
    parser.add_argument("--no-unit", action="store_true")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help="the backend every test runs on: postgresql starts a throwaway cluster "
                             "(tests/pg_cluster.py) and removes it at the end")
    args = parser.parse_args()
    os.chdir(ROOT)

    cluster = None
    env = None
    if args.store == "postgresql":
        from tests import pg_cluster
        try:
            cluster = pg_cluster.Cluster()
        except pg_cluster.Unavailable as e:
            print(f"FAIL --store postgresql: {e}")
            return 1
        print(f"PostgreSQL cluster in {cluster.dir} on 127.0.0.1:{cluster.port}", flush=True)
        env = dict(os.environ, MAILLAB_TEST_PG_URL=cluster.new_database("unit"))
    try:
        passed = failed = 0
        if not args.no_unit:
            p, f = run_unit(args.build, env)
            passed += p
            failed += f
        lab = harness.Lab(args.build)
        lab.postgres = cluster
        try:
            p, f, s = harness.run(lab, args.only)
        finally:
            lab.cleanup()
    finally:
        if cluster:
            cluster.stop()
    print(f"end-to-end tests: {p} passed, {f} failed, {s} skipped")
    passed += p
    failed += f
    print(f"{passed} passed, {failed} failed" + (f", {s} skipped" if s else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
