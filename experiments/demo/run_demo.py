"""`make demo`: the project's main job, end to end on the embedded defaults, on a CPU, offline.

    python -m experiments.demo.run_demo --config experiments/demo/config.yaml [--smoke] [--dry-run] [a.b=c ...]

Top to bottom (every stage logs to ``<out>/logs/<stage>.log``; ``<out>`` = ``runs/demo/<time>/``):

  REX-RAG chain (first core)                          AnesBench branch (second core, in parallel)
  1. world     synthetic knowledge world (rexrag API)   a. anes-synth  the CPU miniature's bilingual benchmark and
  2. index     retrieval index over its corpus                         from-scratch base (python -m anessuite synth)
                                                        b. anes-eval-* each model on it, Table 3 layout: the base and
                                                                       the miniature's committed +CPT+SFT model
  3. server    python -m rlcore.retrieval.server on a free 127.0.0.1 port, wait for GET /health
  4. warmup    the committed warm-up policy checked against its SHA256SUMS (experiments/demo/checkpoints.py), or, with
               rexrag.warmup='', sft: an SFT warm-up of a tiny Qwen2 trained from scratch (python -m rexrag sft)
  5. train     REX-RAG against the HTTP server, greedy held-out EM every few steps, then greedy EM per source
               on the test questions (python -m rexrag train)
  6. report    plots, summary.json / summary.md, one MLflow parent run "demo" with every stage's run nested

The server and every subprocess are stopped on success, on a failing stage, on Ctrl-C and on SIGTERM. A failing
stage stops the demo with a message naming the stage and its log file (exit code 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from experiments.demo.report import (
    collect_results,
    format_summary,
    plot_training,
    row_slug,
    stage_runs,
    summary_metrics,
)
from experiments.demo.stages import (
    REPO,
    STOP_GRACE_S,
    StageError,
    Stages,
    cpu_seconds,
    free_port,
    last_lines,
    wait_for_health,
)

logger = logging.getLogger("demo")

# `--smoke`: the same stages on a few examples (tests/experiments/test_demo_e2e.py); applied before the user's
# overrides. BM25 even when a config picks a dense index (no encoder load); the SFT keys act with rexrag.warmup=''.
SMOKE_OVERRIDES = (
    "index.kind=bm25",
    "rexrag.sft_steps=2",
    "rexrag.sft_num_demos=32",
    "rexrag.train_steps=2",
    "rexrag.eval_questions=4",
    "rexrag.heldout_questions=4",
    "anessuite.limit_per_language=2",
    "budget_minutes=3",
)


@dataclass
class IndexConfig:
    """The retrieval index built over the world's corpus (python -m rlcore.retrieval.build)."""

    # bm25 (what the warm-up policy was trained to read) | flat (exact FAISS inner product) | hnsw | ivfpq
    kind: str = "bm25"
    encoder: str = "minilm"  # dense kinds: minilm (embedded all-MiniLM-L6-v2) | hashing:DIM | e5:PATH | PATH


@dataclass
class ServerConfig:
    """The retrieval HTTP server (python -m rlcore.retrieval.server) the training run searches through."""

    port: int = 0  # 0 = a free 127.0.0.1 port chosen at start
    threads: int = (
        1  # torch/FAISS threads of the server (the trainer and the AnesBench branch use the others)
    )
    startup_timeout_s: float = 180.0  # give up when GET /health is not 200 after this long


@dataclass
class RexRagStageConfig:
    """The start policy (a committed warm-up, or an SFT warm-up trained here) and the REX-RAG run on it."""

    # a saved policy folder with a SHA256SUMS manifest: REX-RAG starts from it and no SFT stage runs. The default
    # is experiments/rexrag-cpu-mechanism's warm-up (`make demo-warmup` regenerates it). Empty: SFT from scratch
    warmup: str = "experiments/demo/committed/rexrag-warmup"
    # SFT recipe config (tiny Qwen2 from scratch); only when warmup is empty
    sft_config: str = "packages/rexrag/configs/cpu/sft.yaml"
    # REX-RAG recipe config; its world is the one the demo writes, indexes and serves
    train_config: str = "experiments/rexrag-cpu-mechanism/arms/rexrag.yaml"
    sft_steps: int = 600  # SFT optimizer steps, when warmup is empty
    # demonstrations built for SFT, when warmup is empty; 0 = one per training question
    sft_num_demos: int = 0
    train_steps: int = 40  # REX-RAG training steps (4 prompts x 4 rollouts + probes each)
    heldout_every: int = 10  # greedy held-out EM (dev questions) at step 0 and every N steps
    heldout_questions: int = 100  # dev questions in each held-out evaluation
    eval_questions: int = 150  # greedy evaluation on the first N test questions after training
    sft_overrides: list[str] = field(default_factory=list)  # extra a.b=c for python -m rexrag sft
    train_overrides: list[str] = field(default_factory=list)  # extra a.b=c for python -m rexrag train


