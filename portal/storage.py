"""Files that one process writes and another reads, by area and name.

The folder backend keeps them under STORAGE_DIR/<area>/<name>; files are written and read in
chunks, so an upload or a report never has to fit in memory."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from flask import current_app

CHUNK_BYTES = 64 * 1024
# Areas and names are the portal's own (content hashes, job ids): nothing that climbs out.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def _path(area: str, name: str) -> Path:
    if not SAFE_NAME.match(area) or not SAFE_NAME.match(name):
        raise ValueError(f"unsafe storage name {area!r}/{name!r}")
    return Path(current_app.config["STORAGE_DIR"]) / area / name


def save(area: str, name: str, stream: BinaryIO) -> int:
    """Write the stream to area/name (replacing it atomically); the number of bytes written."""
    path = _path(area, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{name}.{os.getpid()}.partial")
    written = 0
    with partial.open("wb") as out:
        while chunk := stream.read(CHUNK_BYTES):
            out.write(chunk)
            written += len(chunk)
    partial.replace(path)
    return written


def open_stream(area: str, name: str) -> Iterator[bytes]:
    """The file's bytes in chunks; FileNotFoundError when there is no such file."""
    path = _path(area, name)
    handle = path.open("rb")  # raises before the first chunk is asked for

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    return chunks()


def delete(area: str, name: str) -> None:
    _path(area, name).unlink(missing_ok=True)


def exists(area: str, name: str) -> bool:
    return _path(area, name).is_file()
