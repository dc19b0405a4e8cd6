import pytest

from portal.audience import normalise


@pytest.mark.parametrize("raw", ["上海", "上海市", "Shanghai", " shanghai "])
def test_shanghai_spellings_are_one_province(raw):
    assert normalise.province(raw) == "上海市"


def test_city_drops_the_shi_suffix_and_municipalities_name_themselves():
    assert normalise.city("深圳市", "广东省") == "深圳"
    assert normalise.city("", "北京市") == "北京"
    assert normalise.city("上海市", "上海市") == "上海"


@pytest.mark.parametrize("raw", ["13800138000", "138-0013-8000", "+86 138 0013 8000", "8613800138000"])
def test_mobiles_become_e164(raw):
    assert normalise.mobile(raw) == "+8613800138000"


@pytest.mark.parametrize("raw", ["12345", "1380013800a", "+1 555"])
def test_bad_mobiles_are_refused(raw):
    with pytest.raises(normalise.InvalidValue):
        normalise.mobile(raw)


def test_emails_are_lower_cased_and_checked():
    assert normalise.email(" Wang.Xiao@Example.COM ") == "wang.xiao@example.com"
    for bad in ("wang@", "@example.com", "wang..x@example.com", "王@"):
        with pytest.raises(normalise.InvalidValue):
            normalise.email(bad)


def test_region_groups_cover_south_china():
    assert set(normalise.REGION_GROUPS["华南"]) >= {"广东省", "广西壮族自治区", "海南省"}


def test_a_landline_is_not_a_mobile():
    with pytest.raises(normalise.InvalidValue) as refused:
        normalise.mobile("010-65529988")
    assert refused.value.code == "mobile_not_mobile"


@pytest.mark.parametrize(
    ("province", "region"),
    [
        ("上海市", "华东"),
        ("黑龙江省", "东北"),
        ("香港特别行政区", "港澳台/海外"),
        ("台湾省", "港澳台/海外"),
        ("火星", ""),
    ],
)
def test_every_province_has_its_region(province, region):
    assert normalise.region_of(province) == region
