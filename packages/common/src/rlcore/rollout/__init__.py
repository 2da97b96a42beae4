"""Token-exact multi-turn rollouts with a search tool (Search-R1 protocol) and single-turn generation.

``RolloutEngine(backend, tokenizer, RolloutConfig(...), retriever).run(prompt_ids, group_ids)`` returns
:class:`Trajectory` objects whose ``response_ids`` are exactly the sampled tokens plus the observation /
feedback / inserted tokens, each tagged with a component code; ``loss_mask()`` keeps MODEL and INSERTED.
"""

from rlcore.rollout.chat import encode_chat_prompt
from rlcore.rollout.config import DEFAULT_INVALID_ACTION_FEEDBACK, RolloutConfig
from rlcore.rollout.engine import OnAnswer, RolloutEngine, rollout_metrics
from rlcore.rollout.probes import clone_before_answer, make_probe_hook, token_index_at_char
from rlcore.rollout.protocol import (
    DEFAULT_SEARCH_INSTRUCTION,
    Action,
    encode_observation,
    format_observation,
    parse_action,
    stop_strings,
)
from rlcore.rollout.trajectory import (
    COMPONENT_NAMES,
    FEEDBACK,
    INSERTED,
    INSERTED_COMPONENTS,
    INSERTED_CONTEXT,
    LOSS_COMPONENTS,
    MODEL,
    OBSERVATION,
    PROMPT,
    Trajectory,
    TrajectoryMismatchError,
    TurnRecord,
    verify_trajectory,
)

__all__ = [
    "COMPONENT_NAMES",
    "DEFAULT_INVALID_ACTION_FEEDBACK",
    "DEFAULT_SEARCH_INSTRUCTION",
    "FEEDBACK",
    "INSERTED",
    "INSERTED_COMPONENTS",
    "INSERTED_CONTEXT",
    "LOSS_COMPONENTS",
    "MODEL",
    "OBSERVATION",
    "PROMPT",
    "Action",
    "OnAnswer",
    "RolloutConfig",
    "RolloutEngine",
    "Trajectory",
    "TrajectoryMismatchError",
    "TurnRecord",
    "clone_before_answer",
    "encode_chat_prompt",
    "encode_observation",
    "format_observation",
    "make_probe_hook",
    "parse_action",
    "rollout_metrics",
    "stop_strings",
    "token_index_at_char",
    "verify_trajectory",
]
