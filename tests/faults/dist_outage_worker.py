"""Subprocess body of the two-process outage test: one rank of a REX-RAG training over HTTP retrieval.

usage: python dist_outage_worker.py OUTPUT_DIR WORLD_DIR MODEL_DIR URLS TOTAL_STEPS MAX_OUTAGE_S [KILL_PID]

Started once per rank with ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` set (as torchrun would; gloo on
CPU). ``URLS`` is a comma-separated retrieval server URL per rank. With ``KILL_PID``, rank 1 SIGKILLs that process
(its own retrieval server) right after step 1, so only rank 1 loses its server at step 2. The rollout policy is
the scripted one of ``kill_worker.py`` (every rollout searches); the tiny Qwen2 is trained for real. A retrieval
outage past the budget prints ``OUTAGE <rank> <message>`` and exits with status 2, as the REX-RAG recipe does.
"""

import os
import signal
import sys
from pathlib import Path

from kill_worker import scripted_policy, small_run

from rexrag.recipes.train import RetrieverConfig, open_retriever
from rlcore.generation.testing import ScriptedBackend
from rlcore.logging_utils import setup_logging
from rlcore.retrieval import RetrievalUnavailableError
from rlcore.trainer.grpo import train


def main() -> int:
    setup_logging("WARNING")
    output_dir, world_dir, model_dir = (Path(a) for a in sys.argv[1:4])
    urls, total_steps, max_outage_s = sys.argv[4].split(","), int(sys.argv[5]), float(sys.argv[6])
    kill_pid = int(sys.argv[7]) if len(sys.argv) > 7 else None
    rank = int(os.environ["RANK"])
    cfg, examples, records, tokenizer, method = small_run(
        output_dir, world_dir, model_dir, total_steps, minibatch_size=2, save_every=0
    )

    def after_step(policy, step):
        if kill_pid is not None and rank == 1 and step == 1:
            os.kill(kill_pid, signal.SIGKILL)
        return {}

    retriever = open_retriever(RetrieverConfig(kind="http", url=urls[rank], max_outage_s=max_outage_s), None)
    try:
        result = train(
            cfg,
            records=records,
            retriever=retriever,
            after_rollout=method.after_rollout,
            behaviour_logprobs=method.behaviour_logprobs,
            on_answer=method.on_answer,
            after_step=after_step,
            stateful={"rexrag": method},
            backend=ScriptedBackend(tokenizer, scripted_policy(examples)),
        )
    except RetrievalUnavailableError as err:
        print(f"OUTAGE {rank} {err}", flush=True)
        return 2
    print(f"RANK {rank} LAST_STEP {result.last_step}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
