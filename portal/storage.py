"""Files that one process writes and another reads, by area and name: report files, exports,
import uploads and their rejected rows, media-library images.

Two backends, chosen by STORAGE_BACKEND:

- `database` (the default): each file is a `stored_files` row and its bytes are
  `stored_file_chunks` rows of CHUNK_BYTES, so every host that reaches the database reads
  what any other host wrote, and a file is backed up, restored and removed with the records
  that name it. Writes go through the caller's session, in the caller's transaction: a file
  saved by a service that then fails is rolled back with everything else, and a file deleted
  with its record goes in the same commit. Reads of a download happen chunk by chunk on
  connections of their own, so a slow client holds no connection between chunks.
- `folder`: the files are under STORAGE_DIR/<area>/<name>; all hosts must share that folder.

Nothing is ever whole in memory: bytes go in and out CHUNK_BYTES at a time. Code that needs a
file on disk (openpyxl, reportlab, the import readers) writes with `writing()` and reads with
`local_path()`; with the database backend `local_path()` keeps a copy in this host's
STORAGE_DIR/.cache, named by the stored file's token, so a replaced file is never read stale."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flask import Response, current_app
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy import delete as sql_delete

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

BACKENDS = ("database", "folder")
CHUNK_BYTES = 256 * 1024
CHUNKS_PER_QUERY = 4  # a download fetches 1 MiB per round trip
# Local copies nobody asked for in a day are removed the next time a copy is made.
CACHE_KEEP_SECONDS = 24 * 3600
# Areas and names are the portal's own (content hashes, job ids): nothing that climbs out.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

stored_files = db.Table(
    "stored_files",
    Column("id", Integer, primary_key=True),
    Column("area", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    # Changes whenever the file is written: local copies are named by it.
    Column("token", String(32), nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False, default=utcnow),
    UniqueConstraint("area", "name", name="uq_stored_files_area_name"),
)

stored_file_chunks = db.Table(
    "stored_file_chunks",
    Column("file_id", Integer, ForeignKey("stored_files.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)


def _check(area: str, name: str) -> None:
    if not SAFE_NAME.match(area) or not SAFE_NAME.match(name):
        raise ValueError(f"unsafe storage name {area!r}/{name!r}")


def backend() -> str:
    return current_app.config.get("STORAGE_BACKEND", "database")


def _root() -> Path:
    return Path(current_app.config["STORAGE_DIR"])


def _folder_path(area: str, name: str) -> Path:
    _check(area, name)
    return _root() / area / name


# --- writing ------------------------------------------------------------------------------


def save(area: str, name: str, stream: BinaryIO) -> int:
    """Write the stream to area/name, replacing what was there (readers see the old file or
    the new one, never a mix); the number of bytes written."""
    _check(area, name)
    if backend() == "folder":
        path = _folder_path(area, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        written = 0
        try:
            with partial.open("wb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    out.write(chunk)
                    written += len(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return written
    connection = db.session.connection()
    _delete_rows(area, name)
    file_id = connection.execute(
        insert(stored_files)
        .values(area=area, name=name, token=secrets.token_hex(16), size=0, created_at=utcnow())
        .returning(stored_files.c.id)
    ).scalar_one()
    written = 0
    seq = 0
    while chunk := stream.read(CHUNK_BYTES):
        connection.execute(insert(stored_file_chunks).values(file_id=file_id, seq=seq, data=chunk))
        written += len(chunk)
        seq += 1
    connection.execute(update(stored_files).where(stored_files.c.id == file_id).values(size=written))
    return written


@contextlib.contextmanager
def writing(area: str, name: str) -> Iterator[Path]:
    """A local file to write area/name into (for libraries that want a path); stored when the
    block ends without an error, thrown away otherwise. Readers never see a half-written file."""
    _check(area, name)
    if backend() == "folder":
        path = _folder_path(area, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        try:
            yield partial
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return
    draft = scratch_path(f"{secrets.token_hex(8)}-{name}")
    try:
        yield draft
        with draft.open("rb") as stream:
            save(area, name, stream)
        # This host is likely to read it next (a preview, a test): keep the draft as its copy.
        token = db.session.connection().execute(_file_query(area, name)).one().token
        copy = _cache_path(area, name, token)
        copy.parent.mkdir(parents=True, exist_ok=True)
        draft.replace(copy)
    finally:
        draft.unlink(missing_ok=True)


def scratch_path(name: str) -> Path:
    """A private working file on this host (not stored, not seen by other hosts)."""
    if not SAFE_NAME.match(name):
        raise ValueError(f"unsafe storage name {name!r}")
    scratch = _root() / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch / name


# --- reading ------------------------------------------------------------------------------


def _file_query(area: str, name: str):
    return select(stored_files.c.id, stored_files.c.token, stored_files.c.size).where(
        stored_files.c.area == area, stored_files.c.name == name
    )


def open_stream(area: str, name: str) -> Iterator[bytes]:
    """The file's bytes in chunks; FileNotFoundError (before the first chunk) when there is no
    such file. The chunks can be read after the request's context has ended."""
    _check(area, name)
    if backend() == "folder":
        handle = _folder_path(area, name).open("rb")  # raises before the first chunk is asked for

        def file_chunks() -> Iterator[bytes]:
            with handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk

        return file_chunks()
    found = db.session.execute(_file_query(area, name)).first()
    if found is None:
        raise FileNotFoundError(f"{area}/{name}")
    engine = db.engine

    def row_chunks() -> Iterator[bytes]:
        seq = 0
        while True:
            # A connection per round trip: a slow download holds none while the client reads.
            with engine.connect() as connection:
                rows = connection.execute(_chunks_from(found.id, seq)).all()
            for row in rows:
                yield row.data
            if len(rows) < CHUNKS_PER_QUERY:
                return
            seq = rows[-1].seq + 1

    return row_chunks()


