"""``python -m anessuite eval``: evaluate one model on AnesBench (or any registered MCQ task).

Top to bottom: load items -> build the backend -> open the resumable cache -> generate only what is missing,
appending each response as it arrives -> score everything -> write results.json, tables, chart -> log the
MLflow run. Re-running the same command after a crash finishes the remaining questions only.

    python -m anessuite eval model=smollm2-135m-instruct benchmark=data/anesbench/
    python -m anessuite eval model=Qwen/Qwen2.5-7B-Instruct backend.kind=openai \
        backend.base_url=http://127.0.0.1:8000/v1 benchmark=/data/AnesBench/
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from tqdm.auto import tqdm

from anessuite.backends import ChatBackend
from anessuite.benchmark import benchmark_files, load_items
from anessuite.cache import ResponseCache
from anessuite.mcq import MCQItem
from anessuite.prompts import PromptConfig, build_direct_messages, build_messages
from anessuite.records import file_sha256
from anessuite.score import print_summary, score_to_dir
from anessuite.synthetic.generate import ensure_default_world
from rlcore.config import recipe_main, to_dict
from rlcore.runs import make_run_dir, runs_root
from rlcore.tracking import start_run
from rlcore.tracking_store import MLflowConfig

__all__ = ["BackendConfig", "GenerationConfig", "EvalConfig", "run_eval", "build_backend", "main"]

logger = logging.getLogger(__name__)


@dataclass
class BackendConfig:
    """Which engine produces the responses."""

    # hf (in-process transformers, batched) | vllm (offline engine, GPU) | openai (HTTP server)
    kind: Literal["hf", "vllm", "openai"] = "hf"
    batch_size: int = 16  # hf: prompts per batched forward
    # hf/vllm weights dtype: auto | float32 | bfloat16 | float16
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    base_url: str = "http://127.0.0.1:8000/v1"  # openai: server URL ending in /v1
    served_model: str | None = None  # openai: model name the server expects (default: the `model` field)
    api_key_env: str = "OPENAI_API_KEY"  # openai: environment variable holding the API key (never in configs)
    concurrency: int = 16  # openai: requests in flight
    timeout_s: float = 600.0  # openai: per-request timeout in seconds
    max_retries: int = 4  # openai: retries of 408/409/425/429/500; any other 4xx stops the run at once
    backoff_s: float = 1.0  # openai: first retry delay; doubles each retry (with jitter), capped at 30 s
    max_outage_s: float = 600.0  # openai: ride out an unreachable server / 502/503/504 this long, then stop
    extra_body: dict[str, Any] = field(default_factory=dict)  # openai: extra request fields, e.g. {top_k: 1}
    # chat-template switches, e.g. {enable_thinking: false} (openai: sent to the server; hf/vllm: applied here)
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # openai: max_tokens | max_completion_tokens (endpoints that need it)
    max_tokens_field: str = "max_tokens"
    revision: str | None = None  # openai: your label for the served weights (part of the cache key)
    tensor_parallel_size: int = 1  # vllm: GPUs per model replica
    gpu_memory_utilization: float = 0.9  # vllm: fraction of GPU memory for weights + KV cache


@dataclass
class GenerationConfig:
    """How each question is answered."""

    # generate (zero-shot CoT, greedy) | loglik (argmax log p(letter | prompt), hf only)
    mode: Literal["generate", "loglik"] = "generate"
    max_new_tokens: int = 2048  # generate mode: cap on response tokens (the paper's setting)


@dataclass
class EvalConfig:
    """Evaluate one model on one benchmark with a resumable response cache."""

    # local folder, embedded model name, or hub id (offline: cached only)
    model: str = "smollm2-135m-instruct"
    model_name: str | None = None  # row label in tables (default: last part of `model`)
    benchmark: str = ""  # benchmark file or folder; empty: the embedded synthetic benchmark
    task: str = "anesbench"  # task format (see `python -m anessuite tasks`)
    task_spec: str | None = None  # YAML TaskSpec for a format not in the registry
    languages: list[str] = field(default_factory=lambda: ["en", "zh"])  # languages to evaluate
    limit_per_language: int | None = None  # evaluate only the first N items of each language (smoke runs)
    output_dir: str | None = None  # outputs; default runs/anessuite-eval/<time>-<config hash>/
    cache_dir: str | None = None  # response caches; default <runs root>/anessuite-cache
    # other cache folders whose responses for the same key (weights, benchmark, settings) are reused
    cache_seed_dirs: list[str] = field(default_factory=list)
    bootstrap_iters: int = 1000  # bootstrap replicates for 95% CIs
    seed: int = 0  # bootstrap seed (decoding is greedy)
    # log an MLflow run, in experiment tracking.experiment
    tracking: MLflowConfig = field(default_factory=lambda: MLflowConfig(experiment="anessuite-eval"))
    # which engine produces the responses
    backend: BackendConfig = field(default_factory=BackendConfig)
    # how each question is answered
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # prompt rendering (system prompt, preset)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    # one vocabulary (CONTRIBUTING.md): the old name fails naming the new one; config hashes keep the old spelling,
    # so run folders and caches made before the rename are still found
    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "out_dir": "output_dir",
        "track": "tracking.enabled",
        "experiment": "tracking.experiment",
    }
    IDENTITY_KEEPS_OLD_NAMES: ClassVar[bool] = True


def build_backend(cfg: EvalConfig) -> ChatBackend:
    kind = cfg.backend.kind
    if kind == "hf":
        # heavy and optional here: loads torch, transformers
        from anessuite.backends.hf import HFChatBackend

        return HFChatBackend(
            cfg.model,
            batch_size=cfg.backend.batch_size,
            dtype=cfg.backend.dtype,
            chat_template_kwargs=dict(cfg.backend.chat_template_kwargs),
        )
    if kind == "vllm":
        # heavy and optional here: loads torch, transformers
        from anessuite.backends.vllm_offline import VLLMChatBackend

        return VLLMChatBackend(
            cfg.model,
            tensor_parallel_size=cfg.backend.tensor_parallel_size,
            gpu_memory_utilization=cfg.backend.gpu_memory_utilization,
            dtype=cfg.backend.dtype,
            seed=cfg.seed,
            chat_template_kwargs=dict(cfg.backend.chat_template_kwargs),
        )
    if kind == "openai":
        # heavy and optional here: loads httpx
        from anessuite.backends.openai_compat import OpenAIChatBackend

        return OpenAIChatBackend(
            cfg.backend.base_url,
            cfg.backend.served_model or cfg.model,
            concurrency=cfg.backend.concurrency,
            timeout_s=cfg.backend.timeout_s,
            max_retries=cfg.backend.max_retries,
            backoff_s=cfg.backend.backoff_s,
            api_key_env=cfg.backend.api_key_env,
            extra_body=dict(cfg.backend.extra_body),
            chat_template_kwargs=dict(cfg.backend.chat_template_kwargs),
            max_tokens_field=cfg.backend.max_tokens_field,
            revision=cfg.backend.revision,
            max_outage_s=cfg.backend.max_outage_s,
        )
    raise ValueError(f"backend.kind must be hf, vllm or openai, got {kind!r}")


def _benchmark_hash(path: str) -> str:
    digest = hashlib.sha256()
    for file in benchmark_files(path):
        digest.update(f"{file.name}|{file_sha256(file)}".encode())
    return digest.hexdigest()[:16]


def _generation_hash(cfg: EvalConfig) -> str:
    """What changes a response besides the model and the questions: prompt, decoding, engine."""

    prompt = to_dict(cfg.prompt)
    if prompt.get("preset") == "ours":
        prompt.pop("preset")  # the default adds nothing to the key, so caches written before it stay valid
    for name in ("option_line_en", "option_line_zh"):  # the same for the default option line
        if prompt.get(name) == "{letter}. {text}":
            prompt.pop(name)
    relevant = {
        "prompt": prompt,
        "generation": to_dict(cfg.generation),
        "task": cfg.task,
        "engine": cfg.backend.kind,
        "dtype": cfg.backend.dtype,
    }
    # Settings that change what the model is asked, only when set (so existing cache keys stay valid).
    for name in ("extra_body", "chat_template_kwargs"):
        if getattr(cfg.backend, name):
            relevant[name] = dict(getattr(cfg.backend, name))
    if cfg.backend.max_tokens_field != "max_tokens":
        relevant["max_tokens_field"] = cfg.backend.max_tokens_field
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def select_items(items: Sequence[MCQItem], languages: Sequence[str], limit: int | None) -> list[MCQItem]:
    kept: list[MCQItem] = []
    counts: dict[str, int] = {}
    for item in items:
        if item.language not in languages:
            continue
        if limit is not None and counts.get(item.language, 0) >= limit:
            continue
        counts[item.language] = counts.get(item.language, 0) + 1
        kept.append(item)
    return kept


def _default_benchmark() -> str:
    return str(ensure_default_world()["benchmark"])


def _generate_missing(
    cfg: EvalConfig, backend: ChatBackend, cache: ResponseCache, missing: list[MCQItem]
) -> dict:
    """Run the backend on ``missing`` and append every result to the cache as it arrives."""
    started = time.perf_counter()
    new_tokens = 0
    errors: list[str] = []
    bar = tqdm(total=len(missing), desc=f"eval {cfg.model_name}", unit="item", disable=not missing)
    if cfg.generation.mode == "loglik":
        if not hasattr(backend, "score_letters"):
            raise ValueError(f"generation.mode=loglik needs the hf backend, not {backend.name}")
        built = [build_direct_messages(item, cfg.prompt) for item in missing]
        stream = backend.score_letters(
            [m for m, _ in built], [p for _, p in built], [i.letters for i in missing]
        )
        for index, scores in stream:
            item = missing[index]
            best = max(scores, key=scores.get)
            cache.append(
                [
                    {
                        "key": item.key,
                        "id": item.id,
                        "language": item.language,
                        "response": "",
                        "prediction": best,
                        "letter_logprobs": scores,
                    }
                ],
                sync=False,
            )
            bar.update(1)
    elif cfg.generation.mode == "generate":
        conversations = [build_messages(item, cfg.prompt) for item in missing]
        for index, completion in backend.complete(conversations, cfg.generation.max_new_tokens):
            item = missing[index]
            if completion.error is not None:  # a failed request is never cached: a re-run retries it
                errors.append(f"{item.key}: {completion.error}")
                continue
            new_tokens += completion.num_tokens or 0
            record = {
                "key": item.key,
                "id": item.id,
                "language": item.language,
                "response": completion.text,
                "num_tokens": completion.num_tokens,
                "finish_reason": completion.finish_reason,
            }
            if completion.reasoning is not None:
                record["reasoning"] = completion.reasoning
            cache.append([record], sync=False)
            bar.update(1)
    else:
        raise ValueError(f"generation.mode must be generate or loglik, got {cfg.generation.mode!r}")
    bar.close()
    if errors:
        raise RuntimeError(
            f"{len(errors)} request(s) failed and were not cached (first: {errors[0]}); re-running the same "
            "command retries exactly the items without a response"
        )
    seconds = time.perf_counter() - started
    return {
        "new_items": len(missing),
        "seconds": round(seconds, 3),
        "new_tokens": new_tokens,
        "request_errors": 0,
        "items_per_s": round(len(missing) / seconds, 4) if missing and seconds > 0 else None,
        "tokens_per_s": round(new_tokens / seconds, 2) if new_tokens and seconds > 0 else None,
    }


def run_eval(cfg: EvalConfig, backend: ChatBackend | None = None) -> dict[str, Any]:
    """Evaluate, write outputs, return the results dict (with ``output_dir``)."""

    if not cfg.benchmark:
        cfg.benchmark = _default_benchmark()
    if cfg.model_name is None:
        cfg.model_name = Path(cfg.model.rstrip("/")).name or cfg.model
    items = select_items(
        load_items(cfg.benchmark, cfg.task, cfg.languages, cfg.task_spec),
        cfg.languages,
        cfg.limit_per_language,
    )
    if not items:
        raise ValueError(f"{cfg.benchmark}: no items for languages {cfg.languages}")
    backend = backend if backend is not None else build_backend(cfg)
    cache = ResponseCache(
        cfg.cache_dir or runs_root() / "anessuite-cache",
        cfg.model_name,
        backend.fingerprint(),
        _benchmark_hash(cfg.benchmark),
        _generation_hash(cfg),
        meta={"model_spec": cfg.model, "benchmark": cfg.benchmark},
        seed_dirs=cfg.cache_seed_dirs,
    )
    out_dir = Path(cfg.output_dir) if cfg.output_dir else make_run_dir("anessuite-eval", cfg)
    with cache:
        done = cache.load()
        # a failed request recorded by an older version of this cache is asked again, never scored
        missing = [item for item in items if item.key not in done or done[item.key].get("error")]
        logger.info(
            "%s: %d items, %d cached, %d to run (cache %s)",
            cfg.model_name,
            len(items),
            len(items) - len(missing),
            len(missing),
            cache.path,
        )
        timing = _generate_missing(cfg, backend, cache, missing)
        done = cache.load()
    responses = [done[item.key] for item in items]
    extra = {
        "eval": {
            "model": cfg.model,
            "backend": cfg.backend.kind,
            "base_url": cfg.backend.base_url if cfg.backend.kind == "openai" else None,
            "max_new_tokens": cfg.generation.max_new_tokens,
            "prompt_preset": cfg.prompt.preset,
            "mode": cfg.generation.mode,
            "benchmark": cfg.benchmark,
            "cache": str(cache.path),
            "cache_key": cache.cache_key,
            "generation_hash": _generation_hash(cfg),
            **timing,
        },
        "request_errors": sum(1 for r in responses if r.get("error")),
    }
    results = score_to_dir(
        items,
        responses,
        out_dir,
        model_name=cfg.model_name,
        extra=extra,
        bootstrap_iters=cfg.bootstrap_iters,
        seed=cfg.seed,
    )
    (out_dir / "responses.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in responses), encoding="utf-8"
    )
    if cfg.tracking.enabled:
        _log_mlflow(cfg, results, out_dir)
    results["output_dir"] = str(out_dir)
    return results


def _log_mlflow(cfg: EvalConfig, results: dict[str, Any], out_dir: Path) -> None:
    metrics: dict[str, Any] = {
        "overall/accuracy": results["overall"]["accuracy"],
        "avg": results["avg"],
        "overall/abstention_rate": results["overall"]["abstention_rate"],
    }
    for lang, entry in results["by_language"].items():
        for name in ("total", "system1", "system1.x", "system2", "abstention_rate"):
            if entry.get(name) is not None:
                metrics[f"{lang}/{name}"] = entry[name]
    for name in ("items_per_s", "tokens_per_s"):
        if results["eval"].get(name) is not None:
            metrics[f"throughput/{name}"] = results["eval"][name]
    with start_run(
        cfg.tracking.experiment,
        run_name=cfg.model_name,
        config=cfg,
        seeds=[cfg.seed],
        tags={"model": cfg.model, "benchmark": cfg.benchmark},
    ) as run:
        run.log_metrics(metrics, step=0)
        for name in ("results.json", "table.md", "table.csv", "levels.png"):
            run.log_artifact(out_dir / name)


def main(argv: Sequence[str] | None = None) -> int:
    def _run(cfg: EvalConfig) -> int:

        results = run_eval(cfg)
        print(print_summary(results))
        print(Path(results["output_dir"], "table.md").read_text(encoding="utf-8"))
        print(f"outputs: {results['output_dir']}")
        return 0

    return recipe_main(EvalConfig, _run, argv=argv, prog="anessuite eval", description=EvalConfig.__doc__)
