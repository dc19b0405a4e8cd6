"""Every UI string has a Simplified Chinese translation.

The zh_CN catalogue lives in translations/zh_Hans_CN: Babel resolves the locale zh_CN to
zh_Hans_CN (Simplified script, China) and looks for its catalogue under that name."""

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None}
METHODS = [("portal/**.py", "python"), ("portal/templates/**.html", "jinja2")]


def extracted_ids() -> set[str]:
    ids = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map=METHODS, keywords=KEYWORDS
    ):
        ids.add(message if isinstance(message, str) else message[0])
    return ids


def test_zh_cn_catalogue_translates_every_message_id():
    with open(ROOT / "portal/translations/zh_Hans_CN/LC_MESSAGES/messages.po", "rb") as handle:
        catalogue = read_po(handle, locale="zh_Hans_CN")
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in catalogue
        if m.id and "fuzzy" not in m.flags and (m.string if isinstance(m.string, str) else all(m.string))
    }
    missing = sorted(extracted_ids() - translated)
    assert missing == [], f"untranslated in zh_CN (run make extract-messages, then translate): {missing}"


def test_the_message_extraction_finds_the_ui_strings():
    assert {"Dashboard", "Sign in", "Marketing Portal"} <= extracted_ids()
