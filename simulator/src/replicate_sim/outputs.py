"""Deterministic model output: the same input always gives the same text, in streamed chunks.

Language models on Replicate return their output as a list of string chunks; clients join them.
The model writes its text token by token: a token is a word with the whitespace around it
(`TOKEN`), and tokens never span chunks, so a chunk is complete when its last token is written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from typing import Any

# The models whose predictions have `urls.stream`: the job types' model and Replicate's other
# official language models. Any other model name gets the same text, without a stream.
STREAMING_MODELS = frozenset(
    {
        "google/gemini-3-pro",
        "google/gemini-2.5-flash",
        "anthropic/claude-4-sonnet",
        "openai/gpt-5",
        "deepseek-ai/deepseek-r1",
        "meta/meta-llama-3-8b-instruct",
        "meta/meta-llama-3-70b-instruct",
    }
)

# Leading whitespace, a word, trailing whitespace; a text of whitespace only is one token.
TOKEN = re.compile(r"\s*\S+\s*|\s+")

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


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN.finditer(text))


def input_tokens(model_input: dict[str, Any]) -> int:
    """The prompt's length in tokens, for `metrics.input_token_count`."""
    return count_tokens(_subject(model_input))


def token_counts(chunks: list[str]) -> tuple[int, ...]:
    """How many tokens the text has up to the end of each chunk."""
    return tuple(itertools.accumulate(count_tokens(chunk) for chunk in chunks))


def token_ends(chunks: list[str]) -> list[int]:
    """The character offset in the joined text at which each token ends."""
    ends: list[int] = []
    offset = 0
    for chunk in chunks:
        ends.extend(offset + match.end() for match in TOKEN.finditer(chunk))
        offset += len(chunk)
    return ends


def first_tokens(chunk: str, count: int) -> str:
    """The start of `chunk` made of its first `count` tokens."""
    end = 0
    for match in itertools.islice(TOKEN.finditer(chunk), count):
        end = match.end()
    return chunk[:end]


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
