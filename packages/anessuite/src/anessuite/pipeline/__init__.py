"""CPT -> SFT -> GRPO (Morpheus) pipeline: data preparation, TRL stages, rlcore GRPO stage, orchestration."""
