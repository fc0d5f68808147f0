"""The benchmarks, each run from the repository root as `python3 -m tests.bench.NAME` (the Makefile's
bench targets do); servers are started with captures.labprocess, like everywhere else. The peers they
start as programs (aiosmtpd_peer.py) import nothing of ours."""
