"""AnesSuite: AnesBench evaluation, data converters and the CPT -> SFT -> GRPO (Morpheus) pipeline."""

__version__ = "0.1.0"