@dataclass
class AnesStageConfig:
    """AnesBench-layout evaluation (python -m anessuite eval) on the CPU miniature's benchmark: its from-scratch base
    beside its committed +CPT+SFT model, with the prompt and answer length the miniature's pipeline trained with."""

    config: str = "packages/anessuite/configs/eval_cpu.yaml"  # anessuite eval recipe config
    # the miniature pipeline config whose `prompt` and `eval.max_new_tokens` the evaluation uses
    pipeline_config: str = "experiments/anessuite-cpu-miniature/pipeline_r6.yaml"
    # anessuite synth --design: the benchmark and the from-scratch base (seed = seed)
    design: str = "miniature3"
    # table rows, "LABEL=MODEL": MODEL "base" is the from-scratch base the synth stage writes; else a model folder
    # (checked against its SHA256SUMS when it is one of experiments/demo/committed/) or an embedded model name
    models: list[str] = field(
        default_factory=lambda: ["base=base", "+CPT+SFT=experiments/demo/committed/anessuite-cpt-sft"]
    )

    # generate (greedy answers; the miniature's models answer with the option's text) | loglik
    mode: str = "generate"
    limit_per_language: int = 0  # first N questions per language; 0 = all (300 EN + 300 ZH)
    threads: int = 1  # torch threads (OMP_NUM_THREADS) of each evaluation process
    overrides: list[str] = field(default_factory=list)  # extra a.b=c for python -m anessuite eval

    def rows(self) -> dict[str, str]:
        """``models`` as {label: model}; a row without "=" or a repeated label is a config error."""
        rows: dict[str, str] = {}
        for entry in self.models:
            label, sep, model = entry.partition("=")
            if not sep or not label or not model or label in rows:
                raise ValueError(f"anessuite.models: expected distinct 'LABEL=MODEL' entries, got {entry!r}")
            rows[label] = model
        return rows


@dataclass
class DemoConfig:
    """End-to-end demo: world -> index -> HTTP retrieval server -> SFT -> REX-RAG -> eval, plus AnesBench eval."""

    seed: int = 0  # one seed for the world, SFT, REX-RAG and the AnesBench world/bootstrap
    output_dir: str = ""  # run folder; empty = <runs root>/demo/<YYYYmmdd-HHMMSS>
    experiment: str = "demo"  # MLflow experiment of the parent run and of every stage's run
    parallel: bool = True  # run the AnesBench branch next to the REX-RAG chain (2 cores: one each)
    budget_minutes: float = 10.0  # warn when the whole demo takes longer than this
    index: IndexConfig = field(default_factory=IndexConfig)  # retrieval index
    server: ServerConfig = field(default_factory=ServerConfig)  # retrieval HTTP server
    rexrag: RexRagStageConfig = field(default_factory=RexRagStageConfig)  # SFT + REX-RAG training + eval
    anessuite: AnesStageConfig = field(default_factory=AnesStageConfig)  # AnesBench-layout evaluation


def check_retrieval(url: str, corpus: Path, count: int = 8) -> dict[str, int]:
    """Ask the server for the titles of the first ``count`` passages; each should come back at rank 1.

    Catches a wrong index or a broken server before minutes of training are spent on it."""
    from rlcore.retrieval import RetrievalClient

    titles = []
    with corpus.open(encoding="utf-8") as handle:
        for line in handle:
            titles.append(json.loads(line)["contents"].split("\n", 1)[0])
            if len(titles) == count:
                break
    hits = RetrievalClient(url, max_retries=2).search(titles, topk=1)
    found = sum(bool(h) and h[0].contents.split("\n", 1)[0] == t for t, h in zip(titles, hits))
    return {"queries": len(titles), "top1_title_hits": found}


def served_queries(url: str) -> float | None:
    """``retrieval_queries_total`` from the server's Prometheus metrics (proof that training searched over HTTP)."""
    import httpx

    try:
        text = httpx.get(f"{url}/metrics", timeout=5.0).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("retrieval_queries_total"):
            return float(line.split()[-1])
    return None


