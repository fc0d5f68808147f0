"""The end-to-end tests: each test_*.py registers its tests with `@test` from tests.e2e.harness, and
tests/run_tests.py imports every one of them."""
