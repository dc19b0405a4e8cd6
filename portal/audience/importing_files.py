"""Reading an uploaded contact file as a table, whatever wrote it: Excel, WPS or a CRM export.

What a file is comes from its content, never its name: an XLSX is a zip holding
xl/workbook.xml (WPS names them .xls, browsers .csv or nothing); anything else must be text in
an encoding that decodes the whole file. Text is sniffed for its delimiter (comma, semicolon,
tab, pipe). Legacy .xls, other zips (.docx), images and binary files are refused at upload."""

from __future__ import annotations

import codecs
import csv
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charset_normalizer import from_bytes

# How much of the file the detector reads: Chinese that starts after the first 256 KB must
# still be seen. The whole file is then decoded strictly before anything is imported.
SAMPLE_BYTES = 4 * 1024 * 1024
# What a person may pick on the mapping page, besides the detected encoding.
ENCODING_CHOICES = ("utf-8", "gb18030", "big5", "utf-16")
DELIMITERS = (",", ";", "\t", "|")
# A cell may be long (the import rejects it with a reason); the csv module's default limit
# (131,072 characters) would stop the whole file instead.
CELL_LIMIT = 64 * 1024 * 1024
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .xls (and .doc, .ppt)
_BINARY_SIGNATURES = (b"%PDF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x1f\x8b", b"Rar!", b"7z\xbc\xaf", b"\x7fELF")
# Control characters (C0 and C1) but tab and line breaks.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class ImportRefused(ValueError):
    """The file or the choices cannot be imported: a code and its parameters, from which the
    page makes the sentence in the reader's language."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code, self.params = code, params


@dataclass(frozen=True)
class TableFormat:
    kind: str  # "xlsx" | "text"
    encoding: str = ""
    delimiter: str = ","


def file_kind(path: Path) -> str:
    """ "xlsx" or "text"; refuses what is no table at all."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise ImportRefused("file_damaged") from exc
        if "xl/workbook.xml" in names:
            return "xlsx"
        raise ImportRefused("not_a_table")
    if head.startswith(_OLE2):
        raise ImportRefused("legacy_xls")
    if head.startswith(_BINARY_SIGNATURES):
        raise ImportRefused("not_a_table")
    return "text"


def detect_encoding(path: Path) -> str:
    """The encoding that decodes the file: a BOM's, else UTF-8 when the whole file is UTF-8,
    else what charset-normalizer finds in a large sample, with GB18030 (the superset Excel
    and WPS in China write) preferred whenever the bytes decode as Chinese text."""
    with open(path, "rb") as handle:
        sample = handle.read(SAMPLE_BYTES)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if first_undecodable_line(path, "utf-8") is None or _mostly_utf8(sample):
        return "utf-8"  # a UTF-8 file with a stray byte is refused at that line, never read as another
    if len(sample) > 64 and sample[1::2].count(0) > len(sample) // 4:
        return "utf-16-le"  # "Unicode text" without its BOM
    if len(sample) > 64 and sample[0::2].count(0) > len(sample) // 4:
        return "utf-16-be"
    # Bytes that decode as Chinese in GB18030 are read so, whatever the detector says: it takes
    # a few GBK words for Big5, cp949 or cp874, and a few among much ASCII for cp1250.
    if _reads_as_chinese(sample, "gb18030"):
        return "gb18030"
    best = from_bytes(sample).best()
    return codecs.lookup(best.encoding).name if best is not None else "gb18030"


