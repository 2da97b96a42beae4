"""A seeded, fictional, bilingual clinical-pharmacology world: the embedded default for AnesSuite.

Entities (every name is invented, so a pretrained model cannot know the answers; EN and ZH names are aligned):

* drugs, each with a class, a clearance organ, a characteristic adverse effect and an onset speed;
* procedures, each requiring one drug class;
* patient conditions, each with a rule that excludes drugs by clearance organ or by adverse effect.

Questions built on it have three cognitive levels, mirroring AnesBench:

* System 1   - recall one fact ("Which organ clears Velozine?");
* System 1.x - apply one rule to known facts ("A patient has renal failure: which drug must be avoided?");
* System 2   - a multi-step decision (procedure -> required class -> candidate drugs -> exclude by the
  patient's condition -> the one drug left).

Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Drug", "Procedure", "Condition", "World", "build_world", "CLASSES", "ORGANS", "EFFECTS"]

# (english, chinese) pairs
CLASSES = {
    "sedative": ("sedative-hypnotic", "镇静催眠药"),
    "opioid": ("opioid analgesic", "阿片类镇痛药"),
    "relaxant": ("neuromuscular blocker", "神经肌肉阻滞药"),
    "local": ("local anesthetic", "局部麻醉药"),
    "pressor": ("vasopressor", "血管加压药"),
    "antiemetic": ("antiemetic", "止吐药"),
}
ORGANS = {
    "liver": ("the liver", "肝脏"),
    "kidney": ("the kidneys", "肾脏"),
    "plasma": ("plasma esterases", "血浆酯酶"),
    "lung": ("the lungs", "肺"),
}
EFFECTS = {
    "bradycardia": ("bradycardia", "心动过缓"),
    "hypotension": ("hypotension", "低血压"),
    "bronchospasm": ("bronchospasm", "支气管痉挛"),
    "hyperkalemia": ("hyperkalemia", "高钾血症"),
    "pruritus": ("pruritus", "瘙痒"),
    "seizures": ("seizures", "癫痫发作"),
}
ONSETS = {
    "fast": ("rapid (under one minute)", "起效迅速（一分钟内）"),
    "slow": ("slow (over five minutes)", "起效缓慢（五分钟以上）"),
}
# condition key -> (english, chinese, rule kind, rule target)
CONDITIONS = {
    "renal_failure": ("end-stage renal failure", "终末期肾衰竭", "organ", "kidney"),
    "cirrhosis": ("decompensated liver cirrhosis", "失代偿期肝硬化", "organ", "liver"),
    "esterase_deficiency": ("plasma esterase deficiency", "血浆酯酶缺乏症", "organ", "plasma"),
    "lung_fibrosis": ("severe pulmonary fibrosis", "重度肺纤维化", "organ", "lung"),
    "asthma": ("brittle asthma", "脆性哮喘", "effect", "bronchospasm"),
    "heart_block": ("second-degree heart block", "二度房室传导阻滞", "effect", "bradycardia"),
    "epilepsy": ("uncontrolled epilepsy", "未控制的癫痫", "effect", "seizures"),
    "burns": ("major burns", "大面积烧伤", "effect", "hyperkalemia"),
}

_EN_HEAD = [
    "Vel",
    "Kor",
    "Nem",
    "Tal",
    "Sor",
    "Bran",
    "Quel",
    "Dav",
    "Mir",
    "Orl",
    "Zen",
    "Pax",
    "Rul",
    "Fen",
    "Gal",
    "Hex",
    "Lom",
    "Tir",
    "Jub",
    "Wex",
]
_EN_MID = ["a", "o", "i", "e", "u"]
_EN_TAIL = ["zine", "drol", "vane", "mide", "tiran", "loxan", "perin", "quor", "dexol", "namib"]
_ZH_HEAD = list("维卡诺普瑞索贝泰格洛米达佐拉西塔奥雷赛福凯")
_ZH_MID = list("拉米西托林达佐尼沙芬")
_ZH_TAIL = list("宁醇胺嗪韦定酮唑")
_PROC_EN = ["Halvorsen", "Mardek", "Ostrava", "Quillon", "Tressel", "Vantry", "Ebbing", "Corwin"]
_PROC_KIND = [
    ("arthroscopy", "关节镜手术"),
    ("bronchoscopy", "支气管镜检查"),
    ("laparotomy", "剖腹手术"),
    ("thyroidectomy", "甲状腺切除术"),
    ("cystoscopy", "膀胱镜检查"),
    ("craniotomy", "开颅手术"),
]
_PROC_ZH = ["哈尔沃森", "马尔德克", "奥斯特拉", "奎隆", "特雷塞尔", "万特里", "埃宾", "科尔文"]


@dataclass(frozen=True)
class Drug:
    key: str
    name_en: str
    name_zh: str
    drug_class: str  # key of CLASSES
    organ: str  # key of ORGANS
    effect: str  # key of EFFECTS
    onset: str  # key of ONSETS

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en


@dataclass(frozen=True)
class Procedure:
    key: str
    name_en: str
    name_zh: str
    drug_class: str  # the class this procedure is performed under

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en


@dataclass(frozen=True)
class Condition:
    key: str
    name_en: str
    name_zh: str
    rule_kind: str  # "organ": avoid drugs cleared by rule_target; "effect": avoid drugs causing rule_target
    rule_target: str

    def name(self, lang: str) -> str:
        return self.name_zh if lang == "zh" else self.name_en

    def excludes(self, drug: Drug) -> bool:
        return (drug.organ if self.rule_kind == "organ" else drug.effect) == self.rule_target


@dataclass
class World:
    seed: int
    drugs: list[Drug]
    procedures: list[Procedure]
    conditions: list[Condition]
    by_class: dict[str, list[Drug]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_class = {key: [d for d in self.drugs if d.drug_class == key] for key in CLASSES}


def _unique_names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Names with pairwise-distinct first syllables in both languages, so no two drugs look alike."""
    if count > min(len(_EN_HEAD), len(_ZH_HEAD)):
        raise ValueError(f"at most {min(len(_EN_HEAD), len(_ZH_HEAD))} drugs can get distinct names")
    heads_en = rng.sample(_EN_HEAD, k=count)
    heads_zh = rng.sample(_ZH_HEAD, k=count)
    return [
        (
            head_en + rng.choice(_EN_MID) + rng.choice(_EN_TAIL),
            head_zh + rng.choice(_ZH_MID) + rng.choice(_ZH_TAIL),
        )
        for head_en, head_zh in zip(heads_en, heads_zh)
    ]


