"""Stored files: in the database by default (chunks every host reads), in a folder as an option."""

from __future__ import annotations

import hashlib
import io
import tracemalloc
from collections.abc import Iterator

import pytest

from portal import storage
from portal.config import load_config


class Generated:
    """A stream of `size` bytes made up as it is read: the test holds none of it."""

    def __init__(self, size: int, seed: bytes = b"x") -> None:
        self.left, self.seed, self.digest = size, seed, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        block = hashlib.sha256(self.seed + self.left.to_bytes(8, "big")).digest()
        chunk = (block * (size // len(block) + 1))[:size]
        self.left -= size
        self.digest.update(chunk)
        return chunk


def digest_of(chunks: Iterator[bytes]) -> tuple[str, int]:
    digest, total = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        total += len(chunk)
    return digest.hexdigest(), total


@pytest.fixture(params=["database", "folder"])
def backend(request, app_ctx):
    app_ctx.config["STORAGE_BACKEND"] = request.param
    yield request.param
    app_ctx.config["STORAGE_BACKEND"] = "database"


def test_database_is_the_default_backend(app_ctx):
    assert app_ctx.config["STORAGE_BACKEND"] == "database"
    assert load_config(str(app_ctx.instance_path))["STORAGE_BACKEND"] == "database"


def test_an_unknown_backend_is_refused_at_start(app_ctx, monkeypatch):
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    with pytest.raises(RuntimeError, match="STORAGE_BACKEND must be database or folder"):
        load_config(str(app_ctx.instance_path))


def test_a_file_across_many_chunks_reads_back_the_same(backend, db):
    size = 3 * storage.CHUNK_BYTES + 123
    stream = Generated(size)
    assert storage.save("reports", "a.pdf", stream) == size
    db.session.commit()
    assert storage.exists("reports", "a.pdf") and storage.size("reports", "a.pdf") == size
    assert digest_of(storage.open_stream("reports", "a.pdf")) == (stream.digest.hexdigest(), size)
    assert hashlib.sha256(storage.local_path("reports", "a.pdf").read_bytes()).hexdigest() == stream.digest.hexdigest()
    assert storage.names("reports") == ["a.pdf"] and storage.names("exports") == []


def test_an_empty_file_is_a_file(backend, db):
    assert storage.save("exports", "empty.csv", io.BytesIO(b"")) == 0
    db.session.commit()
    assert storage.exists("exports", "empty.csv") and list(storage.open_stream("exports", "empty.csv")) == []
    assert storage.local_path("exports", "empty.csv").read_bytes() == b""


def test_a_missing_file_is_not_found_before_any_byte_is_read(backend, db):
    with pytest.raises(FileNotFoundError):
        storage.open_stream("reports", "none.pdf")
    assert not storage.exists("reports", "none.pdf") and storage.size("reports", "none.pdf") is None
    assert not storage.local_path("reports", "none.pdf").exists()


def test_names_that_could_climb_out_are_refused(backend, db):
    for area, name in (("reports", "../x"), ("..", "x"), ("reports", ".hidden"), ("reports", "a/b")):
        with pytest.raises(ValueError):
            storage.save(area, name, io.BytesIO(b"x"))


def test_a_replaced_file_is_never_read_stale_from_a_local_copy(backend, db):
    storage.save("imports", "u.csv", io.BytesIO(b"first"))
    db.session.commit()
    assert storage.local_path("imports", "u.csv").read_bytes() == b"first"
    storage.save("imports", "u.csv", io.BytesIO(b"second, longer"))
    db.session.commit()
    assert storage.local_path("imports", "u.csv").read_bytes() == b"second, longer"
    assert b"".join(storage.open_stream("imports", "u.csv")) == b"second, longer"


def test_a_deleted_file_is_gone_with_its_local_copy(backend, db):
    storage.save("media", "abc.png", io.BytesIO(b"png"))
    db.session.commit()
    copy = storage.local_path("media", "abc.png")
    storage.delete("media", "abc.png")
    db.session.commit()
    assert not storage.exists("media", "abc.png") and not copy.exists()
    assert not storage.local_path("media", "abc.png").exists()
    storage.delete("media", "abc.png")  # deleting twice is fine


def test_writing_stores_the_file_only_when_the_block_succeeds(backend, db):
    with storage.writing("reports", "ok.xlsx") as path:
        path.write_bytes(b"workbook")
    db.session.commit()
    assert b"".join(storage.open_stream("reports", "ok.xlsx")) == b"workbook"
    with pytest.raises(RuntimeError), storage.writing("reports", "broken.xlsx") as path:
        path.write_bytes(b"half")
        raise RuntimeError("the library failed")
    db.session.commit()
    assert not storage.exists("reports", "broken.xlsx") and not path.exists()


def test_in_the_database_a_file_is_part_of_the_callers_transaction(app_ctx, db):
    storage.save("reports", "kept.pdf", io.BytesIO(b"kept"))
    db.session.commit()
    storage.save("reports", "rolled-back.pdf", io.BytesIO(b"gone"))
    storage.delete("reports", "kept.pdf")
    db.session.rollback()
    assert storage.names("reports") == ["kept.pdf"]


def test_a_download_reads_its_chunks_after_the_request_session_is_gone(app_ctx, db):
    stream = Generated(5 * storage.CHUNK_BYTES)
    storage.save("exports", "big.csv", stream)
    db.session.commit()
    chunks = storage.open_stream("exports", "big.csv")
    db.session.remove()
    digest, total = digest_of(chunks)
    assert (digest, total) == (stream.digest.hexdigest(), 5 * storage.CHUNK_BYTES)


def test_another_host_reads_what_one_host_stored(app, app_ctx, db, tmp_path):
    """A host with its own empty STORAGE_DIR reads the file from the database."""
    storage.save("reports", "shared.pdf", io.BytesIO(b"%PDF from a worker"))
    db.session.commit()
    other = app.config["STORAGE_DIR"]
    app.config["STORAGE_DIR"] = str(tmp_path)
    try:
        assert storage.local_path("reports", "shared.pdf").read_bytes() == b"%PDF from a worker"
        assert storage.local_path("reports", "shared.pdf").is_relative_to(tmp_path)
    finally:
        app.config["STORAGE_DIR"] = other


def test_fifty_megabytes_go_in_and_out_without_being_held_in_memory(app_ctx, db):
    size = 50 * 1024 * 1024
    tracemalloc.start()
    try:
        stream = Generated(size)
        storage.save("exports", "fifty.csv", stream)
        db.session.commit()
        _, written_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest, total = digest_of(storage.open_stream("exports", "fifty.csv"))
        _, read_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        copy = storage.local_path("exports", "fifty.csv")
        _, copy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (digest, total) == (stream.digest.hexdigest(), size) and copy.stat().st_size == size
    # A few chunks at a time, whatever the file's size (a whole file would be 50 MB).
    limit = 8 * storage.CHUNK_BYTES * storage.CHUNKS_PER_QUERY
    print(f"storage_50mb_peak_write={written_peak} read={read_peak} copy={copy_peak} limit={limit}")
    assert written_peak < limit and read_peak < limit and copy_peak < limit


def test_an_existing_storage_folder_is_copied_into_the_database_once(app, app_ctx, db, tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "abc.png").write_bytes(b"png bytes")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "report-1.pdf").write_bytes(b"%PDF")
    (tmp_path / "reports" / ".report-2.pdf.1.partial").write_bytes(b"half")
    result = app.test_cli_runner().invoke(args=["import-storage-folder", str(tmp_path)])
    assert "2 files copied" in result.output
    assert b"".join(storage.open_stream("media", "abc.png")) == b"png bytes"
    assert storage.names("reports") == ["report-1.pdf"]
    assert storage.import_folder(tmp_path) == []