def _mostly_utf8(sample: bytes) -> bool:
    decoded = sample.decode("utf-8", errors="replace")
    broken = decoded.count("\ufffd")
    readable = sum(1 for char in decoded if char > "\x7f") - broken
    return readable > 0 and broken <= max(3, readable // 100)


def _reads_as_chinese(sample: bytes, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        decoded = decoder.decode(sample, final=False)  # a character cut by the sample's end is fine
    except UnicodeDecodeError:
        return False
    return any("\u4e00" <= char <= "\u9fff" for char in decoded)


def encoding_for(path: Path, chosen: str) -> str:
    """The codec for what a person chose: "UTF-16" is the byte order its BOM says, else the
    little-endian Windows writes."""
    if chosen == "utf-16":
        with open(path, "rb") as handle:
            if handle.read(2) not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
                return "utf-16-le"
    return chosen


def first_undecodable_line(path: Path, encoding: str) -> int | None:
    """The line of the first byte sequence `encoding` cannot decode, or None when the whole
    file decodes."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        return 1
    lines = 1
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1024 * 1024)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                good = chunk[: max(exc.start, 0)].decode(encoding, errors="replace")
                return lines + good.count("\n")
            except UnicodeError:  # UTF-16 without its BOM
                return lines
            lines += text.count("\n")
            if not chunk:
                return None


def sniff_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the same number of columns most often."""
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    best, best_score = ",", (0, 0)
    for delimiter in DELIMITERS:
        widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        if not widths or widths[0] < 2:
            continue
        score = (sum(1 for width in widths if width == widths[0]), widths[0])
        if score > best_score:
            best, best_score = delimiter, score
    return best


def looks_binary(text: str) -> bool:
    """Text with more than a few control characters is an image or a program, not a table."""
    return len(_CONTROLS.findall(text)) > max(8, len(text) // 100)


def table_format(path: Path, encoding: str = "") -> TableFormat:
    """How to read the file at `path`; `encoding` overrides the detected one."""
    kind = file_kind(path)
    if kind == "xlsx":
        return TableFormat("xlsx")
    encoding = encoding or detect_encoding(path)
    with open(path, "rb") as handle:
        sample = handle.read(256 * 1024)
    try:
        text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample)
    except UnicodeError as exc:  # UTF-16 without its BOM
        raise ImportRefused("undecodable", encoding=encoding, row=1) from exc
    if looks_binary(text):
        raise ImportRefused("not_a_table")
    return TableFormat("text", encoding, sniff_delimiter(text.lstrip("\ufeff")))


def iter_rows(path: Path, table: TableFormat, strict: bool = True) -> Iterator[tuple[int, list[str]]]:
    """Every row with its number as Excel shows it (the first row is 1), blank ones included,
    streamed. A damaged XLSX or (when `strict`) an undecodable byte raises ImportRefused; the
    preview reads leniently up to the line first_undecodable_line names."""
    if table.kind == "xlsx":
        yield from _xlsx_rows(path)
        return
    csv.field_size_limit(CELL_LIMIT)
    number = 0
    try:
        errors = "strict" if strict else "replace"
        with open(path, encoding=table.encoding, errors=errors, newline="") as handle:
            for number, cells in enumerate(csv.reader(handle, delimiter=table.delimiter), start=1):
                yield number, cells
    except UnicodeError as exc:
        raise ImportRefused("undecodable", encoding=table.encoding, row=number + 1) from exc
    except csv.Error as exc:
        raise ImportRefused("file_damaged") from exc


def _xlsx_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    from openpyxl import load_workbook

    # Opened as a file, not a name: openpyxl refuses names not ending in .xlsx (WPS writes .xls).
    with open(path, "rb") as handle:
        try:
            workbook = load_workbook(handle, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises whatever its parsers meet in a damaged file
            raise ImportRefused("file_damaged") from exc
        try:
            # Read-only sheets yield missing rows as empty ones, so counting gives Excel's numbers.
            for number, row in enumerate(workbook.active.iter_rows(values_only=True), start=1):
                yield number, ["" if cell is None else _cell_text(cell) for cell in row]
        except Exception as exc:  # a truncated part shows only when it is read
            raise ImportRefused("file_damaged") from exc
        finally:
            workbook.close()


def _cell_text(cell: Any) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # Excel stores mobile numbers as floats
    return str(cell)


def is_blank(cells: list[str]) -> bool:
    return not any(map(str.strip, cells))


def read_header(rows: Iterator[tuple[int, list[str]]]) -> tuple[int, list[str]]:
    """Skip the blank lines before the header; returns its row number and its names, made
    distinct (a second 邮箱 becomes 邮箱 (2)). Refuses a file with no header."""
    for number, cells in rows:
        if not is_blank(cells):
            return number, distinct_headers(cells)
    raise ImportRefused("empty")


def distinct_headers(cells: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    headers = []
    for cell in cells:
        name = cell.strip().lstrip("\ufeff")
        if name:
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name} ({seen[name]})"
        headers.append(name)
    return headers


def estimate_rows(path: Path, table: TableFormat) -> int:
    """Data rows in the file, cheaply (for the progress bar): newlines, or the sheet's size."""
    if table.kind == "xlsx":
        from openpyxl import load_workbook

        with open(path, "rb") as handle:
            try:
                workbook = load_workbook(handle, read_only=True)
            except Exception:  # damaged: the import itself says so
                return 1
            try:
                return max((workbook.active.max_row or 1) - 1, 1)
            finally:
                workbook.close()
    newline = "\n".encode(table.encoding.replace("-sig", "").replace("utf-16", "utf-16-le"))
    lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            lines += chunk.count(newline)
    return max(lines - 1, 1)
