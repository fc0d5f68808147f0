"""The lab's Python tools, one package tree rooted at the repository: `captures` (this package),
`report` (built on it) and `tests` (built on both). Every module is run from the repository root as
`python3 -m captures.capture`, `python3 -m report.grade`, `python3 -m tests.run_tests` (the Makefile's
targets do), and imports the others by their full names (`from captures import facts`,
`from captures.labprocess import ServerProcess`, `from tests.e2e.harness import test`): no file adds
to sys.path (tests/e2e/test_python_package.py checks it).

At the centre, `facts` reads a capture (through `analyze`, the one tshark reader) into facts per TLS
session: what check, report and grade judge. Around it: `capture` and `scenarios` (make capture),
`check` and `rubric` (make check-capture, the rules grade shares), `labtoken` (make token), and
`labprocess` (start one of our servers and wait for its ready line: captures, the e2e harness, the
benchmarks and the classroom share it)."""
