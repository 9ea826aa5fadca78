"""Deterministic bilingual (English / Swahili) instruction corpus for the built-in demo.

Everything here is written by the project: templated but varied instructions with parallel
English and Swahili versions (numbers, lists, simple facts, descriptions, short sentences,
greetings). Every row is checked with `clo_mlx.translate.langid`: both English texts must be judged
English and both Swahili texts Swahili (among en/sw), otherwise the row is dropped.

`write_demo_data(out_dir, seed)` writes an mlx-lm-style data folder of CLO parallel rows
(`train.jsonl`, `valid.jsonl`, `test.jsonl`) plus `pretrain.jsonl`, disjoint prompts the
demo base model was pretrained on.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from ..io import atomic_write_text
from ..translate.langid import detect_language

LANG = "sw"
DEFAULT_SIZES = {"test": 120, "valid": 80, "train": 800}

# English number words and Swahili ones (plain counting forms).
EN_NUM = "zero one two three four five six seven eight nine ten".split()
SW_NUM = "sifuri moja mbili tatu nne tano sita saba nane tisa kumi".split()
# Swahili class 4 (miguu, "legs") agreement for the numbers that occur.
SW_LEGS = {2: "miwili", 4: "minne", 6: "sita", 8: "minane"}

# name_en, name_sw, legs, kind_en, kind_sw, adj_en, adj_sw, home_en, home_sw, food_en, food_sw
ANIMALS = [
    (
        "dog",
        "mbwa",
        4,
        "animal",
        "mnyama",
        "clever",
        "mwerevu",
        "with people at home",
        "na watu nyumbani",
        "meat and bones",
        "nyama na mifupa",
    ),
    (
        "cat",
        "paka",
        4,
        "animal",
        "mnyama",
        "small",
        "mdogo",
        "in houses",
        "majumbani",
        "fish and mice",
        "samaki na panya",
    ),
    (
        "cow",
        "ng'ombe",
        4,
        "animal",
        "mnyama",
        "big",
        "mkubwa",
        "on farms",
        "shambani",
        "grass",
        "nyasi",
    ),
    (
        "goat",
        "mbuzi",
        4,
        "animal",
        "mnyama",
        "strong",
        "mwenye nguvu",
        "on farms",
        "shambani",
        "leaves and grass",
        "majani na nyasi",
    ),
    (
        "chicken",
        "kuku",
        2,
        "bird",
        "ndege",
        "small",
        "mdogo",
        "on farms",
        "shambani",
        "seeds",
        "mbegu",
    ),
    (
        "duck",
        "bata",
        2,
        "bird",
        "ndege",
        "gentle",
        "mpole",
        "near water",
        "karibu na maji",
        "small fish and plants",
        "samaki wadogo na mimea",
    ),
    (
        "lion",
        "simba",
        4,
        "animal",
        "mnyama",
        "fierce",
        "mkali",
        "in the grassland",
        "mbugani",
        "meat",
        "nyama",
    ),
    (
        "elephant",
        "tembo",
        4,
        "animal",
        "mnyama",
        "big",
        "mkubwa",
        "in the forest",
        "msituni",
        "leaves and fruit",
        "majani na matunda",
    ),
    (
        "giraffe",
        "twiga",
        4,
        "animal",
        "mnyama",
        "tall",
        "mrefu",
        "in the grassland",
        "mbugani",
        "leaves from tall trees",
        "majani ya miti mirefu",
    ),
    (
        "horse",
        "farasi",
        4,
        "animal",
        "mnyama",
        "fast",
        "mwepesi",
        "on farms",
        "shambani",
        "grass",
        "nyasi",
    ),
    (
        "camel",
        "ngamia",
        4,
        "animal",
        "mnyama",
        "strong",
        "mwenye nguvu",
        "in the desert",
        "jangwani",
        "dry plants",
        "mimea mikavu",
    ),
    (
        "bee",
        "nyuki",
        6,
        "insect",
        "mdudu",
        "small",
        "mdogo",
        "in a hive",
        "mzingani",
        "nectar from flowers",
        "utomvu wa maua",
    ),
    (
        "spider",
        "buibui",
        8,
        "creature",
        "mdudu",
        "small",
        "mdogo",
        "in a web",
        "kwenye utando",
        "insects",
        "wadudu",
    ),
    (
        "ant",
        "sisimizi",
        6,
        "insect",
        "mdudu",
        "small",
        "mdogo",
        "under the ground",
        "chini ya ardhi",
        "sugar and seeds",
        "sukari na mbegu",
    ),
    (
        "monkey",
        "tumbili",
        None,
        "animal",
        "mnyama",
        "clever",
        "mwerevu",
        "in trees",
        "mitini",
        "fruit",
        "matunda",
    ),
    (
        "zebra",
        "pundamilia",
        4,
        "animal",
        "mnyama",
        "fast",
        "mwepesi",
        "in the grassland",
        "mbugani",
        "grass",
        "nyasi",
    ),
]
COLOURS = [
    ("red", "nyekundu"), ("green", "kijani"), ("blue", "bluu"), ("yellow", "njano"),
    ("black", "nyeusi"), ("white", "nyeupe"), ("brown", "kahawia"), ("purple", "zambarau"),
]  # fmt: skip
# thing_en, thing_sw, verb "has" agreeing with the noun, colour index
THING_COLOURS = [
    ("the sky", "anga", "lina", 2), ("grass", "nyasi", "zina", 1), ("snow", "theluji", "ina", 5),
    ("milk", "maziwa", "yana", 5), ("blood", "damu", "ina", 0), ("the sun", "jua", "lina", 3),
    ("coal", "makaa", "yana", 4), ("a ripe banana", "ndizi iliyoiva", "ina", 3),
    ("the sea", "bahari", "ina", 2), ("a leaf", "jani", "lina", 1), ("chocolate", "chokoleti", "ina", 6),
    ("a tomato", "nyanya", "ina", 0),
]  # fmt: skip
# object_en, object_sw, genitive ("of") particle, "with it" form
OBJECTS = [
    ("ball", "mpira", "wa", "nao"), ("book", "kitabu", "cha", "nacho"), ("cup", "kikombe", "cha", "nacho"),
    ("box", "sanduku", "la", "nalo"), ("hat", "kofia", "ya", "nayo"), ("chair", "kiti", "cha", "nacho"),
    ("bag", "mfuko", "wa", "nao"), ("shoe", "kiatu", "cha", "nacho"), ("kite", "tiara", "ya", "nayo"),
]  # fmt: skip
# category_en, category_sw, demonstrative "these are", number agreement for 2..4, items (en, sw)
LISTS = [
    ("colours", "rangi", "Hizi ni", {2: "mbili", 3: "tatu", 4: "nne"}, COLOURS),
    ("fruits", "matunda", "Haya ni", {2: "mawili", 3: "matatu", 4: "manne"},
     [("mango", "embe"), ("banana", "ndizi"), ("orange", "chungwa"), ("pineapple", "nanasi"),
      ("lemon", "limau"), ("coconut", "nazi"), ("papaya", "papai"), ("apple", "tufaha")]),
    ("animals", "wanyama", "Hawa ni", {2: "wawili", 3: "watatu", 4: "wanne"},
     [(a[0], a[1]) for a in ANIMALS if a[3] == "animal"]),
    ("things in a kitchen", "vitu vya jikoni", "Hivi ni", {2: "viwili", 3: "vitatu", 4: "vinne"},
     [("pot", "sufuria"), ("knife", "kisu"), ("spoon", "kijiko"), ("plate", "sahani"),
      ("cup", "kikombe"), ("stove", "jiko"), ("bowl", "bakuli")]),
    ("countries in Africa", "nchi za Afrika", "Hizi ni", {2: "mbili", 3: "tatu", 4: "nne"},
     [("Kenya", "Kenya"), ("Tanzania", "Tanzania"), ("Uganda", "Uganda"), ("Egypt", "Misri"),
      ("Nigeria", "Nigeria"), ("Ghana", "Ghana"), ("Ethiopia", "Ethiopia"), ("Rwanda", "Rwanda")]),
]  # fmt: skip
CAPITALS = [
    ("Kenya", "Kenya", "Nairobi"), ("Tanzania", "Tanzania", "Dodoma"), ("Uganda", "Uganda", "Kampala"),
    ("Rwanda", "Rwanda", "Kigali"), ("Ethiopia", "Ethiopia", "Addis Ababa"), ("Egypt", "Misri", "Cairo"),
    ("Nigeria", "Nigeria", "Abuja"), ("Ghana", "Ghana", "Accra"), ("France", "Ufaransa", "Paris"),
    ("Germany", "Ujerumani", "Berlin"), ("Japan", "Japani", "Tokyo"), ("China", "Uchina", "Beijing"),
    ("Italy", "Italia", "Rome"), ("Spain", "Hispania", "Madrid"), ("Brazil", "Brazili", "Brasilia"),
    ("Canada", "Kanada", "Ottawa"),
]  # fmt: skip
DAYS = [
    ("Monday", "Jumatatu"), ("Tuesday", "Jumanne"), ("Wednesday", "Jumatano"), ("Thursday", "Alhamisi"),
    ("Friday", "Ijumaa"), ("Saturday", "Jumamosi"), ("Sunday", "Jumapili"),
]  # fmt: skip
NAMES = [
    "Amina",
    "Juma",
    "Baraka",
    "Neema",
    "Maria",
    "John",
    "Asha",
    "Peter",
    "Zawadi",
    "David",
    "Halima",
    "Musa",
]
FILLERS = [
    ("I hope this helps.", "Natumaini hii inasaidia."),
    ("Let me know if you have another question.", "Niambie kama una swali lingine."),
    ("This is a simple fact.", "Huu ni ukweli rahisi."),
    ("Thank you for asking.", "Asante kwa kuuliza."),
    ("It is good to learn new things.", "Ni vizuri kujifunza mambo mapya."),
]  # fmt: skip

Row = tuple[str, str, str, str]  # prompt_en, response_en, prompt_sw, response_sw


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _join(items: list[str], word: str) -> str:
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def _arithmetic(rng: random.Random) -> Row:
    op = rng.choice(["plus", "minus", "times"])
    if op == "plus":
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        c = a + b
        pe = rng.choice(
            ["What is {a} plus {b}?", "Add {a} and {b}.", "Can you add {a} and {b} for me?"]
        )
        ps = {
            "What": "{a} jumlisha {b} ni ngapi?",
            "Add": "Jumlisha {a} na {b}.",
            "Can": "Unaweza kunijumlishia {a} na {b}?",
        }
        re_, rs = (
            "The answer is {c}. When you add {a} and {b}, you get {c}.",
            "Jibu ni {c}. Ukijumlisha {a} na {b}, unapata {c}.",
        )
    elif op == "minus":
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        c = a - b
        pe = rng.choice(
            ["What is {a} minus {b}?", "Subtract {b} from {a}.", "How much is {a} take away {b}?"]
        )
        ps = {
            "What": "{a} toa {b} ni ngapi?",
            "Subtract": "Toa {b} kutoka {a}.",
            "How": "{a} ukitoa {b} inabaki ngapi?",
        }
        re_, rs = (
            "The answer is {c}. When you take {b} away from {a}, you get {c}.",
            "Jibu ni {c}. Ukitoa {b} kutoka {a}, unapata {c}.",
        )
    else:
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        c = a * b
        pe = rng.choice(
            ["What is {a} times {b}?", "Multiply {a} by {b}.", "How much is {a} multiplied by {b}?"]
        )
        ps = {
            "What": "{a} zidisha {b} ni ngapi?",
            "Multiply": "Zidisha {a} kwa {b}.",
            "How": "{a} ikizidishwa kwa {b} ni ngapi?",
        }
        re_, rs = (
            "The answer is {c}. {a} multiplied by {b} equals {c}.",
            "Jibu ni {c}. {a} ikizidishwa kwa {b} ni sawa na {c}.",
        )
    f = {"a": a, "b": b, "c": c}
    return pe.format(**f), re_.format(**f), ps[pe.split()[0]].format(**f), rs.format(**f)


def _compare(rng: random.Random) -> Row:
    a, b = rng.sample(range(1, 100), 2)
    hi, lo = max(a, b), min(a, b)
    if rng.random() < 0.5:
        return (
            f"Which number is bigger, {a} or {b}?",
            f"The bigger number is {hi}, because {hi} is more than {lo}.",
            f"Namba ipi ni kubwa zaidi, {a} au {b}?",
            f"Namba kubwa zaidi ni {hi}, kwa sababu {hi} ni zaidi ya {lo}.",
        )
    return (
        f"Which number is smaller, {a} or {b}?",
        f"The smaller number is {lo}, because {lo} is less than {hi}.",
        f"Namba ipi ni ndogo zaidi, {a} au {b}?",
        f"Namba ndogo zaidi ni {lo}, kwa sababu {lo} ni chini ya {hi}.",
    )


def _even(rng: random.Random) -> Row:
    n = rng.randint(1, 200)
    pe, ps = f"Is {n} an even number?", f"Je, {n} ni namba shufwa?"
    if n % 2 == 0:
        return (pe, f"Yes, {n} is an even number because it can be divided by two.", ps,
                f"Ndiyo, {n} ni namba shufwa kwa sababu inagawanyika kwa mbili.")  # fmt: skip
    return (pe, f"No, {n} is an odd number because it cannot be divided by two.", ps,
            f"Hapana, {n} ni namba witiri kwa sababu haigawanyiki kwa mbili.")  # fmt: skip


def _count(rng: random.Random) -> Row:
    a = rng.randint(1, 6)
    b = rng.randint(a + 2, min(a + 5, 10))
    en, sw = EN_NUM[a : b + 1], SW_NUM[a : b + 1]
    return (
        f"Count from {EN_NUM[a]} to {EN_NUM[b]} in words.",
        f"Here you go: {', '.join(en)}. That is the whole count.",
        f"Hesabu kutoka {SW_NUM[a]} hadi {SW_NUM[b]} kwa maneno.",
        f"Haya hapa: {', '.join(sw)}. Hiyo ndiyo hesabu yote.",
    )


def _legs(rng: random.Random) -> Row:
    a = rng.choice([x for x in ANIMALS if x[2] is not None])
    en, sw, legs = a[0], a[1], a[2]
    if rng.random() < 0.5:
        pe, ps = f"How many legs does {_a(en)} have?", f"{_cap(sw)} ana miguu mingapi?"
    else:
        pe, ps = f"Tell me how many legs {_a(en)} has.", f"Niambie {sw} ana miguu mingapi."
    return (
        pe,
        f"{_cap(_a(en))} has {EN_NUM[legs]} legs. It uses them to walk and to move around.",
        ps,
        f"{_cap(sw)} ana miguu {SW_LEGS[legs]}. Anaitumia kutembea na kwenda huku na huko.",
    )


def _describe(rng: random.Random) -> Row:
    en, sw, _, ke, ks, ae, as_, he, hs, fe, fs = rng.choice(ANIMALS)
    if rng.random() < 0.5:
        pe, ps = f"Describe the {en}.", f"Eleza kuhusu {sw}."
    else:
        pe, ps = f"Tell me about the {en}.", f"Niambie kuhusu {sw}."
    return (
        pe,
        f"The {en} is {_a(ae)} {ke}. It lives {he} and it eats {fe}.",
        ps,
        f"{_cap(sw)} ni {ks} {as_}. Anaishi {hs} na anakula {fs}.",
    )


def _eat_live(rng: random.Random) -> Row:
    en, sw, _, _, _, _, _, he, hs, fe, fs = rng.choice(ANIMALS)
    if rng.random() < 0.5:
        return (f"What does {_a(en)} eat?", f"{_cap(_a(en))} eats {fe}. It finds its food every day.",
                f"{_cap(sw)} anakula nini?", f"{_cap(sw)} anakula {fs}. Anatafuta chakula chake kila siku.")  # fmt: skip
    return (f"Where does {_a(en)} live?", f"{_cap(_a(en))} lives {he}. That is its home.",
            f"{_cap(sw)} anaishi wapi?", f"{_cap(sw)} anaishi {hs}. Hapo ndipo nyumbani kwake.")  # fmt: skip


def _thing_colour(rng: random.Random) -> Row:
    te, ts, verb, ci = rng.choice(THING_COLOURS)
    ce, cs = COLOURS[ci]
    return (
        f"What colour is {te}?",
        f"{_cap(te)} is {ce}. Most people know this colour well.",
        f"{_cap(ts)} {verb} rangi gani?",
        f"{_cap(ts)} {verb} rangi ya {cs}. Watu wengi wanaijua rangi hii vizuri.",
    )


def _list(rng: random.Random) -> Row:
    ce, cs, dem, agree, items = rng.choice(LISTS)
    k = rng.randint(2, 4)
    picked = rng.sample(items, k)
    v = rng.randrange(3)
    pe = [f"Name {EN_NUM[k]} {ce}.", f"List {EN_NUM[k]} {ce}.", f"Give me {EN_NUM[k]} {ce}."][v]
    head, _, tail = cs.partition(" ")  # the number follows the noun: "vitu vitatu vya jikoni"
    cs_k = f"{head} {agree[k]}" + (f" {tail}" if tail else "")
    ps = [f"Taja {cs_k}.", f"Orodhesha {cs_k}.", f"Nipe {cs_k}."][v]
    return (
        pe,
        f"Here are {EN_NUM[k]} {ce}: {_join([p[0] for p in picked], 'and')}.",
        ps,
        f"{dem} {cs_k}: {_join([p[1] for p in picked], 'na')}.",
    )


def _capital(rng: random.Random) -> Row:
    ce, cs, city = rng.choice(CAPITALS)
    if rng.random() < 0.5:
        pe, ps = f"What is the capital of {ce}?", f"Mji mkuu wa {cs} ni upi?"
    else:
        pe, ps = f"Which city is the capital of {ce}?", f"Ni mji gani ulio mji mkuu wa {cs}?"
    return (pe, f"The capital of {ce} is {city}. It is a large and busy city.", ps,
            f"Mji mkuu wa {cs} ni {city}. Ni mji mkubwa wenye shughuli nyingi.")  # fmt: skip


def _day(rng: random.Random) -> Row:
    i = rng.randrange(7)
    de, ds = DAYS[i]
    if rng.random() < 0.5:
        ne, ns = DAYS[(i + 1) % 7]
        return (f"What day comes after {de}?", f"The day after {de} is {ne}. There are seven days in a week.",
                f"Siku gani inafuata baada ya {ds}?", f"Siku inayofuata baada ya {ds} ni {ns}. Kuna siku saba katika wiki.")  # fmt: skip
    pe_, ps_ = DAYS[(i - 1) % 7]
    return (f"What day comes before {de}?", f"The day before {de} is {pe_}. There are seven days in a week.",
            f"Siku gani inakuja kabla ya {ds}?", f"Siku iliyo kabla ya {ds} ni {ps_}. Kuna siku saba katika wiki.")  # fmt: skip


def _sentence(rng: random.Random) -> Row:
    a = rng.choice(ANIMALS)
    ce, cs = rng.choice(COLOURS)
    oe, os_, gen, with_it = rng.choice(OBJECTS)
    return (
        f"Write a short sentence about {_a(a[0])} and {_a(ce)} {oe}.",
        f"The {a[0]} found {_a(ce)} {oe} and played with it all day long.",
        f"Andika sentensi fupi kuhusu {a[1]} na {os_} {gen} rangi ya {cs}.",
        f"{_cap(a[1])} alipata {os_} {gen} rangi ya {cs} na akacheza {with_it} siku nzima.",
    )


def _greeting(rng: random.Random) -> Row:
    name = rng.choice(NAMES)
    v = rng.randrange(3)
    if v == 0:
        return (f"Hello! My name is {name}. What is your name?",
                f"Nice to meet you, {name}. I am a helpful assistant and I am happy to help you.",
                f"Habari! Jina langu ni {name}. Jina lako ni nani?",
                f"Nafurahi kukutana nawe, {name}. Mimi ni msaidizi na nina furaha kukusaidia.")  # fmt: skip
    if v == 1:
        return (f"Good morning! I am {name}. How are you today?",
                f"Good morning, {name}! I am very well, thank you. How can I help you today?",
                f"Habari za asubuhi! Mimi ni {name}. Hujambo leo?",
                f"Habari za asubuhi, {name}! Sijambo kabisa, asante. Nikusaidie nini leo?")  # fmt: skip
    return (f"Thank you for your help, I am {name}.",
            f"You are welcome, {name}. It was a pleasure to help you.",
            f"Asante kwa msaada wako, mimi ni {name}.",
            f"Karibu sana, {name}. Ilikuwa furaha kukusaidia.")  # fmt: skip


CATEGORIES: list[tuple[Callable[[random.Random], Row], float]] = [
    (_arithmetic, 2.0), (_compare, 1.0), (_even, 1.0), (_count, 0.6), (_legs, 0.6),
    (_describe, 0.8), (_eat_live, 0.8), (_thing_colour, 0.5), (_list, 1.5), (_capital, 0.6),
    (_day, 0.5), (_sentence, 1.5), (_greeting, 0.6),
]  # fmt: skip


def _row_ok(row: dict, lang: str) -> bool:
    cands = ["en", lang]
    return all(
        detect_language(row[k], cands)[0] == "en" for k in ("prompt_en", "response_en")
    ) and all(detect_language(row[k], cands)[0] == lang for k in ("prompt_tgt", "response_tgt"))


def generate_rows(
    n: int,
    seed: int | str = 0,
    lang: str = LANG,
    unique: bool = True,
    exclude: set[str] | frozenset[str] = frozenset(),
    max_tries: int | None = None,
) -> list[dict]:
    """Up to `n` CLO parallel rows, each verified by language ID.

    `unique`: English prompts are distinct. Rows whose English prompt is in `exclude` are skipped.
    """
    if lang != LANG:
        raise ValueError(f"the demo corpus is written for {LANG!r}, got lang={lang!r}")
    rng = random.Random(seed)
    funcs, weights = zip(*CATEGORIES, strict=True)
    rows: list[dict] = []
    seen: set[str] = set()
    tries = 0
    max_tries = max_tries if max_tries is not None else 20 * n
    while len(rows) < n and tries < max_tries:
        tries += 1
        pe, re_, ps, rs = rng.choices(funcs, weights)[0](rng)
        if rng.random() < 0.3:
            fe, fs = rng.choice(FILLERS)
            re_, rs = f"{re_} {fe}", f"{rs} {fs}"
        if pe in exclude or (unique and pe in seen):
            continue
        seen.add(pe)
        row = {"prompt_en": pe, "response_en": re_, "prompt_tgt": ps, "response_tgt": rs}
        if _row_ok(row, lang):
            rows.append({"id": "", "lang": lang, **row})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSONL atomically (temp file, fsync, rename)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def split_rows(
    seed: int = 0, sizes: dict[str, int] | None = None, n_pretrain: int = 3000
) -> dict[str, list[dict]]:
    """Rows split into test/valid/train (distinct prompts) and pretrain.

    Pretraining rows are drawn separately from every category (prompts may repeat, and may be
    train prompts: the CLO data is English SFT data the base model may have seen) and never use
    a test or valid prompt.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    order = ["test", "valid", "train"]
    total = sum(sizes[s] for s in order)
    rows = generate_rows(total, seed=seed)
    if len(rows) < total:
        raise RuntimeError(f"demo corpus: only {len(rows)} distinct rows, {total} requested")
    out, start = {}, 0
    for split in order:
        out[split] = rows[start : start + sizes[split]]
        start += sizes[split]
    held = frozenset(r["prompt_en"] for r in out["test"] + out["valid"])
    out["pretrain"] = generate_rows(n_pretrain, seed=f"pretrain-{seed}", unique=False, exclude=held)
    for split, split_rows_ in out.items():
        for i, r in enumerate(split_rows_):
            r["id"] = f"demo-{split}-{i:05d}"
    return out


def write_demo_data(
    out_dir: str | Path, seed: int = 0, sizes: dict[str, int] | None = None, n_pretrain: int = 3000
) -> dict[str, Path]:
    """Write train/valid/test/pretrain JSONL files of CLO parallel rows into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in split_rows(seed, sizes, n_pretrain).items():
        paths[split] = out_dir / f"{split}.jsonl"
        write_jsonl(paths[split], rows)
    return paths


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file (the demo's own files; the core's loader validates user data)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