def make_world(cfg: DemoConfig, world_dir: Path) -> dict[str, Any]:
    """Write the synthetic world exactly as the REX-RAG recipes will read it (same WorldConfig, same folder).

    Without a committed warm-up the SFT config must describe the same world as the training config. ``ensure_world``
    also stamps the folder with the world's config hash, so the recipes reuse it as is."""
    from rexrag.recipes.common import ensure_world
    from rexrag.recipes.sft import SFTConfig
    from rexrag.recipes.train import RexRagTrainConfig
    from rlcore.config import load_config

    train = load_config(
        RexRagTrainConfig,
        REPO / cfg.rexrag.train_config,
        [f"qa.world.dir={world_dir}", f"qa.world.world.seed={cfg.seed}"],
    )
    if not cfg.rexrag.warmup:
        world_overrides = [f"data.dir={world_dir}", f"data.world.seed={cfg.seed}"]
        sft = load_config(SFTConfig, REPO / cfg.rexrag.sft_config, world_overrides)
        if train.qa.world.world != sft.data.world:
            raise ValueError(
                f"{cfg.rexrag.sft_config} (data.world) and {cfg.rexrag.train_config} (qa.world.world) describe "
                f"different worlds: {sft.data.world} vs {train.qa.world.world}"
            )
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    paths = ensure_world(train.qa.world)
    counts = {
        name: sum(1 for _ in paths[name].open(encoding="utf-8")) for name in ("corpus", "train", "test")
    }
    logging.getLogger("demo.world").info("world in %s: %s", world_dir, counts)
    return {
        "dir": str(world_dir),
        "corpus": str(paths["corpus"]),
        **{f"num_{k}": v for k, v in counts.items()},
    }


def check_warmup(policy: Path) -> dict[str, Any]:
    """The committed warm-up folder matches its SHA256SUMS (a Git LFS pointer or a truncated file stops the demo
    here, naming the file); returns what the summary reports about it."""
    from experiments.demo.checkpoints import verify

    entries = verify(policy)
    config = json.loads((policy / "config.json").read_text(encoding="utf-8"))
    logging.getLogger("demo.warmup").info(
        "warm-up policy %s: %d files match SHA256SUMS (weights %s...)",
        policy, len(entries), entries["model.safetensors"][:12],
    )  # fmt: skip
    return {
        "dir": str(policy),
        "weights_sha256": entries["model.safetensors"],
        "layers": config.get("num_hidden_layers"),
        "hidden_size": config.get("hidden_size"),
    }


def miniature_eval_overrides(pipeline_config: str) -> list[str]:
    """`prompt.*` and `generation.max_new_tokens` of ``python -m anessuite eval`` set as the miniature pipeline sets
    them, so a model is asked as it was trained (values JSON-quoted: templates hold newlines and braces)."""
    from anessuite.pipeline.config import PipelineConfig
    from rlcore.config import load_config

    pipe = load_config(PipelineConfig, REPO / pipeline_config)
    prompt = [f"prompt.{f.name}={json.dumps(getattr(pipe.prompt, f.name))}" for f in fields(pipe.prompt)]
    return [*prompt, f"generation.max_new_tokens={pipe.eval.max_new_tokens}"]


def anessuite_branch(cfg: DemoConfig, stages: Stages, out: Path) -> None:
    """The miniature's benchmark and from-scratch base, then one evaluation per model (Table 3 layout)."""
    from experiments.demo.checkpoints import verify_if_committed

    python = sys.executable
    world, base = out / "anessuite" / "world", out / "anessuite" / "base-scratch"
    stages.run("anes-synth", [python, "-m", "anessuite", "synth", "--design", cfg.anessuite.design,
                              "--out", str(world), "--seed", str(cfg.seed), "--scratch-model", str(base)])  # fmt: skip
    asked = miniature_eval_overrides(cfg.anessuite.pipeline_config) if cfg.anessuite.pipeline_config else []
    threads = str(cfg.anessuite.threads)
    for label, model in cfg.anessuite.rows().items():
        path = base if model == "base" else (REPO / model if (REPO / model).exists() else None)
        if path is not None:
            verify_if_committed(path)
        slug = row_slug(label)
        argv = [
            python, "-m", "anessuite", "eval", "--config", cfg.anessuite.config,
            f"model={path or model}", f"model_name={label}", f"benchmark={world / 'benchmark'}",
            f"generation.mode={cfg.anessuite.mode}", f"output_dir={out / 'anessuite' / f'eval-{slug}'}",
            f"cache_dir={out / 'anessuite' / 'cache'}", f"tracking.experiment={cfg.experiment}", f"seed={cfg.seed}",
            *asked,
        ]  # fmt: skip
        if cfg.anessuite.limit_per_language:
            argv.append(f"limit_per_language={cfg.anessuite.limit_per_language}")
        stages.run(
            f"anes-eval-{slug}",
            argv + cfg.anessuite.overrides,
            env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
        )


