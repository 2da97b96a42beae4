"""GRPO/PPO trainer recipe on accelerate (+ DeepSpeed ZeRO) with token-exact multi-turn rollouts.

``train(cfg, ...)`` runs the loop in ``rlcore.trainer.grpo``, one function per phase (``rollouts``, ``scoring``,
``advantages``, ``logprobs``, ``update``, ``reporting``, ``saving``); ``python -m rlcore.trainer --config FILE``
is its CLI. Method code plugs in through plain callables (``after_rollout``, ``behaviour_logprobs``,
``on_answer``, ``after_step``; see ``rlcore.trainer.seams``), never by subclassing.
"""

from rlcore.trainer.config import (
    DataConfig,
    LoRAConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RewardConfig,
    RLTrainConfig,
    TrackingConfig,
    TrainLoopConfig,
)
from rlcore.trainer.grpo import AfterRollout, AfterStep, BehaviourLogprobs, RewardFn, TrainResult, train

__all__ = [
    "AfterRollout",
    "AfterStep",
    "BehaviourLogprobs",
    "DataConfig",
    "LoRAConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "RLTrainConfig",
    "RewardConfig",
    "RewardFn",
    "TrackingConfig",
    "TrainLoopConfig",
    "TrainResult",
    "train",
]
