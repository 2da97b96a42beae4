"""Typed config of the rollout engine (loadable with ``rlcore.config.load_config``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RolloutConfig", "DEFAULT_INVALID_ACTION_FEEDBACK"]

# Our own wording; first person because it is appended to the assistant's turn.
DEFAULT_INVALID_ACTION_FEEDBACK = (
    "\nThat step had no valid action. To look something up I must write a query inside <search> and "
    "</search>; to finish I must write the final answer inside <answer> and </answer>.\n"
)


@dataclass
class RolloutConfig:
    """Turn structure, sampling, and the tag protocol of multi-turn rollouts (Search-R1 defaults)."""

    # generation rounds in which search is allowed (with tools off: total rounds, normally 1)
    max_turns: int = 5
    tools_enabled: bool = True  # False: single-turn generation (MCQ GRPO), no parsing of search blocks
    final_turn_without_search: bool = True  # after max_turns, one more round with search disabled
    max_new_tokens_per_turn: int = 500  # sampled tokens per generation call
    # cap on all response tokens (sampled + observations + feedback + inserted)
    max_response_tokens: int = 4096
    max_obs_tokens: int = 500  # cap on one observation's tokens
    retrieval_topk: int = 3  # passages per search
    temperature: float = 1.0  # sampling temperature (0 = greedy)
    top_p: float = 1.0  # nucleus sampling mass (1 = off)
    top_k: int = -1  # top-k filter (-1 = off)
    greedy: bool = False  # arg-max decoding (evaluation)
    # None: global torch RNG (saved by checkpoints); else per-call seeds derived from it
    seed: int | None = None
    stop_at_answer: bool = True  # with tools off, still stop after the first </answer>
    # EOS without an action ends the trajectory (Search-R1 instead feeds back "invalid")
    end_on_eos: bool = True
    # end_on_eos=False: remove the EOS id before the feedback (Search-R1 decodes it away)
    drop_eos_before_feedback: bool = False
    max_start_tokens: int = 0  # keep only the last N prompt tokens (Search-R1 max_start_length; 0 = off)
    think_tag: str = "think"  # reasoning tag (only used in prompts and docs; not parsed)
    search_tag: str = "search"  # the query block: <search> query </search>
    answer_tag: str = "answer"  # the answer block: <answer> text </answer>
    information_tag: str = "information"  # wraps observations
    # {tag} = information_tag; {passages} once
    observation_template: str = "\n\n<{tag}>{passages}</{tag}>\n\n"
    # {index} 1-based, {title} first line, {text} rest
    passage_template: str = "Doc {index}(Title: {title}) {text}\n"
    strip_passages: bool = True  # strip the joined passage text before it goes into the template
    empty_results_text: str = "No documents were found."  # {passages} when the retriever returns nothing
    # keep_wrapper: cut the passages, keep the tags; cut: first max_obs_tokens (Search-R1)
    obs_truncation: str = "keep_wrapper"
    # appended (FEEDBACK) after a turn with no action
    invalid_action_feedback: str = DEFAULT_INVALID_ACTION_FEEDBACK
    verify: bool = True  # run verify_trajectory on every trajectory at the end of run()
    # store each turn's full context and sampled ids (memory heavy; exact diffs)
    debug_keep_contexts: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field on an impossible setting."""
        positive = (
            "max_turns",
            "max_new_tokens_per_turn",
            "max_response_tokens",
            "max_obs_tokens",
            "retrieval_topk",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RolloutConfig.{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.max_start_tokens, int) or self.max_start_tokens < 0:
            raise ValueError(
                f"RolloutConfig.max_start_tokens must be an int >= 0 (0 = off), got {self.max_start_tokens!r}"
            )
        if self.obs_truncation not in ("keep_wrapper", "cut"):
            raise ValueError(
                f"RolloutConfig.obs_truncation must be 'keep_wrapper' or 'cut', got {self.obs_truncation!r}"
            )
        if self.observation_template.count("{passages}") != 1:
            raise ValueError(
                "RolloutConfig.observation_template must contain '{passages}' exactly once, got "
                f"{self.observation_template!r}"
            )
        for name in ("search_tag", "answer_tag", "information_tag"):
            value = getattr(self, name)
            if not value or any(ch in value for ch in "<>/ \n"):
                raise ValueError(f"RolloutConfig.{name} must be a bare tag name like 'search', got {value!r}")
        if not self.tools_enabled and self.max_turns != 1:
            raise ValueError(
                f"RolloutConfig.max_turns must be 1 when tools_enabled is False (single-turn "
                f"generation), got {self.max_turns}"
            )
        if self.search_tag == self.answer_tag:
            raise ValueError("RolloutConfig.search_tag and answer_tag must differ")

    @property
    def num_rounds(self) -> int:
        """Generation rounds at most: max_turns, plus the search-free final round when tools are on."""
        extra = 1 if (self.tools_enabled and self.final_turn_without_search) else 0
        return self.max_turns + extra
