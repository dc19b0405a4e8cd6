"""The media library: images checked by content, cleaned, public and cache-friendly, and kept
while anything uses them."""

import copy
import io

import pytest
from PIL import Image

from portal.content import media, service
from portal.content.service import ContentError
from tests.content.conftest import user


def jpeg_with_exif(width=2000, height=1000) -> bytes:
    image = Image.new("RGB", (width, height), (200, 30, 30))
    exif = image.getexif()
    exif[0x010F] = "Canon"  # camera make
    exif[0x8825] = {2: (31.0, 14.0, 0.0)}  # GPS
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def png(width=40, height=30) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 128, 255, 255)).save(out, "PNG")
    return out.getvalue()


def refusal(name, raw):
    with pytest.raises(ContentError) as refused:
        media.check_image(name, raw)
    return refused.value.code


def test_exif_is_removed_and_wide_images_are_scaled_to_1200_pixels():
    checked = media.check_image("photo.jpg", jpeg_with_exif())
    image = Image.open(io.BytesIO(checked.data))
    assert (image.width, image.height) == (1200, 600)
    assert dict(image.getexif()) == {}
    assert b"Canon" not in checked.data
    thumbnail = Image.open(io.BytesIO(checked.thumbnail))
    assert max(thumbnail.size) <= 240


@pytest.mark.parametrize("fmt, name", [("PNG", "a.png"), ("GIF", "a.gif"), ("WEBP", "a.webp"), ("JPEG", "a.jpeg")])
def test_png_gif_webp_and_jpeg_are_accepted(fmt, name):
    out = io.BytesIO()
    Image.new("RGB" if fmt == "JPEG" else "RGBA" if fmt != "GIF" else "P", (20, 10)).save(out, fmt)
    assert media.check_image(name, out.getvalue()).width == 20


def test_a_mislabelled_file_is_refused():
    assert refusal("banner.png", jpeg_with_exif(100, 50)) == "image_mislabelled"


def test_a_polyglot_image_carrying_a_script_is_refused():
    assert refusal("banner.png", png() + b"<script>alert(document.cookie)</script>") == "image_has_payload"


def test_a_gif_that_is_also_javascript_is_refused():
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, "GIF")
    raw = gif.getvalue()
    polyglot = raw[:6] + b"/*" + raw[8:] + b"*/=1;alert(1)//javascript:"
    assert refusal("a.gif", polyglot) in ("image_has_payload", "image_unreadable")


def test_a_jpeg_with_a_zip_behind_it_is_refused():
    assert refusal("a.jpg", jpeg_with_exif(50, 50) + b"PK\x03\x04rest-of-archive") == "image_has_payload"


def test_svg_is_refused():
    assert refusal("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"></svg>') == "image_svg_refused"
    assert refusal("logo.png", b'<?xml version="1.0"?><svg></svg>') == "image_svg_refused"


def test_text_and_oversized_files_are_refused():
    assert refusal("a.png", b"not an image at all") == "image_unreadable"
    assert refusal("a.png", b"\0" * (media.MAX_UPLOAD_BYTES + 1)) == "image_too_large"


def test_the_public_url_serves_the_image_without_a_session_and_caches_for_a_year(app, people):
    with app.app_context():
        image = media.upload_image(user(people["author"]), "海报.png", io.BytesIO(png()), "活动", ["春季"])
        url = media.public_url(image)
        file_name = image.file_name
    assert url.endswith("/m/" + file_name)
    response = app.test_client().get("/m/" + file_name)  # nobody signed in
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert "max-age=31536000" in response.headers["Cache-Control"] and "public" in response.headers["Cache-Control"]
    assert Image.open(io.BytesIO(response.data)).size == (40, 30)
    assert app.test_client().get("/m/nothing.png").status_code == 404
    assert app.test_client().get("/m/..%2Fportal.db").status_code == 404


def test_search_by_name_folder_and_tag(app, people):
    with app.app_context():
        actor = user(people["author"])
        media.upload_image(actor, "春季海报.png", io.BytesIO(png(10, 10)), "活动", ["春季"])
        media.upload_image(actor, "logo.png", io.BytesIO(png(11, 11)), "品牌", [])
        assert [i.original_name for i in media.search_images(text="春季")] == ["春季海报.png"]
        assert [i.original_name for i in media.search_images(folder="品牌")] == ["logo.png"]
        assert [i.original_name for i in media.search_images(tag="春季")] == ["春季海报.png"]
        assert media.folders() == ["品牌", "活动"]


def test_an_image_in_use_cannot_be_deleted_and_says_where_it_is_used(app, people):
    with app.app_context():
        actor = user(people["author"])
        used = media.upload_image(actor, "used.png", io.BytesIO(png(12, 12)))
        unused = media.upload_image(actor, "unused.png", io.BytesIO(png(13, 13)))
        asset = service.create_asset(actor, "email", "用图邮件", start_from="blocks")
        document = copy.deepcopy(asset.latest.blocks)
        document["sections"][0]["blocks"].append({"kind": "image", "src": media.public_url(used), "alt": "图"})
        service.save_draft(actor, asset.latest.id, {"subject": "s", "blocks": document})
        assert [v.asset.name for v in media.where_used(used)] == ["用图邮件"]
        with pytest.raises(ContentError) as refused:
            media.delete_image(actor, used.id)
        assert refused.value.code == "image_in_use"
        media.delete_image(actor, unused.id)
        assert media.image_by_file_name(unused.file_name) is None


def test_upload_page_refuses_a_mislabelled_file_with_a_chinese_message(app, client, login_as):
    login_as("operations_specialist")
    page = client.get("/content/media")
    assert page.status_code == 200
    response = client.post(
        "/content/media",
        data={"image": (io.BytesIO(jpeg_with_exif(30, 30)), "banner.png"), "folder": "", "tags": ""},
        content_type="multipart/form-data",
    )
    assert response.status_code == 422
    assert "实际是" in response.get_data(as_text=True)
