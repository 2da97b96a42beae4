"""Prompt pools and the prefix trie of the probe-prompt distribution."""

import json
import math

import pytest

from rexrag.pool import PoolError, PromptSampler, available_pools, load_pool, prompt_problem
from rexrag.trie import PromptTrie, TrieLookupError


def test_shipped_pools_load_and_follow_the_style():
    assert set(available_pools()) >= {"self_doubt_30", "self_doubt_15", "self_doubt_5", "paraphrase_30"}
    sizes = {"self_doubt_30": 30, "self_doubt_15": 15, "self_doubt_5": 5, "paraphrase_30": 30}
    for name, size in sizes.items():
        prompts = load_pool(name)  # validates every entry (tag, no closing tag, 12-19 words)
        assert len(prompts) == size and len(set(prompts)) == size, name


def test_subsets_and_paraphrases_relate_to_the_main_pool():
    main = load_pool("self_doubt_30")
    assert set(load_pool("self_doubt_5")) < set(load_pool("self_doubt_15")) < set(main)
    assert not set(load_pool("paraphrase_30")) & set(main)
    # varied openings, as in the official pool (first words after "<think> ")
    first_words = {p.split()[1] for p in main}
    assert len(first_words) >= 15


@pytest.mark.parametrize(
    "prompt, problem",
    [
        ("I may be wrong here and should check the documents again before I answer.", "must start"),
        ("<think> I may be wrong here and should check again before I answer. </think>", "must not contain"),
        ("<think> I may be wrong.", "has 4 words"),
        ("<think> I may be wrong here and should check the documents again before I answer.", None),
    ],
)
def test_prompt_problem(prompt, problem):
    found = prompt_problem(prompt)
    assert (found is None) if problem is None else (problem in found)


def test_bad_pool_files_name_the_file_and_entry(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(["<think> fine " + "word " * 12, "no tag here at all " * 3]))
    with pytest.raises(PoolError, match=r"pool.json: entry 1"):
        load_pool(str(path))
    path.write_text("[1, 2")
    with pytest.raises(PoolError, match="invalid JSON"):
        load_pool(str(path))
    with pytest.raises(PoolError, match="unknown prompt pool"):
        load_pool("no_such_pool")


def test_sampler_is_seeded_and_uniform():
    pool = [f"p{i}" for i in range(5)]
    first, second = PromptSampler(pool, seed=3), PromptSampler(pool, seed=3)
    assert [first.draw() for _ in range(20)] == [second.draw() for _ in range(20)]
    sampler = PromptSampler(pool, seed=0)
    counts = {p: 0 for p in pool}
    for _ in range(5000):
        counts[sampler.draw()] += 1
    assert all(abs(c / 5000 - 0.2) < 0.03 for c in counts.values())


def test_trie_next_token_probabilities_by_hand():
    # pool of 3 entries: [1,2,3], [1,2,4], [1,5]
    trie = PromptTrie([[1, 2, 3], [1, 2, 4], [1, 5]])
    assert trie.num_prompts == 3
    assert trie.next_token_prob([], 1) == 1.0  # every entry starts with 1
    assert trie.next_token_prob([1], 2) == pytest.approx(2 / 3)  # 2 of the 3 continue with 2
    assert trie.next_token_prob([1], 5) == pytest.approx(1 / 3)
    assert trie.next_token_prob([1, 2], 3) == pytest.approx(1 / 2)
    assert trie.next_token_prob([1, 2], 9) == 0.0 and trie.next_token_prob([7], 1) == 0.0
    # shared prefixes merge: nodes are 1, 1-2, 1-2-3, 1-2-4, 1-5 -> 5, not 3 + 3 + 2 = 8
    assert trie.num_prefix_nodes() == 5
    # products: 1 * 2/3 * 1/2 = 1/3 ; 1 * 1/3 = 1/3
    for seq in trie.sequences:
        assert math.exp(trie.sequence_logprob(seq)) == pytest.approx(1 / 3)
    assert trie.next_token_distribution([1]) == pytest.approx({2: 2 / 3, 5: 1 / 3})


def test_trie_duplicates_and_prompts_that_prefix_others():
    # [1,2] listed twice out of 3: P = 2/3 ; [1,3] once: 1/3
    trie = PromptTrie([[1, 2], [1, 2], [1, 3]])
    assert math.exp(trie.sequence_logprob([1, 2])) == pytest.approx(2 / 3)
    assert math.exp(trie.sequence_logprob([1, 3])) == pytest.approx(1 / 3)
    # [1,2] is a strict prefix of [1,2,3]: both reach node 1-2 (count 2); [1,2] stops there with 1/2,
    # [1,2,3] continues with P(3|1,2) = 1/2. Without the stop factor [1,2] would get 1, i.e. not a distribution.
    nested = PromptTrie([[1, 2], [1, 2, 3]])
    assert nested.sequence_logprobs([1, 2]) == pytest.approx([0.0, math.log(0.5)])
    assert nested.sequence_logprobs([1, 2], include_stop=False) == pytest.approx([0.0, 0.0])
    assert nested.sequence_logprobs([1, 2, 3]) == pytest.approx([0.0, 0.0, math.log(0.5)])
    with pytest.raises(TrieLookupError, match="not in the prompt trie"):
        nested.sequence_logprobs([1, 4])


class _WordTokenizer:
    """Whitespace tokenizer with a growing vocabulary; '<think>' splits into three ids like Qwen's BPE does."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def encode(self, text, add_special_tokens=False):
        pieces = []
        for word in text.split(" "):
            pieces.extend(["<", "think", ">"] if word == "<think>" else [" " + word])
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]


@pytest.mark.parametrize("name", ["self_doubt_30", "self_doubt_15", "self_doubt_5", "paraphrase_30"])
def test_trie_over_shipped_pools_is_uniform(name):
    prompts = load_pool(name)
    trie = PromptTrie.from_prompts(prompts, tokenizer=_WordTokenizer())
    for seq in trie.sequences:
        logprobs = trie.sequence_logprobs(seq)
        # the three '<think>' tokens are shared by every prompt -> probability 1 each (the official "1 on the first
        # inserted token" is exactly the trie value for these pools)
        assert logprobs[:3] == pytest.approx([0.0, 0.0, 0.0])
        assert math.exp(sum(logprobs)) == pytest.approx(1 / len(prompts))


@pytest.mark.slow  # loading the Qwen tokenizer takes ~40 s on 2 shared cores
def test_trie_with_the_qwen_tokenizer_is_uniform_over_the_pool():
    from rlcore.models import load_tokenizer

    tokenizer = load_tokenizer("qwen2.5-tokenizer")
    prompts = load_pool("self_doubt_30")
    trie = PromptTrie.from_prompts(prompts, tokenizer)
    first = {seq[0] for seq in trie.sequences}
    assert len(first) == 1  # every prompt starts with the same "<think>" token(s): probability 1
    for seq in trie.sequences:
        assert math.exp(trie.sequence_logprob(seq)) == pytest.approx(1 / 30)
    # shared prefixes are merged: fewer nodes than the total number of tokens
    assert trie.num_prefix_nodes() < sum(len(seq) for seq in trie.sequences)
