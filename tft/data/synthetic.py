"""Deterministic, learnable synthetic data in the official formats, for the offline demo and tests.

AFQMC-style: Chinese customer-service question pairs. A pair is a paraphrase (label "1") when both
questions ask the same intent about the same product in different words; otherwise "0" (same product
with another intent, or another product: hard and easy negatives).
CLUENER-style: sentences from templates with person, company and address entities as spans.
SST-2-style: English movie-review sentences whose sentiment comes from the opinion words they hold (one in eight
negates its opinion: "is not good" is negative), in GLUE's TSV layout. Every test and the family matrix learn from
it on a clone with nothing beside it; the real SST-2 is only read where it is present.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tft.fsutil import atomic_dir, check_output_dir, hold

PRODUCTS = ["花呗", "借呗", "余额宝", "信用卡", "网商贷", "支付宝", "银行卡", "蚂蚁森林"]
INTENTS = {
    "repay": ["{p}怎么还款", "{p}如何还款", "怎样还{p}的钱", "{p}的还款方法是什么", "我想还{p}该怎么操作"],
    "open": ["{p}怎么开通", "如何开通{p}", "{p}在哪里开通", "我要开通{p}", "开通{p}需要什么条件"],
    "limit": ["{p}额度是多少", "{p}能用多少钱", "我的{p}额度怎么查", "查一下{p}的额度", "{p}可用额度在哪看"],
    "close": ["{p}怎么关闭", "如何注销{p}", "我不想用{p}了怎么关掉", "{p}可以取消吗", "关闭{p}的方法"],
    "fail": ["{p}为什么用不了", "{p}无法使用是什么原因", "{p}突然不能用了", "为啥我的{p}用不了", "{p}付款失败怎么回事"],
    "raise": ["{p}怎么提额", "如何提高{p}额度", "{p}额度能不能提升", "怎样让{p}额度变高", "{p}提额的方法"],
}
PREFIXES = ["", "", "请问", "你好", "我想知道", "问一下"]
SUFFIXES = ["", "", "？", "呢", "啊", "吗"]

SURNAMES = "张王李赵刘陈杨黄周吴"
GIVEN = ["伟", "芳", "娜", "敏", "静", "磊", "强", "军", "洋", "勇", "艳", "杰"]
COMPANIES = ["华为", "阿里巴巴", "腾讯", "京东", "百度", "小米", "网易", "美团"]
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "南京", "武汉"]
NER_TEMPLATES = [
    "{name}在{company}工作", "{name}昨天去了{address}", "{company}总部位于{address}",
    "据{company}消息，{name}将前往{address}", "{address}的{name}加入了{company}", "记者从{address}获悉，{company}发布新品",
]


def _question(rng, product, intent):
    return rng.choice(PREFIXES) + rng.choice(INTENTS[intent]).format(p=product) + rng.choice(SUFFIXES)


def afqmc_rows(n: int, rng: random.Random) -> list[dict]:
    rows, intents = [], sorted(INTENTS)
    for i in range(n):
        product, intent = rng.choice(PRODUCTS), rng.choice(intents)
        first = _question(rng, product, intent)
        if i % 2 == 0:
            second, label = _question(rng, product, intent), "1"
            if second == first:
                second = _question(rng, product, intent) + "？"
        elif rng.random() < 0.6:
            other = rng.choice([x for x in intents if x != intent])
            second, label = _question(rng, product, other), "0"
        else:
            other = rng.choice([p for p in PRODUCTS if p != product])
            second, label = _question(rng, other, intent), "0"
        rows.append({"sentence1": first, "sentence2": second, "label": label})
    return rows


def cluener_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(n):
        template = rng.choice(NER_TEMPLATES)
        values = {"name": rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.randint(1, 2))),
                  "company": rng.choice(COMPANIES), "address": rng.choice(CITIES)}
        text, label = "", {}
        for chunk in template.replace("}", "{").split("{"):
            if chunk in values:
                entity = values[chunk]
                label.setdefault(chunk, {}).setdefault(entity, []).append([len(text), len(text) + len(entity) - 1])
                text += entity
            else:
                text += chunk
        rows.append({"text": text, "label": label})
    return rows


SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the script", "the ending", "the cast", "the story",
            "the director 's latest", "the soundtrack", "its humour", "the dialogue"]
POSITIVE = ["good", "great", "wonderful", "charming", "moving", "funny", "brilliant", "delightful", "clever", "fresh",
            "beautiful", "gripping"]
NEGATIVE = ["bad", "awful", "boring", "dull", "tedious", "clumsy", "painful", "lifeless", "stupid", "bland",
            "terrible", "forgettable"]
FILLERS = ["", "", "frankly ,", "in the end ,", "for most of its length ,", "as expected ,", "to my surprise ,"]
REVIEW_TEMPLATES = ["{f} {s} is {o} .", "{f} {s} was {o} and {o2} .", "{s} feels {o} from start to finish",
                    "a {o} , {o2} piece of work", "{f} {s} is {neg} {o} .", "what a {o} way to spend two hours",
                    "{s} is {o} , even when it tries too hard"]


def sst2_rows(n: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n):
        label = i % 2  # balanced: a model that learned nothing scores 50%
        template = rng.choice(REVIEW_TEMPLATES)
        negated = "{neg}" in template
        words = POSITIVE if label != negated else NEGATIVE  # "is not good" is a negative review
        o, o2 = rng.sample(words, 2)
        sentence = template.format(f=rng.choice(FILLERS), s=rng.choice(SUBJECTS), o=o, o2=o2, neg="not")
        rows.append({"sentence": " ".join(sentence.split()), "label": str(label)})
    return rows


SAMPLE_MARKER = "tft-sample.json"
# what each sample task writes: its rows and the file format of its official release
SAMPLE_TASKS = {"afqmc": (afqmc_rows, "json"), "cluener": (cluener_rows, "json"), "sst2": (sst2_rows, "tsv")}


def _earlier_sample(path: Path, entries: list[str]) -> str | None:
    """A sample an older tft wrote (before ownership markers), proven by content: None when every file is what
    the marker's task, sizes and seed regenerate, byte for byte; else the first file that is not."""
    try:
        marker = json.loads((Path(path) / SAMPLE_MARKER).read_text(encoding="utf-8"))
        expected = sample_files(marker["task"], int(marker["train"]), int(marker["dev"]), int(marker["test"]),
                                int(marker["seed"]))
    except (OSError, ValueError, KeyError, TypeError):
        return f"{SAMPLE_MARKER} is not a tft sample marker"
    for name in sorted(entries):
        if name == SAMPLE_MARKER:
            continue
        if name not in expected:
            return f"{name} is not a file of this sample"
        if (Path(path) / name).read_bytes() != expected[name].encode("utf-8"):
            return f"{name} was changed after tft wrote it"
    return None


