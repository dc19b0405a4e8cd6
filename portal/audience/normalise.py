"""Cleaning what people type: emails, mobile numbers, provinces and cities.

So that 上海, 上海市 and Shanghai are one region, and +86 138-0013-8000 and 13800138000 one
number."""

from __future__ import annotations

import re

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# The macro-region (大区) of Hong Kong, Macau, Taiwan and of contacts abroad, as the operating
# guide's analyses group them.
OVERSEAS = "港澳台/海外"
# The 34 provincial-level divisions: full name, short forms and pinyin, and the macro-region.
PROVINCES: list[tuple[str, tuple[str, ...], str]] = [
    ("北京市", ("北京", "beijing"), "华北"),
    ("天津市", ("天津", "tianjin"), "华北"),
    ("河北省", ("河北", "hebei"), "华北"),
    ("山西省", ("山西", "shanxi"), "华北"),
    ("内蒙古自治区", ("内蒙古", "inner mongolia", "neimenggu"), "华北"),
    ("辽宁省", ("辽宁", "liaoning"), "东北"),
    ("吉林省", ("吉林", "jilin"), "东北"),
    ("黑龙江省", ("黑龙江", "heilongjiang"), "东北"),
    ("上海市", ("上海", "shanghai"), "华东"),
    ("江苏省", ("江苏", "jiangsu"), "华东"),
    ("浙江省", ("浙江", "zhejiang"), "华东"),
    ("安徽省", ("安徽", "anhui"), "华东"),
    ("福建省", ("福建", "fujian"), "华东"),
    ("江西省", ("江西", "jiangxi"), "华东"),
    ("山东省", ("山东", "shandong"), "华东"),
    ("河南省", ("河南", "henan"), "华中"),
    ("湖北省", ("湖北", "hubei"), "华中"),
    ("湖南省", ("湖南", "hunan"), "华中"),
    ("广东省", ("广东", "guangdong"), "华南"),
    ("广西壮族自治区", ("广西", "guangxi"), "华南"),
    ("海南省", ("海南", "hainan"), "华南"),
    ("重庆市", ("重庆", "chongqing"), "西南"),
    ("四川省", ("四川", "sichuan"), "西南"),
    ("贵州省", ("贵州", "guizhou"), "西南"),
    ("云南省", ("云南", "yunnan"), "西南"),
    ("西藏自治区", ("西藏", "tibet", "xizang"), "西南"),
    ("陕西省", ("陕西", "shaanxi"), "西北"),
    ("甘肃省", ("甘肃", "gansu"), "西北"),
    ("青海省", ("青海", "qinghai"), "西北"),
    ("宁夏回族自治区", ("宁夏", "ningxia"), "西北"),
    ("新疆维吾尔自治区", ("新疆", "xinjiang"), "西北"),
    ("香港特别行政区", ("香港", "hong kong", "hongkong"), OVERSEAS),
    ("澳门特别行政区", ("澳门", "macau", "macao"), OVERSEAS),
    ("台湾省", ("台湾", "taiwan"), OVERSEAS),
]
_PROVINCE_LOOKUP = {key.lower(): full for full, aliases, _ in PROVINCES for key in (full, *aliases)}
REGION_GROUPS: dict[str, list[str]] = {}
for _full, _aliases, _group in PROVINCES:
    REGION_GROUPS.setdefault(_group, []).append(_full)
MUNICIPALITIES = {"北京市", "天津市", "上海市", "重庆市"}


class InvalidValue(ValueError):
    """A value that cannot be cleaned: a code (email_invalid, mobile_invalid, mobile_not_mobile)
    and the value, from which the page or the import report makes the sentence."""

    def __init__(self, code: str, value: str) -> None:
        # The plain text is for callers that have no sentence of their own yet.
        super().__init__(f"{_PLAIN_TEXT[code]}: {value}")
        self.code, self.value = code, value


_PLAIN_TEXT = {
    "email_invalid": "invalid email",
    "mobile_invalid": "invalid mobile number",
    "mobile_not_mobile": "a landline, not a mobile number",
}


# The shape nearly every real address has; anything else goes through email-validator.
_PLAIN_EMAIL = re.compile(r"^[a-z0-9][a-z0-9._%+-]{0,63}@[a-z0-9-]{1,63}(\.[a-z0-9-]{1,63})*\.[a-z]{2,24}$")
_CN_MOBILE = re.compile(r"^(?:\+?86[ -]?)?(1[3-9]\d)[ -]?(\d{4})[ -]?(\d{4})$")


def email(raw: str | None) -> str | None:
    """Lower-cased, syntax-checked address (no DNS lookup); None when empty."""
    value = (raw or "").strip()
    if not value:
        return None
    lowered = value.lower()
    if _PLAIN_EMAIL.match(lowered) and ".." not in lowered and ".@" not in lowered:
        return lowered  # fast path for a million-row import; same answer as below
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidValue("email_invalid", value) from exc


# What phonenumbers may call a mobile: some countries' numbers cannot be told from landlines.
_MOBILE_TYPES = {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}


def mobile(raw: str | None, region: str = "CN") -> str | None:
    """E.164 (+8613800138000); None when empty. A landline is refused: SMS cannot reach it."""
    value = (raw or "").strip()
    if not value:
        return None
    plain = _CN_MOBILE.match(value) if region == "CN" else None
    if plain:
        return "+86" + "".join(plain.groups())
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue("mobile_invalid", value) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("mobile_invalid", value)
    if phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise InvalidValue("mobile_not_mobile", value)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def province(raw: str | None) -> str:
    """The full official name (上海 -> 上海市, Guangdong -> 广东省); unknown text is kept."""
    value = (raw or "").strip()
    return _PROVINCE_LOOKUP.get(value.lower(), value)


def city(raw: str | None, province_name: str = "") -> str:
    """City without the 市 suffix (深圳市 -> 深圳); a municipality's city is its own name."""
    value = (raw or "").strip()
    if not value and province_name in MUNICIPALITIES:
        return province_name.removesuffix("市")
    if province_name in MUNICIPALITIES and province(value) == province_name:
        return province_name.removesuffix("市")
    return value.removesuffix("市") if len(value) > 2 else value


_REGION_OF = {full: group for full, _aliases, group in PROVINCES}


def region_of(province_name: str | None) -> str:
    """The 大区 of a normalised province name; "" for text that names no province."""
    return _REGION_OF.get(province_name or "", "")
