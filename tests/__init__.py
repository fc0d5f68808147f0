"""The tests and the tools around them, as a package run from the repository root (see
captures/__init__.py): `python3 -m tests.run_tests` (make test), `tests.e2e` (the end-to-end tests and
their harness), `tests.bench` (the benchmarks), `tests.classroom` (make classroom), `tests.pg_cluster`."""
