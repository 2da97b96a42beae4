"""Subprocess body of the kill-and-resume test: train, and optionally announce when a step's rollouts are done.

usage: python resume_worker.py OUTPUT_DIR TOTAL_STEPS [ANNOUNCE_STEP ANNOUNCE_FILE]

With ANNOUNCE_STEP, the file is created as soon as that step's rollouts are scored, i.e. in the middle of
the step; the test then sends SIGTERM, so the signal lands mid-step.
"""

import sys
from pathlib import Path

from trainer_helpers import RECORDS, letter_reward, make_cfg

from rlcore.logging_utils import setup_logging
from rlcore.trainer import train


def main() -> None:
    setup_logging("WARNING")
    output_dir, total_steps = Path(sys.argv[1]), int(sys.argv[2])
    announce_step = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    announce_file = Path(sys.argv[4]) if len(sys.argv) > 4 else None

    def announce(trajectories, step):
        if step == announce_step and announce_file is not None:
            announce_file.write_text(str(step))
        return trajectories

    cfg = make_cfg(output_dir, f"train.total_steps={total_steps}", "tracking.enabled=true")
    result = train(cfg, records=RECORDS, reward_fn=letter_reward, after_rollout=announce)
    print(f"LAST_STEP {result.last_step} STOPPED {result.stopped_early} RUN {result.run_id}")


if __name__ == "__main__":
    main()
