"""Body of the 2-process DeepSpeed test, started by `accelerate launch`; prints one line per rank."""

import sys
from pathlib import Path

import torch
from trainer_helpers import RECORDS, letter_reward, make_cfg

from rlcore.logging_utils import setup_logging
from rlcore.trainer import train


def main() -> None:
    setup_logging("WARNING")
    cfg = make_cfg(Path(sys.argv[1]), "train.total_steps=2", "train.save_final_model=true", *sys.argv[2:])
    result = train(cfg, records=RECORDS, reward_fn=letter_reward)
    # ZeRO-2 partitions optimizer state and gradients, but every rank ends with the full, identical weights
    checksum = sum(float(p.detach().double().sum()) for p in result.model.parameters())
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    print(f"RANK {rank} WORLD {world} LAST_STEP {result.last_step} CHECKSUM {checksum:.10e}", flush=True)


if __name__ == "__main__":
    main()
