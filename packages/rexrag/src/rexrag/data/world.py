"""A seeded synthetic knowledge world: fictional people, places and organisations, a passage corpus about them, and
single-hop, multi-hop (2-3 hops, compositional) and comparison questions.

Every name is generated from syllables, so no fact can be known from pre-training: a model has to search the
corpus. Facts (the schema):

    country.capital -> city          city.country -> country
    person.birth_city -> city        person.birth_year        person.employer -> organisation
    org.founder -> person            org.founded_year         org.headquarters -> city

Question families (``data_source``):

- ``world_1hop``: one fact of one entity ("Where was X born?").
- ``world_2hop`` / ``world_3hop``: a chain of facts ("In which country was the founder of O born?" = 3 hops).
- ``world_compare``: two entities, one fact each ("Who was born earlier, X or Y?").

``world.exclude_questions`` leaves out families or single relations (``QuestionKind``: "birth_year",
"employer.founder", ...), e.g. those a warm-up cannot read from a passage.

Entities are split between train / dev / test by the *subject* of the question, so test questions ask about
people and organisations that no training question mentions (their facts are only in the corpus).
Surnames repeat on purpose (families), so a search by surname alone returns distractors.
"""

from __future__ import annotations

import difflib
import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, get_args

from rexrag.data.cue import apply_cue
from rexrag.data.qa import QAExample, write_flashrag_jsonl, write_searchr1_parquet
from rexrag.data.template import DEFAULT_TEMPLATE

_ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "sh",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "m"]
_PROFESSIONS = ["chemist", "painter", "engineer", "historian", "sailor", "architect", "composer", "botanist"]
_ORG_KINDS = ["Institute", "Works", "Laboratories", "Foundation", "Press", "Guild", "Company", "Observatory"]
_CITY_SUFFIXES = ["ford", "holm", "vale", "port", "mere", "by"]
_COUNTRY_SUFFIXES = ["ia", "land", "mark", "ora"]
CITY_SUFFIXES, COUNTRY_SUFFIXES = tuple(_CITY_SUFFIXES), tuple(_COUNTRY_SUFFIXES)
SPLITS = ("train", "dev", "test")
FAMILIES = ("world_1hop", "world_2hop", "world_3hop", "world_compare")
# what ``world.exclude_questions`` can name: a family, or one question relation, named by the chain of facts it
# follows from its subject ("employer.founder": who founded the organisation X works for; "compare.birth_year":
# who was born earlier, X or Y)
QuestionKind = Literal[
    "world_1hop",
    "world_2hop",
    "world_3hop",
    "world_compare",
    "birth_city",
    "employer",
    "birth_year",
    "founder",
    "headquarters",
    "country",
    "birth_city.country",
    "employer.founder",
    "headquarters.country",
    "founder.birth_city",
    "founder.birth_city.country",
    "employer.headquarters.country",
    "compare.birth_year",
    "compare.founded_year",
]
QUESTION_KINDS: tuple[str, ...] = get_args(QuestionKind)
FAMILY_RELATIONS = {
    "world_1hop": ("birth_city", "employer", "birth_year", "founder", "headquarters", "country"),
    "world_2hop": ("birth_city.country", "employer.founder", "headquarters.country", "founder.birth_city"),
    "world_3hop": ("founder.birth_city.country", "employer.headquarters.country"),
    "world_compare": ("compare.birth_year", "compare.founded_year"),
}


@dataclass
class WorldConfig:
    """Size and difficulty of a synthetic world."""

    # added after worlds and runs were stored: left out of config hashes while off, so those keep their identity
    IDENTITY_OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = (
        "cue",
        "cue_frac",
        "cue_families",
        "exclude_questions",
    )

    seed: int = 0  # seeds names, facts and questions
    num_countries: int = 6  # countries (each has a capital)
    num_cities: int = 40  # cities, spread over the countries
    num_orgs: int = 90  # organisations
    num_people: int = 300  # people; founders are drawn from them
    num_surnames: int = 150  # distinct surnames (fewer than people -> families share surnames)
    num_train_questions: int = 2000  # questions whose subject is a train entity
    num_dev_questions: int = 200  # dev questions (held-out subjects)
    num_test_questions: int = 300  # test questions (held-out subjects)
    frac_1hop: float = 0.4  # share of single-hop questions
    frac_2hop: float = 0.3  # share of 2-hop compositional questions
    frac_3hop: float = 0.15  # share of 3-hop compositional questions
    frac_compare: float = 0.15  # share of comparison questions
    heldout_frac: float = 0.3  # share of people/orgs/cities reserved as dev+test subjects
    # at most this many questions per subject entity (a comparison counts for both of its entities); 0 = no
    # limit. 1 makes every question ask about a new subject, so RL cannot profit from learning subjects by heart
    max_questions_per_subject: int = 0
    # a fixed prefix (e.g. "Guess:") put before a seeded share ``cue_frac`` of the questions of ``cue_families``
    # (empty = every family), chosen per question by a hash of (seed, split, question id): the same questions
    # with and without a cue that does not change what has to be read. Off by default ("" / 0.0), and the
    # question draw never depends on it, so worlds written without a cue stay identical
    cue: str = ""
    cue_frac: float = 0.0
    cue_families: list[str] = field(default_factory=list)
    # families and question relations (``QuestionKind``) no split asks: their candidates are dropped before the
    # draw and a whole family left out gives its ``frac_*`` share to the others. Empty (the default) draws exactly
    # the questions of worlds written before this key existed
    exclude_questions: list[QuestionKind] = field(default_factory=list)


