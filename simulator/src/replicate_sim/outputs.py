"""Deterministic model output: the same input always gives the same text, in streamed chunks.

Language models on Replicate return their output as a list of string chunks; clients join them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

# A fixed vocabulary keeps the text readable; which words follow which depends on the input.
_VOCABULARY = (
    "the story opens on a quiet harbour at dawn while the narrator sets the scene and the "
    "first question lands with the audience before a quick cut shows what is at stake then "
    "a guest explains the idea in plain words a short example makes it concrete and the "
    "host returns to the question with one surprising fact before the closing line invites "
    "viewers to try it themselves"
)
_WORDS = tuple(_VOCABULARY.split())


def _subject(model_input: dict[str, Any]) -> str:
    prompt = model_input.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return " ".join(prompt.split())[:500]
    return json.dumps(model_input, sort_keys=True, default=str)[:500]


def output_chunks(model_input: dict[str, Any], words: int = 120) -> list[str]:
    """The chunks a simulated language model streams for `model_input`, one sentence each."""
    canonical = json.dumps(model_input, sort_keys=True, default=str).encode()
    # One byte of an extendable hash per word choice and per sentence length: deterministic,
    # and cheap enough for hundreds of creations a second.
    noise = hashlib.shake_256(canonical).digest(2 * words)
    chunks = [f"Simulated answer to: {_subject(model_input)}\n\n"]
    sentence: list[str] = []
    length = 6 + noise[words] % 9
    for i in range(words):
        sentence.append(_WORDS[noise[i] % len(_WORDS)])
        if len(sentence) >= length:
            chunks.append(" ".join(sentence).capitalize() + ". ")
            sentence = []
            length = 6 + noise[words + i] % 9
    if sentence:
        chunks.append(" ".join(sentence).capitalize() + ".")
    return chunks
