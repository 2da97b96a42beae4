"""Turn scripts for ScriptedBackend in the rollout tests (a plain module: conftest files are not importable)."""

from __future__ import annotations


def turn_index(context_text: str) -> int:
    """Turns already taken in a context: each earlier turn ended with an observation, feedback or an insertion."""
    return (
        context_text.count("</information>")
        + context_text.count("</docs>")
        + context_text.count("no valid action")
        + context_text.count("Maybe I missed")
    )


def scripted(turns_by_key: dict[str, list]):
    """A ScriptedBackend responder: the prompt containing ``key`` gets ``turns_by_key[key][turn]`` at each turn.

    Entries are text or token-id lists; a callable entry is called with the context text.
    """

    def respond(context_ids: list[int], context_text: str):
        for key, turns in turns_by_key.items():
            if key in context_text:
                entry = turns[min(turn_index(context_text), len(turns) - 1)]
                return entry(context_text) if callable(entry) else entry
        raise AssertionError(f"no script for context {context_text!r}")

    return respond