def rexrag_chain(cfg: DemoConfig, stages: Stages, out: Path, facts: dict[str, Any]) -> None:
    """World -> index -> server (health) -> SFT -> REX-RAG training + greedy eval over HTTP -> server stopped."""
    python = sys.executable
    world_dir = out / "world"
    facts["world"] = stages.call("world", lambda: make_world(cfg, world_dir))
    index_dir = out / "index"
    build = [python, "-m", "rlcore.retrieval.build", "--corpus", str(world_dir / "corpus.jsonl"),
             "--out", str(index_dir), "--kind", cfg.index.kind, "--device", "cpu"]  # fmt: skip
    if cfg.index.kind != "bm25":
        build += ["--encoder", cfg.index.encoder]
    stages.run("index", build)

    port = cfg.server.port or free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [python, "-m", "rlcore.retrieval.server", "--index", str(index_dir), "--kind", cfg.index.kind,
             "--host", "127.0.0.1", "--port", str(port), "--threads", str(cfg.server.threads),
             "--device", "cpu", "--log-level", "warning"]  # fmt: skip
    logger.info("[server] start: %s", shlex.join(serve))
    started = time.perf_counter()
    server = stages.popen("server", serve)
    facts["server"] = {"url": url, "pid": server.pid, "kind": cfg.index.kind}
    try:
        health = wait_for_health(
            url, server, cfg.server.startup_timeout_s, "server", stages.log_path("server"), stages.abort
        )
        stages.seconds["server"] = time.perf_counter() - started
        facts["server"]["passages"] = health.get("passages")
        check = check_retrieval(url, world_dir / "corpus.jsonl")
        facts["server"]["self_check"] = check
        logger.info(
            "[server] healthy in %.1fs at %s (%s passages); self-check: %d/%d titles at rank 1",
            stages.seconds["server"], url, health.get("passages"), check["top1_title_hits"], check["queries"],
        )  # fmt: skip
        if check["top1_title_hits"] == 0:
            raise StageError(
                "server", stages.log_path("server"), f"/retrieve self-check found nothing: {check}"
            )

        if cfg.rexrag.warmup:
            policy = (REPO / cfg.rexrag.warmup).resolve()
            facts["warmup"] = stages.call("warmup", lambda: check_warmup(policy))
        else:
            policy = out / "sft" / "model"
            sft = [python, "-m", "rexrag", "sft", "--config", cfg.rexrag.sft_config,
                   f"data.dir={world_dir}", f"data.world.seed={cfg.seed}", f"train.output_dir={policy.parent}",
                   f"train.total_steps={cfg.rexrag.sft_steps}", f"train.seed={cfg.seed}", "eval.num_questions=0",
                   f"tracking.experiment={cfg.experiment}"]  # fmt: skip
            if cfg.rexrag.sft_num_demos:
                sft.append(f"train.num_demos={cfg.rexrag.sft_num_demos}")
            stages.run("sft", sft + cfg.rexrag.sft_overrides)

        train = [python, "-m", "rexrag", "train", "--config", cfg.rexrag.train_config,
                 f"model.path={policy}", f"qa.world.dir={world_dir}", f"qa.world.world.seed={cfg.seed}",
                 "retriever.kind=http", f"retriever.url={url}", f"train.total_steps={cfg.rexrag.train_steps}",
                 f"train.seed={cfg.seed}", f"rexrag.seed={cfg.seed}", f"train.output_dir={out / 'rexrag'}",
                 "train.resume=never", f"qa.max_eval_examples={cfg.rexrag.eval_questions}",
                 "final_eval.enabled=true", "final_eval.greedy=true", "heldout_curve.split=dev",
                 f"heldout_curve.every={cfg.rexrag.heldout_every}",
                 f"heldout_curve.max_examples={cfg.rexrag.heldout_questions}",
                 f"tracking.experiment={cfg.experiment}"]  # fmt: skip
        try:
            stages.run("train", train + cfg.rexrag.train_overrides)
        except StageError as err:
            if server.poll() is not None:  # the real cause: training lost its retriever
                reason = f"server exited with code {server.returncode} while '{err.stage}' ran ({err.log})"
                raise StageError("server", stages.log_path("server"), reason) from err
            raise
        served = served_queries(url)
        facts["server"]["queries_served"] = served
        if served is not None:  # what the training rollouts and the greedy evaluation asked for
            facts["server"]["training_queries"] = served - check["queries"]
    finally:
        stages.cpu_seconds["server"] = cpu_seconds(server.pid)
        code = stages.stop(server)
        facts["server"]["exit_code"] = code
        logger.info("[server] stopped (exit code %s)", code)