@dataclass
class World:
    """The generated entities and facts (plain dicts, JSON-serialisable)."""

    countries: dict[str, dict] = field(default_factory=dict)
    cities: dict[str, dict] = field(default_factory=dict)
    orgs: dict[str, dict] = field(default_factory=dict)
    people: dict[str, dict] = field(default_factory=dict)
    # entity name -> train/dev/test (question subjects)
    split_of: dict[str, str] = field(default_factory=dict)


def excluded_questions(cfg: WorldConfig) -> frozenset[str]:
    """``cfg.exclude_questions`` as a set, each entry checked against ``QuestionKind``."""
    for name in cfg.exclude_questions:
        if name not in QUESTION_KINDS:
            close = difflib.get_close_matches(str(name), QUESTION_KINDS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            valid = ", ".join(QUESTION_KINDS)
            raise ValueError(
                f"world.exclude_questions: unknown question kind {name!r}{hint} (valid: {valid})"
            )
    return frozenset(cfg.exclude_questions)


class _Names:
    """Unique pronounceable names from syllables."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        return "".join(
            self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
            for _ in range(syllables)
        ).capitalize()

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(10_000):
            name = make()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("could not draw a fresh name; reduce the world size")


def name_word(rng: random.Random, syllables: int) -> str:
    """One capitalised word of ``syllables`` syllables, drawn as the world draws its names."""
    return _Names(rng).word(syllables)


def build_world(cfg: WorldConfig) -> World:
    """Draw entities and facts deterministically from ``cfg.seed``."""
    if cfg.num_cities < cfg.num_countries or cfg.num_people < 2 or cfg.num_orgs < 2:
        raise ValueError("world needs num_cities >= num_countries, >= 2 people and >= 2 organisations")
    rng = random.Random(cfg.seed)
    names = _Names(rng)
    world = World()
    countries = [
        names.unique(lambda: names.word(2) + rng.choice(_COUNTRY_SUFFIXES)) for _ in range(cfg.num_countries)
    ]
    cities = [names.unique(lambda: names.word(1) + rng.choice(_CITY_SUFFIXES)) for _ in range(cfg.num_cities)]
    for i, city in enumerate(cities):  # the first len(countries) cities are the capitals
        country = countries[i] if i < len(countries) else rng.choice(countries)
        world.cities[city] = {"country": country}
    for i, country in enumerate(countries):
        world.countries[country] = {"capital": cities[i]}
    surnames = [names.unique(lambda: names.word(2)) for _ in range(cfg.num_surnames)]
    people = [
        names.unique(lambda: f"{names.word(rng.choice([1, 2]))} {rng.choice(surnames)}")
        for _ in range(cfg.num_people)
    ]
    orgs = [names.unique(lambda: f"{names.word(2)} {rng.choice(_ORG_KINDS)}") for _ in range(cfg.num_orgs)]
    founders = rng.sample(people, min(len(orgs), len(people)))
    for i, org in enumerate(orgs):
        world.orgs[org] = {
            "founder": founders[i % len(founders)],
            "founded_year": rng.randint(1800, 1990),
            "headquarters": rng.choice(cities),
        }
    for person in people:
        world.people[person] = {
            "birth_city": rng.choice(cities),
            "birth_year": rng.randint(1900, 2000),
            "employer": rng.choice(orgs),
            "profession": rng.choice(_PROFESSIONS),
        }
    for group in (people, orgs, cities):
        shuffled = group[:]
        rng.shuffle(shuffled)
        held = max(2, round(cfg.heldout_frac * len(shuffled)))
        for i, name in enumerate(shuffled):
            world.split_of[name] = "train" if i >= held else ("dev" if i < held // 2 else "test")
    return world


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def corpus_passages(world: World) -> list[dict]:
    """One passage per entity in the FlashRAG layout ``{"id", "contents": "Title\\ntext"}``."""
    passages = []
    for name, facts in world.people.items():
        surname = name.split()[-1]
        text = (
            f"{name} is {_article(facts['profession'])} {facts['profession']} born in {facts['birth_city']} in {facts['birth_year']}. "
            f"{surname} works for {facts['employer']}."
        )
        passages.append((name, text))
    for name, facts in world.orgs.items():
        text = (
            f"{name} was founded in {facts['founded_year']} by {facts['founder']}. "
            f"Its headquarters are in {facts['headquarters']}."
        )
        passages.append((name, text))
    for name, facts in world.cities.items():
        passages.append((name, f"{name} is a city in {facts['country']}."))
    for name, facts in world.countries.items():
        passages.append((name, f"{name} is a country. Its capital is {facts['capital']}."))
    return [{"id": str(i), "contents": f"{title}\n{text}"} for i, (title, text) in enumerate(passages)]


def _question_makers(
    world: World,
) -> dict[str, list[tuple[str, str, Callable[[str], tuple[str, str, list[str]]]]]]:
    """Per family, (subject kind, relation, function subject -> (question, answer, hop entities)). Subjects: people
    or orgs (or cities); the relation is the chain of facts the question follows (a ``QuestionKind``)."""
    people, orgs, cities = world.people, world.orgs, world.cities
    one = [
        ("person", "birth_city", lambda p: (f"Where was {p} born?", people[p]["birth_city"], [p])),
        (
            "person",
            "employer",
            lambda p: (f"Which organization does {p} work for?", people[p]["employer"], [p]),
        ),
        (
            "person",
            "birth_year",
            lambda p: (f"In which year was {p} born?", str(people[p]["birth_year"]), [p]),
        ),
        ("org", "founder", lambda o: (f"Who founded {o}?", orgs[o]["founder"], [o])),
        (
            "org",
            "headquarters",
            lambda o: (f"In which city is {o} headquartered?", orgs[o]["headquarters"], [o]),
        ),
        ("city", "country", lambda c: (f"Which country is {c} in?", cities[c]["country"], [c])),
    ]
    two = [
        (
            "person",
            "birth_city.country",
            lambda p: (
                f"In which country was {p} born?",
                cities[people[p]["birth_city"]]["country"],
                [p, people[p]["birth_city"]],
            ),
        ),
        (
            "person",
            "employer.founder",
            lambda p: (
                f"Who founded the organization that {p} works for?",
                orgs[people[p]["employer"]]["founder"],
                [p, people[p]["employer"]],
            ),
        ),
        (
            "org",
            "headquarters.country",
            lambda o: (
                f"In which country is {o} headquartered?",
                cities[orgs[o]["headquarters"]]["country"],
                [o, orgs[o]["headquarters"]],
            ),
        ),
        (
            "org",
            "founder.birth_city",
            lambda o: (
                f"Where was the founder of {o} born?",
                people[orgs[o]["founder"]]["birth_city"],
                [o, orgs[o]["founder"]],
            ),
        ),
    ]
    three = [
        (
            "org",
            "founder.birth_city.country",
            lambda o: (
                f"In which country was the founder of {o} born?",
                cities[people[orgs[o]["founder"]]["birth_city"]]["country"],
                [o, orgs[o]["founder"], people[orgs[o]["founder"]]["birth_city"]],
            ),
        ),
        (
            "person",
            "employer.headquarters.country",
            lambda p: (
                f"In which country is the organization that {p} works for headquartered?",
                cities[orgs[people[p]["employer"]]["headquarters"]]["country"],
                [p, people[p]["employer"], orgs[people[p]["employer"]]["headquarters"]],
            ),
        ),
    ]
    return {"world_1hop": one, "world_2hop": two, "world_3hop": three}


def _candidates(
    world: World, split: str, rng: random.Random, exclude: frozenset[str] = frozenset()
) -> dict[str, list[tuple[str, str, list[str]]]]:
    """Every distinct question per family whose subject belongs to ``split`` (comparison pairs sampled), less the
    families and relations named in ``exclude`` (the random draws are made as without it)."""
    subjects = {
        kind: sorted(n for n in pool if world.split_of.get(n) == split)
        for kind, pool in (("person", world.people), ("org", world.orgs), ("city", world.cities))
    }
    out: dict[str, list[tuple[str, str, list[str]]]] = {}
    for family, makers in _question_makers(world).items():
        out[family] = [
            make(subject)
            for kind, relation, make in makers
            if family not in exclude and relation not in exclude
            for subject in subjects[kind]
        ]
    compare = []
    for kind, table, year_key, verb in (
        ("person", world.people, "birth_year", "Who was born"),
        ("org", world.orgs, "founded_year", "Which was founded"),
    ):
        dropped = "world_compare" in exclude or f"compare.{year_key}" in exclude
        pool = subjects[kind]
        pairs = [
            (a, b)
            for i, a in enumerate(pool)
            for b in pool[i + 1 :]
            if table[a][year_key] != table[b][year_key]
        ]
        for first, second in pairs:
            if rng.random() < 0.5:
                first, second = second, first
            answer = min((first, second), key=lambda n: table[n][year_key])
            if not dropped:
                compare.append((f"{verb} earlier, {first} or {second}?", answer, [first, second]))
    out["world_compare"] = compare
    return out


def generate_questions(
    world: World, cfg: WorldConfig, split: str, count: int, seed_offset: int
) -> list[QAExample]:
    """``count`` distinct questions whose subjects belong to ``split``, mixed by the ``frac_*`` shares.

    A family with too few distinct questions contributes all it has and the rest is filled from the other
    families (so small held-out splits stay usable). ``metadata`` holds hops and the entity chain.
    """
    rng = random.Random(cfg.seed * 1000 + seed_offset)
    exclude = excluded_questions(cfg)
    candidates = _candidates(world, split, rng, exclude)
    fracs = {
        "world_1hop": cfg.frac_1hop,
        "world_2hop": cfg.frac_2hop,
        "world_3hop": cfg.frac_3hop,
        "world_compare": cfg.frac_compare,
    }
    # a family left out whole (by name or every relation) gives its share to the others
    for family, relations in FAMILY_RELATIONS.items():
        if family in exclude or set(relations) <= exclude:
            fracs[family] = 0.0
    total = sum(fracs.values())
    if total <= 0:
        raise ValueError(
            f"world: the frac_* shares of the families left sum to 0 (exclude_questions: {sorted(exclude)})"
        )
    for family in candidates:
        rng.shuffle(candidates[family])
    cap = cfg.max_questions_per_subject
    if cap < 0:
        raise ValueError(f"world.max_questions_per_subject must be >= 0, got {cap}")
    used: dict[str, int] = defaultdict(int)

    def admit(family: str, question: tuple[str, str, list[str]]) -> bool:
        subjects = question[2][:2] if family == "world_compare" else question[2][:1]
        if any(used[name] >= cap for name in subjects):
            return False
        for name in subjects:
            used[name] += 1
        return True

    chosen: list[tuple[str, tuple[str, str, list[str]]]] = []
    for family, frac in fracs.items():
        quota = round(count * frac / total)
        if cap:  # the first questions of the family's order whose subjects are still free
            picked, rest = [], []
            for question in candidates[family]:
                (picked if len(picked) < quota and admit(family, question) else rest).append(question)
            chosen += [(family, q) for q in picked]
            candidates[family] = rest
        else:  # the original draw: worlds written before the limit existed stay identical
            take = min(len(candidates[family]), quota)
            chosen += [(family, q) for q in candidates[family][:take]]
            candidates[family] = candidates[family][take:]
    leftovers = [(family, q) for family in fracs for q in candidates[family]]
    rng.shuffle(leftovers)
    if cap:
        for family, question in leftovers:
            if len(chosen) >= count:
                break
            if admit(family, question):
                chosen.append((family, question))
    else:
        chosen += leftovers[: max(0, count - len(chosen))]
    if len(chosen) < count:
        raise ValueError(
            f"world too small for {count} distinct {split} questions (got {len(chosen)}); "
            "increase num_people / num_orgs or heldout_frac (or world.max_questions_per_subject)"
        )
    chosen = chosen[:count]
    rng.shuffle(chosen)
    return [
        QAExample(
            question, [answer], family, str(i), metadata={"hops": len(chain), "chain": chain, "split": split}
        )
        for i, (family, (question, answer, chain)) in enumerate(chosen)
    ]


def write_world(cfg: WorldConfig, out_dir: str | Path, template: str = DEFAULT_TEMPLATE) -> dict[str, Path]:
    """Write ``corpus.jsonl``, ``world.json`` and per split ``<split>.jsonl`` (FlashRAG) + ``<split>.parquet``
    (Search-R1). Returns the written paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = build_world(cfg)
    paths = {"corpus": out / "corpus.jsonl", "world": out / "world.json"}
    with paths["corpus"].open("w", encoding="utf-8") as handle:
        for passage in corpus_passages(world):
            handle.write(json.dumps(passage) + "\n")
    paths["world"].write_text(json.dumps(world.__dict__, indent=1, sort_keys=True), encoding="utf-8")
    counts = {"train": cfg.num_train_questions, "dev": cfg.num_dev_questions, "test": cfg.num_test_questions}
    for offset, split in enumerate(SPLITS):
        examples = apply_cue(
            generate_questions(world, cfg, split, counts[split], offset), cfg, split, FAMILIES
        )
        paths[split] = out / f"{split}.jsonl"
        write_flashrag_jsonl(examples, paths[split])
        write_searchr1_parquet(examples, out / f"{split}.parquet", template, split)
        paths[f"{split}_parquet"] = out / f"{split}.parquet"
    return paths
