"""User errors in one line: the wrapper every command line of the project runs its subcommands in.

A mistake the user can fix (a malformed data line, a model that has not been built, a service that is not
running, a bad value) is printed as one line on stderr, ``<prog>: error: <what and where>``, and the command exits
with status 2, without a traceback. Anything else is a bug and keeps its traceback. ``--debug`` anywhere on the
command line, or ``RLCORE_DEBUG=1``, shows the traceback of user errors too.

Which exceptions are user errors: :class:`UserError` and its subclasses, and the project's older error types that
predate it (config errors, retrieval errors, missing files and models), listed in :data:`USER_ERRORS`; a package
adds its own with ``run_cli(..., user_errors=(...))``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence

from rlcore.config import ConfigError
from rlcore.errors import UserError
from rlcore.retrieval.types import RetrievalError

__all__ = ["USER_ERRORS", "UserError", "debug_requested", "one_line", "run_cli"]

logger = logging.getLogger(__name__)


# Error types of the project that are the user's to fix. FileNotFoundError covers a missing input file and
# rlcore.models.ModelNotFoundError (a model path that does not exist).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, RetrievalError, FileNotFoundError)


def debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` on the command line or ``RLCORE_DEBUG`` set to a true value."""
    return "--debug" in argv or os.environ.get("RLCORE_DEBUG", "").lower() in ("1", "true", "yes", "on")


def one_line(err: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined with ' | ')."""
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    if isinstance(err, FileNotFoundError) and err.filename and err.strerror is not None:
        text = f"{err.strerror}: {err.filename}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines) or type(err).__name__


def run_cli(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str],
    prog: str,
    user_errors: tuple[type[BaseException], ...] = (),
    hint: Callable[[BaseException], str | None] | None = None,
) -> int:
    """Run ``main(argv)`` (``--debug`` removed) and turn a user error into one line and exit status 2.

    Args:
        main: the command line's own entry, taking the argument list and returning an exit status.
        argv: the arguments after the program name.
        prog: the program name printed before ``error:`` (e.g. ``rexrag train``).
        user_errors: the package's own error types to treat as user errors, on top of :data:`USER_ERRORS`.
        hint: returns a short "what to do" for an error (appended after ``; ``), or None.
    """
    debug = debug_requested(argv)
    args = [arg for arg in argv if arg != "--debug"]
    try:
        status = main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... --dry-run | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 0
    except USER_ERRORS + user_errors as err:
        if debug:
            raise
        message = one_line(err)
        extra = hint(err) if hint is not None else None
        if extra and extra not in message:
            message = f"{message}; {extra}"
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    return int(status or 0)