def write_sample(task: str, out: str | Path, train: int = 3000, dev: int = 500, test: int = 200, seed: int = 0,
                 overwrite: bool = False) -> Path:
    """Write train/dev/test files for `task` (a key of SAMPLE_TASKS) into `out`, atomically.

    An existing `out` is replaced only if it is an earlier sample (its marker file is there) and
    `overwrite` is set; a folder of anything else is refused.
    """
    def check() -> bool:
        return check_output_dir(out, what="data sample", marker=SAMPLE_MARKER, option="--out", overwrite=overwrite,
                                legacy=_earlier_sample)

    check()  # before the lock: a destination never to be written gets no lock file beside it
    with hold(out, option="--out", wait_option=None):
        return _write_sample(task, out, train, dev, test, seed, replace=check())


def sample_files(task: str, train: int, dev: int, test: int, seed: int) -> dict[str, str]:
    """{file name: its text} of a sample: the same bytes every time for the same task, sizes and seed."""
    rng = random.Random(seed)
    make, fmt = SAMPLE_TASKS[task]
    splits = {"train": make(train, rng), "dev": make(dev, rng), "test": make(test, rng)}
    for i, row in enumerate(splits["test"]):
        row.pop("label")
        splits["test"][i] = {"id": i, **row}
    files = {}
    for split, rows in splits.items():
        if fmt == "tsv":  # GLUE's layout: a header, then tab-separated columns (test: index first)
            columns = list(rows[0]) if rows else ["sentence"]
            lines = ["\t".join("index" if c == "id" else c for c in columns)]
            lines += ["\t".join(str(row[c]) for c in columns) for row in rows]
        else:
            lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        files[f"{split}.{fmt}"] = "".join(line + "\n" for line in lines)
    return files


def _write_sample(task, out, train, dev, test, seed, replace: bool) -> Path:
    files = sample_files(task, train, dev, test, seed)
    with atomic_dir(out, overwrite=replace, owned_as="data sample") as tmp:
        (Path(tmp) / SAMPLE_MARKER).write_text(json.dumps({"task": task, "train": train, "dev": dev, "test": test,
                                                           "seed": seed}) + "\n", encoding="utf-8")
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
    return Path(out)
