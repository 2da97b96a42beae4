"""Error types shared by every package: the base class of mistakes a user can fix.

Kept free of imports so any module (config, io, retrieval, recipes) can raise these without import cycles.
``rlcore.cli.run_cli`` prints them as one line and exits 2.
"""

from __future__ import annotations

__all__ = ["RecordFormatError", "UserError"]


class UserError(Exception):
    """A mistake the user can fix; its message is one line naming where (``file:line:field``) and what to do."""


class RecordFormatError(UserError, ValueError):
    """A data file's record is malformed; the message starts with ``<path>:<line>[:<column>]``."""
