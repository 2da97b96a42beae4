"""``python -m rlcore.trainer --config FILE [--dry-run] [key=value ...]``: the GRPO recipe's CLI."""

from rlcore.trainer.grpo import main

raise SystemExit(main())
