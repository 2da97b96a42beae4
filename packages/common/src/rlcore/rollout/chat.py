"""Prompts as token ids from chat messages (the caller applies the chat template once; the engine never does)."""

from __future__ import annotations

__all__ = ["encode_chat_prompt"]


def encode_chat_prompt(
    tokenizer,
    messages: list[dict[str, str]],
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
    **template_kwargs,
) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template (or ``chat_template``).

    The rendered text is encoded without adding special tokens again (templates already contain BOS / ChatML
    markers). With ``add_generation_prompt`` the ids end with the open assistant turn, ready for generation.
    """
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise ValueError(
            f"encode_chat_prompt: messages must be a non-empty list of {{'role', 'content'}} dicts, "
            f"got {messages!r:.200}"
        )
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("encode_chat_prompt: the tokenizer has no chat_template; pass chat_template=...")
    text = tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=template,
        **template_kwargs,
    )
    return tokenizer.encode(text, add_special_tokens=False)