def attachment(chunks: Iterator[bytes], download_name: str, mimetype: str) -> Response:
    """A download of stored bytes, streamed as they are read (never whole in memory)."""
    return Response(
        chunks,
        mimetype=mimetype,
        headers={"Content-Disposition": f"attachment; filename={download_name}"},
        direct_passthrough=True,
    )


def _chunks_from(file_id: int, seq: int):
    return (
        select(stored_file_chunks.c.seq, stored_file_chunks.c.data)
        .where(stored_file_chunks.c.file_id == file_id, stored_file_chunks.c.seq >= seq)
        .order_by(stored_file_chunks.c.seq)
        .limit(CHUNKS_PER_QUERY)
    )


def _cache_path(area: str, name: str, token: str) -> Path:
    # The copy keeps the file's name, extension included: some readers go by it (openpyxl).
    return _root() / ".cache" / area / name / f"{token}-{name}"


def local_path(area: str, name: str) -> Path:
    """A path on this host holding area/name, to open and read (not to write: use `writing`).
    When storage has no such file the path does not exist."""
    _check(area, name)
    if backend() == "folder":
        return _folder_path(area, name)
    connection = db.session.connection()
    found = connection.execute(_file_query(area, name)).first()
    if found is None:
        shutil.rmtree(_root() / ".cache" / area / name, ignore_errors=True)
        return _root() / ".cache" / area / name / "missing"
    copy = _cache_path(area, name, found.token)
    if copy.is_file():
        os.utime(copy)  # in use: the sweep keeps it
        return copy
    _sweep_cache()
    copy.parent.mkdir(parents=True, exist_ok=True)
    partial = copy.with_name(f".{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        with partial.open("wb") as out:
            seq = 0
            while rows := connection.execute(_chunks_from(found.id, seq)).all():
                for row in rows:
                    out.write(row.data)
                seq = rows[-1].seq + 1
        partial.replace(copy)
    finally:
        partial.unlink(missing_ok=True)
    return copy


def _sweep_cache() -> None:
    """Remove this host's local copies that nobody has asked for in CACHE_KEEP_SECONDS."""
    cache = _root() / ".cache"
    if not cache.is_dir():
        return
    cutoff = time.time() - CACHE_KEEP_SECONDS
    for copy in cache.glob("*/*/*"):
        with contextlib.suppress(OSError):
            if copy.stat().st_mtime < cutoff:
                copy.unlink()


def exists(area: str, name: str) -> bool:
    _check(area, name)
    if backend() == "folder":
        return _folder_path(area, name).is_file()
    return db.session.connection().execute(_file_query(area, name)).first() is not None


def size(area: str, name: str) -> int | None:
    """The file's size in bytes; None when there is no such file."""
    _check(area, name)
    if backend() == "folder":
        path = _folder_path(area, name)
        return path.stat().st_size if path.is_file() else None
    found = db.session.connection().execute(_file_query(area, name)).first()
    return found.size if found else None


def names(area: str) -> list[str]:
    """The names of the files stored in `area`, sorted."""
    if not SAFE_NAME.match(area):
        raise ValueError(f"unsafe storage area {area!r}")
    if backend() == "folder":
        folder = _root() / area
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return list(
        db.session.connection().scalars(
            select(stored_files.c.name).where(stored_files.c.area == area).order_by(stored_files.c.name)
        )
    )


# --- removing -----------------------------------------------------------------------------


def delete(area: str, name: str) -> None:
    """Remove area/name (nothing happens when there is none). With the database backend the
    removal is part of the caller's transaction: commit it with the record that named the file."""
    _check(area, name)
    if backend() == "folder":
        _folder_path(area, name).unlink(missing_ok=True)
        return
    _delete_rows(area, name)
    shutil.rmtree(_root() / ".cache" / area / name, ignore_errors=True)


def _delete_rows(area: str, name: str) -> None:
    connection = db.session.connection()
    ids = select(stored_files.c.id).where(stored_files.c.area == area, stored_files.c.name == name)
    # Explicitly rather than by ON DELETE CASCADE alone: SQLite enforces it only when told to.
    connection.execute(sql_delete(stored_file_chunks).where(stored_file_chunks.c.file_id.in_(ids)))
    connection.execute(sql_delete(stored_files).where(stored_files.c.area == area, stored_files.c.name == name))


def import_folder(folder: Path) -> list[str]:
    """Copy the files kept by the folder backend (folder/<area>/<name>) into the database,
    each in a commit of its own, skipping those already there; the area/name of each copied.
    For moving an existing installation to STORAGE_BACKEND=database: run it once after
    upgrading (safe to run again)."""
    copied = []
    for path in sorted(folder.glob("*/*")):
        area, name = path.parent.name, path.name
        if not path.is_file() or not SAFE_NAME.match(area) or not SAFE_NAME.match(name):
            continue  # partial files (.name.partial) and local copies (.cache) are not files of record
        if db.session.connection().execute(_file_query(area, name)).first() is not None:
            continue
        with path.open("rb") as stream:
            save(area, name, stream)
        db.session.commit()
        copied.append(f"{area}/{name}")
    return copied
