"""Fixtures shared by the core tests."""

from tests.core.test_jobs_money import make_core  # noqa: F401  (a fixture: a Core against the offline server)