def build_world(seed: int = 0, drugs_per_class: int = 3) -> World:
    """The world for ``seed``. Attributes are assigned so every condition excludes at least one drug of most
    classes and at least one drug of every class stays allowed under every condition (System 2 questions
    need both)."""
    rng = random.Random(seed)
    class_keys = list(CLASSES)
    names = _unique_names(rng, drugs_per_class * len(class_keys))
    organs, effects = list(ORGANS), list(EFFECTS)
    drugs: list[Drug] = []
    for class_index, class_key in enumerate(class_keys):
        chosen_organs = rng.sample(organs, k=min(drugs_per_class, len(organs)))
        chosen_effects = rng.sample(effects, k=min(drugs_per_class, len(effects)))
        for slot in range(drugs_per_class):
            en, zh = names[class_index * drugs_per_class + slot]
            drugs.append(
                Drug(
                    key=f"drug{len(drugs)}",
                    name_en=en,
                    name_zh=zh,
                    drug_class=class_key,
                    organ=chosen_organs[slot % len(chosen_organs)],
                    effect=chosen_effects[slot % len(chosen_effects)],
                    onset=rng.choice(list(ONSETS)),
                )
            )
    procedure_classes = rng.sample(class_keys, k=len(class_keys))
    procedures = [
        Procedure(
            key=f"proc{i}",
            name_en=f"{_PROC_EN[i]} {_PROC_KIND[i][0]}",
            name_zh=f"{_PROC_ZH[i]}{_PROC_KIND[i][1]}",
            drug_class=procedure_classes[i],
        )
        for i in range(len(_PROC_KIND))
    ]
    conditions = [
        Condition(key=k, name_en=v[0], name_zh=v[1], rule_kind=v[2], rule_target=v[3])
        for k, v in CONDITIONS.items()
    ]
    return World(seed=seed, drugs=drugs, procedures=procedures, conditions=conditions)
