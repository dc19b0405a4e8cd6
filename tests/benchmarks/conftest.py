"""Benchmarks run against PostgreSQL (the production database); they print name=value lines."""

import os

import pytest

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))


@pytest.fixture(autouse=True)
def _postgres_only():
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        pytest.skip("benchmarks measure PostgreSQL: run them with `make bench` (DATABASE_URL=postgresql://...)")


def report(name: str, value) -> None:
    print(f"{name}={value}", flush=True)
