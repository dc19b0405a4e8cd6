"""The media library: images checked by their content, cleaned, and served from a public,
content-hashed URL that mail clients fetch without signing in.

An upload is decoded by Pillow and re-encoded from its pixels, so whatever else the file
carried (EXIF and GPS data, a script appended to a GIF, a ZIP behind a JPEG) never reaches a
reader; a file that is not what its name says, or carries such a payload, is refused outright."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from flask import current_app
from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import String, cast, or_, select

from portal import audit, storage
from portal.access import Permission
from portal.auth.models import User
from portal.content.models import AssetVersion, ContentTemplate, MediaImage
from portal.content.service import ContentError
from portal.extensions import db

AREA = "media"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_WIDTH = 1200
THUMBNAIL_SIZE = (240, 240)
MAX_PIXELS = 40_000_000
# Pillow's format -> (content type, file extension, the extensions a file of it may be named with)
FORMATS = {
    "PNG": ("image/png", "png", {"png"}),
    "JPEG": ("image/jpeg", "jpg", {"jpg", "jpeg"}),
    "GIF": ("image/gif", "gif", {"gif"}),
    "WEBP": ("image/webp", "webp", {"webp"}),
}
# Markers of a second file hidden in an image (HTML, script, PHP, an archive).
POLYGLOT_MARKERS = re.compile(rb"<\s*(?:script|html|body|svg|iframe)|<\?php|PK\x03\x04|javascript:", re.IGNORECASE)
FOLDER = re.compile(r"^[\w\- \u4e00-\u9fff]{0,100}$")


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    thumbnail: bytes
    content_type: str
    extension: str
    width: int
    height: int


def check_image(name: str, raw: bytes) -> CheckedImage:
    """Decode, check and re-encode an upload; ContentError says why it is refused."""
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ContentError("image_too_large", limit_mb=MAX_UPLOAD_BYTES // (1024 * 1024))
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension == "svg" or raw.lstrip()[:5].lower() in (b"<?xml", b"<svg ") or b"<svg" in raw[:512].lower():
        raise ContentError("image_svg_refused")
    if POLYGLOT_MARKERS.search(raw):
        raise ContentError("image_has_payload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            detected = image.format
            if detected not in FORMATS:
                raise ContentError("image_type_refused")
            if image.width * image.height > MAX_PIXELS:
                raise ContentError("image_too_many_pixels")
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ContentError("image_unreadable") from exc
    content_type, out_extension, names = FORMATS[detected]
    if extension not in names:
        raise ContentError("image_mislabelled", extension=extension or "-", detected=out_extension)
    if detected == "PNG" and not raw.rstrip(b"\0").endswith(b"IEND\xaeB`\x82"):
        raise ContentError("image_has_payload")
    if detected == "JPEG" and not raw.rstrip(b"\0\r\n").endswith(b"\xff\xd9"):
        raise ContentError("image_has_payload")
    image = ImageOps.exif_transpose(image)  # turn it as the camera meant, then forget the EXIF
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS)
    data = _encode(image, detected)
    thumbnail = image.copy()
    thumbnail.thumbnail(THUMBNAIL_SIZE)
    return CheckedImage(data, _encode(thumbnail, detected), content_type, out_extension, image.width, image.height)


def _encode(image: Image.Image, image_format: str) -> bytes:
    """Pixels only: no EXIF, no comments, no ICC profile text chunks."""
    if image_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    clean = image.copy()
    # Only what drawing needs survives: EXIF, XMP, comments and colour-profile blobs do not.
    clean.info = {key: value for key, value in image.info.items() if key == "transparency"}
    out = io.BytesIO()
    options = {"JPEG": {"quality": 85, "optimize": True}, "WEBP": {"quality": 85}, "PNG": {"optimize": True}}
    clean.save(out, format=image_format, **options.get(image_format, {}))
    return out.getvalue()


def upload_image(
    actor: User, name: str, stream: BinaryIO, folder: str = "", tags: list[str] | None = None
) -> MediaImage:
    """Check and store an image; the same picture uploaded twice is one library entry."""
    if not actor.can(Permission.CONTENT_EDIT):
        raise ContentError("may_not_edit")
    folder = folder.strip()
    if not FOLDER.match(folder):
        raise ContentError("folder_invalid")
    raw = stream.read(MAX_UPLOAD_BYTES + 1)
    checked = check_image(name, raw)
    digest = hashlib.sha256(checked.data).hexdigest()[:32]
    file_name = f"{digest}.{checked.extension}"
    existing = db.session.scalar(select(MediaImage).where(MediaImage.file_name == file_name))
    if existing is not None:
        return existing
    thumbnail_name = f"{digest}-thumb.{checked.extension}"
    storage.save(AREA, file_name, io.BytesIO(checked.data))
    storage.save(AREA, thumbnail_name, io.BytesIO(checked.thumbnail))
    image = MediaImage(
        file_name=file_name,
        thumbnail_name=thumbnail_name,
        original_name=name[:255],
        folder=folder,
        tags=sorted({t.strip() for t in tags or [] if t.strip()}),
        content_type=checked.content_type,
        width=checked.width,
        height=checked.height,
        size_bytes=len(checked.data),
        uploaded_by_id=actor.id,
    )
    db.session.add(image)
    db.session.flush()
    audit.record(actor, "content.image_uploaded", f"media:{image.id}", {"name": image.original_name})
    db.session.commit()
    return image


def public_url(image: MediaImage, thumbnail: bool = False) -> str:
    """The absolute URL mail clients load the image from."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return f"{base}/m/{image.thumbnail_name if thumbnail else image.file_name}"


