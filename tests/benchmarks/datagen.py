"""Realistic generated contacts: Chinese and English names, regions, some bad and duplicate rows."""

from __future__ import annotations

import random
from pathlib import Path

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国志强文斌晓东海燕红梅鹏飞雪云"
ENGLISH = ["Emily", "David", "Grace", "Kevin", "Linda", "Tom", "Amy", "Jack", "Sophia", "Daniel"]
LAST = ["Chen", "Li", "Wang", "Zhang", "Liu", "Smith", "Brown", "Lee"]
PLACES = [
    ("上海", "上海市"),
    ("浙江", "杭州市"),
    ("江苏", "苏州市"),
    ("广东", "深圳市"),
    ("广东", "广州市"),
    ("北京", "北京市"),
    ("四川", "成都市"),
    ("湖北", "武汉市"),
    ("福建", "厦门市"),
    ("山东", "青岛市"),
]
INDUSTRIES = ["科技", "零售", "制造", "金融", "教育", "医疗", "物流", "能源"]
HEADER = "姓名,邮箱,手机,公司,行业,省份,城市,公司规模\n"


def contact_row(rng: random.Random, n: int) -> str:
    if n % 7 == 0:
        name = f"{rng.choice(ENGLISH)} {rng.choice(LAST)}"
    else:
        name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
    province, city = rng.choice(PLACES)
    email = f"user{n}@example{n % 50}.com" if n % 100 else f"broken{n}@"  # 1 % bad emails
    mobile = f"1{rng.choice('3456789')}{n:09d}"[:11]
    return (
        f"{name},{email},{mobile},企业{n % 5000},{rng.choice(INDUSTRIES)},{province},{city},"
        f"{rng.choice(['1-49', '50-199', '200-499', '500+'])}\n"
    )


def write_contacts_csv(path: Path, rows: int, seed: int = 7) -> None:
    """`rows` data rows; every 200th row repeats an earlier one (duplicates inside the file)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        for n in range(rows):
            handle.write(contact_row(rng, n - 150 if n % 200 == 199 else n))
