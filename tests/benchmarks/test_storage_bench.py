"""A 50 MB file into PostgreSQL and out again (the database backend), next to the same file
written to and read from a local folder (the folder backend) in the same run.

Prints throughput of each, their ratio, and the peak of Python allocations while the file
moves (the file is never whole in memory: a few chunks at most)."""

from __future__ import annotations

import time
import tracemalloc

from portal import storage
from portal.extensions import db
from tests.benchmarks.conftest import report
from tests.test_storage import Generated, digest_of

SIZE = 50 * 1024 * 1024


def _round_trip(name: str) -> tuple[float, float, int]:
    tracemalloc.start()
    try:
        started = time.perf_counter()
        storage.save("exports", name, Generated(SIZE))
        db.session.commit()
        written = time.perf_counter() - started
        started = time.perf_counter()
        _digest, total = digest_of(storage.open_stream("exports", name))
        read = time.perf_counter() - started
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == SIZE
    return written, read, peak


def test_fifty_megabytes_through_the_database_and_a_folder(app_ctx):
    megabytes = SIZE / 1024 / 1024
    figures = {}
    for backend in ("folder", "database"):
        app_ctx.config["STORAGE_BACKEND"] = backend
        try:
            figures[backend] = _round_trip(f"bench-{backend}.bin")
        finally:
            app_ctx.config["STORAGE_BACKEND"] = "database"
    for backend, (written, read, peak) in figures.items():
        report(f"storage_{backend}_write_mb_s", round(megabytes / written, 1))
        report(f"storage_{backend}_read_mb_s", round(megabytes / read, 1))
        report(f"storage_{backend}_peak_traced_mb", round(peak / 1024 / 1024, 2))
    report("storage_database_vs_folder_write_ratio", round(figures["folder"][0] / figures["database"][0], 3))
    report("storage_database_vs_folder_read_ratio", round(figures["folder"][1] / figures["database"][1], 3))