def search_images(text: str = "", folder: str = "", tag: str = "") -> list[MediaImage]:
    query = select(MediaImage).order_by(MediaImage.created_at.desc(), MediaImage.id.desc()).limit(200)
    if text.strip():
        like = f"%{text.strip()}%"
        query = query.where(or_(MediaImage.original_name.ilike(like), cast(MediaImage.tags, String).ilike(like)))
    if folder:
        query = query.where(MediaImage.folder == folder)
    if tag.strip():
        query = query.where(cast(MediaImage.tags, String).contains(tag.strip(), autoescape=True))
    return list(db.session.scalars(query))


def folders() -> list[str]:
    return [f for f in db.session.scalars(select(MediaImage.folder).distinct().order_by(MediaImage.folder)) if f]


def where_used(image: MediaImage) -> list[AssetVersion]:
    """Every version whose HTML shows the image (block documents render into the HTML)."""
    needle = f"/m/{image.file_name}"
    versions = db.session.scalars(
        select(AssetVersion).where(AssetVersion.html_body.contains(needle, autoescape=True)).order_by(AssetVersion.id)
    )
    used = list(versions)
    templates = db.session.scalars(select(ContentTemplate))
    return used + [t for t in templates if needle in str(t.fields)]


def delete_image(actor: User, image_id: int) -> None:
    """Refused while any version or template shows it: a sent or approved email must keep its pictures."""
    if not actor.can(Permission.CONTENT_EDIT):
        raise ContentError("may_not_edit")
    image = db.session.get(MediaImage, image_id)
    if image is None:
        raise ContentError("no_such_image")
    used = where_used(image)
    if used:
        raise ContentError("image_in_use", count=len(used))
    audit.record(actor, "content.image_deleted", f"media:{image.id}", {"name": image.original_name})
    db.session.delete(image)
    storage.delete(AREA, image.file_name)
    storage.delete(AREA, image.thumbnail_name)
    db.session.commit()


def image_by_file_name(file_name: str) -> MediaImage | None:
    return db.session.scalar(
        select(MediaImage).where(or_(MediaImage.file_name == file_name, MediaImage.thumbnail_name == file_name))
    )
