"""Fresh names for warm-up demonstrations: every entity name a demonstration mentions is replaced by a new draw.

A policy warmed up on a few synthetic worlds sees each name hundreds of times (in questions, searches, passages and
answers), so it can fit the demonstrations by completing names it has memorised: "Shand" is followed by "mur"
because it always was. On a world it has never seen, that policy writes a near-copy of the question's subject into
its search ("Shand Munbol" for "Shandmur Dridis") and retrieves the wrong passage. With ``demos.fresh_names`` every
demonstration gets its own names, drawn from the world's syllables with the same shapes (a first name and a surname,
an organisation word before its kind, a city or country word before its suffix), replaced consistently in the
question, the model's text, the search queries, the retrieved passages and the answer. No name recurs often enough
to be remembered, so the only way to write the right search is to copy the name from the question, and the only way
to write the right answer is to copy it from the passage: the skill a policy needs on held-out subjects.

The retrieval itself is done with the original names (the index is the world's), and only what the model sees is
renamed, so a demonstration stays exactly as correct as before. Years, professions and the organisation kinds are
kept.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from rexrag.data.qa import QAExample
from rexrag.data.world import CITY_SUFFIXES, COUNTRY_SUFFIXES, name_word

# shapes of a name word: how a fresh one is drawn
FIRST, SURNAME, ORG_WORD = "first", "surname", "org"


def world_name_shapes(world: Mapping) -> dict[str, str]:
    """Every name word of a world (``world.json`` as a dict) and its shape: ``first``, ``surname``, ``org``, or
    ``city:<suffix>`` / ``country:<suffix>`` for a whole city or country name."""
    shapes: dict[str, str] = {}
    for person in world.get("people", {}):
        *first, surname = person.split()
        for word in first:
            shapes.setdefault(word, FIRST)
        shapes.setdefault(surname, SURNAME)
    for org in world.get("orgs", {}):
        shapes.setdefault(org.split()[0], ORG_WORD)
    for kind, names, suffixes in (
        ("city", world.get("cities", {}), CITY_SUFFIXES),
        ("country", world.get("countries", {}), COUNTRY_SUFFIXES),
    ):
        for name in names:
            suffix = next((s for s in suffixes if name.endswith(s) and len(name) > len(s)), "")
            shapes.setdefault(name, f"{kind}:{suffix}")
    return shapes


class FreshNames:
    """Renames the name words of one world, a fresh set per demonstration, from ``random.Random(seed)``.

    ``reserved`` text (the prompt template, the pool sentences, the demonstrations' fixed phrases) is never
    renamed: a one-syllable first name such as "So" is also an English word there.
    """

    def __init__(self, shapes: Mapping[str, str], seed: int, reserved: Iterable[str] = ()):
        reserved_words = {w for text in reserved for w in re.findall(r"\w+", text)}
        self.shapes = {word: shape for word, shape in shapes.items() if word not in reserved_words}
        if not self.shapes:
            raise ValueError("fresh names: the world has no entity names to replace")
        self.rng = random.Random(seed)
        words = sorted(self.shapes, key=lambda w: (-len(w), w))
        self.pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, words)) + r")(?!\w)")

    def _draw(self, shape: str, taken: set[str]) -> str:
        for _ in range(1000):
            if shape == FIRST:
                word = name_word(self.rng, self.rng.choice([1, 2]))
            elif shape in (SURNAME, ORG_WORD):
                word = name_word(self.rng, 2)
            else:
                kind, suffix = shape.split(":")
                word = name_word(self.rng, 1 if kind == "city" else 2) + suffix
            if word not in taken and word not in self.shapes:
                return word
        raise RuntimeError(f"fresh names: could not draw a new name of shape {shape!r}")

    def mapper(self):
        """A function ``text -> renamed text`` for one demonstration: the same old name always gets the same new
        name, drawn when the name is first seen; two old names never get the same new one."""
        mapping: dict[str, str] = {}

        def rename(text: str) -> str:
            def sub(match: re.Match) -> str:
                old = match.group(1)
                if old not in mapping:
                    mapping[old] = self._draw(self.shapes[old], set(mapping.values()))
                return mapping[old]

            return self.pattern.sub(sub, text)

        return rename

    def rename_demo(
        self, example: QAExample, segments: list[tuple[str, str]], results: Mapping[str, list]
    ) -> tuple[QAExample, list[tuple[str, str]], dict[str, list]]:
        """The example, the planned segments and the passages of its searches, all renamed with one mapping
        (the question first, so its names are drawn in reading order). ``results`` is keyed by the original
        queries; the returned dict by the renamed ones."""
        rename = self.mapper()
        question = rename(example.question)
        answers = [rename(a) for a in example.golden_answers]
        metadata = dict(example.metadata)
        if "chain" in metadata:
            metadata["chain"] = [rename(entity) for entity in metadata["chain"]]
        renamed_segments, renamed_results = [], {}
        for part, text in segments:
            new_text = rename(text)
            renamed_segments.append((part, new_text))
            if part == "search":
                renamed_results[new_text] = [replace(p, contents=rename(p.contents)) for p in results[text]]
        new_example = replace(example, question=question, golden_answers=answers, metadata=metadata)
        return new_example, renamed_segments, renamed_results