def run(cfg: DemoConfig, t0: float | None = None) -> int:
    """The demo; ``t0`` (perf_counter at the start of main) makes the total include start-up and imports."""
    from rlcore.models import EMBEDDED_MODELS, cache_dir
    from rlcore.runs import runs_root
    from rlcore.tracking import PARENT_ENV, TAGS_ENV, start_run, tracking_uri, write_results_json

    t0 = time.perf_counter() if t0 is None else t0
    demo_id = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.output_dir) if cfg.output_dir else runs_root() / "demo" / demo_id
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"demo: output folder {out} is not empty; pass output_dir=<new folder>")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
    stages = Stages(out, env)
    facts: dict[str, Any] = {}
    uri = tracking_uri()
    model_cache = "n/a (no embedded model)"
    embedded = [m for m in cfg.anessuite.rows().values() if m in EMBEDDED_MODELS]
    if embedded:  # built into ~/.cache/rlcore on first use, inside its anes-eval stage
        model_cache = "reused" if all((cache_dir() / m).is_dir() for m in embedded) else "built in this run"
    logger.info("demo %s -> %s (MLflow %s)", demo_id, out, uri)
    start = f"warm-up {cfg.rexrag.warmup}" if cfg.rexrag.warmup else f"SFT ({cfg.rexrag.sft_steps} steps)"
    logger.info(
        "plan: world -> index (%s) -> retrieval server -> %s -> REX-RAG (%d steps) + greedy eval (%d q)"
        " | %s AnesBench branch: synth -> eval (%s, %s)",
        cfg.index.kind, start, cfg.rexrag.train_steps, cfg.rexrag.eval_questions,
        "parallel" if cfg.parallel else "then", ", ".join(cfg.anessuite.rows()), cfg.anessuite.mode,
    )  # fmt: skip
    status, error = "FAILED", None
    nested: list[dict] = []
    with start_run(cfg.experiment, run_name=f"demo-{demo_id}", config=cfg, seeds=[cfg.seed],
                   tags={"demo.id": demo_id, "out_dir": str(out)}) as parent:  # fmt: skip
        # every stage's own MLflow run (subprocess or in-process) is created as a child of this one
        nesting = {PARENT_ENV: parent.run_id, TAGS_ENV: json.dumps({"demo.id": demo_id})}
        stages.env.update(nesting)
        os.environ.update(nesting)
        branch_error: list[BaseException] = []

        def branch() -> None:
            try:
                anessuite_branch(cfg, stages, out)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                branch_error.append(err)
                stages.abort.set()

        thread = threading.Thread(target=branch, name="anessuite-branch", daemon=True)
        # start-up = interpreter, imports, the MLflow store (created on first use) and the parent run
        stages.seconds["startup"], stages.cpu_seconds["startup"] = (
            time.perf_counter() - t0,
            time.process_time(),
        )
        try:
            if cfg.parallel:
                thread.start()
            rexrag_chain(cfg, stages, out, facts)
            if not cfg.parallel:
                thread.start()
            if thread.is_alive():
                logger.info("REX-RAG chain done; waiting for the AnesBench branch")
            while thread.is_alive():
                thread.join(timeout=0.5)
            if branch_error:
                raise branch_error[0]
            status = "FINISHED"
        except StageError as err:
            error = err
        finally:
            stages.stop_all()
            if thread.is_alive():
                thread.join(timeout=STOP_GRACE_S + 5)
            for name in nesting:
                os.environ.pop(name, None)
            try:
                nested = stage_runs(uri, cfg.experiment, parent.run_id)
            except Exception as err:  # never hide the stage's own error behind a bookkeeping one
                logger.warning("could not list the stage runs under %s: %s", parent.run_id, err)
        if branch_error and (error is None or "another stage failed" in error.reason):
            error = branch_error[0]  # the chain only stopped because the AnesBench branch failed first
        wall = time.perf_counter() - t0
        paths = {
            "summary": out / "summary.md",
            "rexrag eval table": out / "rexrag" / "eval_table.md",
            "rexrag eval json": out / "rexrag" / "eval.json",
            "rexrag predictions": out / "rexrag" / "eval_predictions.jsonl",
            "training plot": plot_training(out),
            **{
                f"anesbench {kind} ({label})": out / "anessuite" / f"eval-{row_slug(label)}" / name
                for label in cfg.anessuite.rows()
                for kind, name in (("table", "table.md"), ("plot", "levels.png"))
            },
            "logs": stages.logs,
        }
        summary = {
            "demo_id": demo_id,
            "status": status,
            "error": None if error is None else str(error),
            "out_dir": str(out),
            "wall_seconds": wall,
            "budget_minutes": cfg.budget_minutes,
            "stage_seconds": {k: round(v, 1) for k, v in stages.seconds.items()} | {"total": round(wall, 1)},
            "stage_cpu_seconds": {k: round(v, 1) for k, v in stages.cpu_seconds.items()}
            | {"total": round(stages.total_cpu_seconds(), 1)},
            "parallel": cfg.parallel,
            "anes_mode": cfg.anessuite.mode,
            "anes_model_cache": model_cache,
            "world": facts.get("world", {}),
            "warmup": facts.get("warmup"),
            "retrieval": {
                "kind": cfg.index.kind,
                "encoder": cfg.index.encoder if cfg.index.kind != "bm25" else None,
                **facts.get("server", {}),
            },  # fmt: skip
            "results": collect_results(out, list(cfg.anessuite.rows())),
            "paths": {k: str(v) for k, v in paths.items() if v is not None and Path(v).exists()},
            "mlflow": {
                "tracking_uri": uri,
                "experiment": cfg.experiment,
                "parent_run_id": parent.run_id,
                "nested_runs": nested,
                "ui_command": "make mlflow-ui",
            },  # fmt: skip
        }
        (out / "summary.md").write_text(format_summary(summary), encoding="utf-8")
        write_results_json(out / "results.json", summary, config=cfg, seeds=[cfg.seed])
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        parent.log_metrics(summary_metrics(summary), step=0)
        for name in ("summary.md", "summary.json", "results.json"):
            parent.log_artifact(out / name)
        for name, path in summary["paths"].items():
            if name in ("training plot", "rexrag eval table"):
                parent.log_artifact(path, "outputs")
            elif name.startswith("anesbench "):  # one folder per model: every model's table is table.md
                parent.log_artifact(path, f"outputs/anessuite-{Path(path).parent.name}")
        print(format_summary(summary), end="", flush=True)
        if error is not None:
            tail = last_lines(error.log) if isinstance(error, StageError) and error.log else ""
            print(f"\ndemo FAILED: {error}\n{tail}", file=sys.stderr, flush=True)
            raise DemoFailed(str(error))
    if wall > cfg.budget_minutes * 60:
        logger.warning("the demo took %.1f min, over its %.0f-minute budget", wall / 60, cfg.budget_minutes)
    logger.info("demo finished in %.1f min: %s", wall / 60, out / "summary.md")
    return 0


class DemoFailed(RuntimeError):
    """Raised inside the parent MLflow run so it closes as FAILED; main() turns it into exit code 1."""


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    from rlcore.config import ConfigError, config_hash, load_config, to_yaml
    from rlcore.logging_utils import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m experiments.demo.run_demo", description=DemoConfig.__doc__
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML merged over the defaults")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--smoke", action="store_true", help="tiny run: " + " ".join(SMOKE_OVERRIDES))
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rexrag.train_steps=10")
    args = parser.parse_args(argv)
    overrides = [*(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides]
    try:
        cfg = load_config(DemoConfig, args.config, overrides)
        cfg.anessuite.rows()
    except (ConfigError, ValueError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(to_yaml(cfg))
        sys.stdout.write(f"# config_hash: {config_hash(cfg)}\n")
        return 0
    setup_logging()

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(cfg, t0)
    except DemoFailed:
        return 1
    except KeyboardInterrupt:
        print("demo interrupted: every started process was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
