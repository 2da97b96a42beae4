"""Table-driven tests of the tag protocol (parsing, observations, truncation) and chat prompt encoding."""

from __future__ import annotations

import pytest

from rlcore.rollout import (
    RolloutConfig,
    encode_chat_prompt,
    encode_observation,
    format_observation,
    parse_action,
)
from rlcore.rollout.testing import Passage

CFG = RolloutConfig()


@pytest.mark.parametrize(
    "text, expected",
    [
        # a plain search block; the content is stripped
        ("<think> x </think>\n<search>  who is  </search>", ("search", "who is")),
        # the FIRST complete block decides, even if an answer follows
        ("<search>a</search><answer>b</answer>", ("search", "a")),
        ("<answer>b</answer><search>a</search>", ("answer", "b")),
        # mismatched tags are not a block; the later complete block counts
        ("<search>a</answer> then <answer>c</answer>", ("answer", "c")),
        # multi-line content (DOTALL)
        ("<answer>line1\nline2</answer>", ("answer", "line1\nline2")),
        # an unclosed block is no action
        ("<search> never closed", None),
        # think tags alone are no action
        ("<think>hmm</think>", None),
        # tag names are case-sensitive
        ("<SEARCH>x</SEARCH>", None),
        # an empty block still parses (the engine treats an empty query as invalid)
        ("<search></search>", ("search", "")),
    ],
)
def test_parse_action(text, expected):
    action = parse_action(text, CFG)
    assert (None if action is None else (action.kind, action.content)) == expected


def test_parse_action_offsets_and_tools_off():
    text = "ab<answer> x </answer>cd"
    action = parse_action(text, CFG)
    assert (action.start, action.end) == (2, len(text) - 2)
    single = RolloutConfig(max_turns=1, tools_enabled=False)
    assert parse_action("<search>q</search>", single) is None  # with tools off search blocks are plain text
    assert parse_action("<search>q</search><answer>A</answer>", single).content == "A"


def test_format_observation():
    passages = [
        Passage("1", "Title One\nfirst body"),
        Passage("2", "Title Two\nsecond\nbody"),
        Passage("3", "NoBody"),
    ]
    # title = first line, text = everything after it (inner newlines kept); the joined text is stripped, which
    # removes the last "\n" and, for the body-less third passage, the space after its title too
    assert format_observation(passages, CFG) == (
        "\n\n<information>Doc 1(Title: Title One) first body\nDoc 2(Title: Title Two) second\nbody\n"
        "Doc 3(Title: NoBody)</information>\n\n"
    )
    assert format_observation([], CFG) == "\n\n<information>No documents were found.</information>\n\n"
    # FlashRAG-style dicts work too
    assert format_observation([{"document": {"contents": "T\nbody"}}], CFG) == (
        "\n\n<information>Doc 1(Title: T) body</information>\n\n"
    )


def test_observation_truncation_in_tokens(tok):
    passages = [Passage(str(i), f"Title {i}\n" + "word " * 50) for i in range(3)]
    full, truncated = encode_observation(passages, RolloutConfig(max_obs_tokens=10_000), tok)
    assert not truncated and full == tok.encode(format_observation(passages, CFG), add_special_tokens=False)

    cut, truncated = encode_observation(passages, RolloutConfig(max_obs_tokens=40, obs_truncation="cut"), tok)
    assert truncated and cut == full[:40]

    kept, truncated = encode_observation(passages, RolloutConfig(max_obs_tokens=40), tok)
    head = tok.encode("\n\n<information>", add_special_tokens=False)
    tail = tok.encode("</information>\n\n", add_special_tokens=False)
    assert truncated and len(kept) == 40
    assert kept[: len(head)] == head and kept[-len(tail) :] == tail
    assert tok.decode(kept).startswith("\n\n<information>Doc 1(Title: Title 0) word word")


def test_encode_chat_prompt(tok):
    ids = encode_chat_prompt(tok, [{"role": "user", "content": "hi"}])
    # The project's ChatML template adds the default system turn and opens the assistant turn.
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert tok.decode(ids) == expected
    assert (
        ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    )  # specials are single ids, not spelled out
    assert ids == tok.encode(expected, add_special_tokens=False)
    with pytest.raises(ValueError, match="role"):
        encode_chat_prompt(tok, [{"content": "no role"}])
