"""Deterministic model output: the same input always gives the same text, in streamed chunks.

Language models on Replicate return their output as a list of string chunks; clients join them.
The model writes its text token by token: a token is a word with the whitespace around it
(`TOKEN`), and tokens never span chunks, so a chunk is complete when its last token is written.
Like a real model it stops at the input's output-token limit, and it counts what it was given
(the prompt and the system instruction) and what it wrote in the same tokens, so the `metrics`
a test bills are computed from the text, not made up.
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

# The input fields Replicate's official language models read their limit and their system text
# from: Gemini's names first, then those of the Claude, Llama and GPT models.
MAX_TOKENS_FIELDS = ("max_output_tokens", "max_tokens", "max_completion_tokens")
SYSTEM_FIELDS = ("system_instruction", "system_prompt")

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
    """What the model reads, in tokens, for `metrics.input_token_count`: the whole prompt and
    the system instruction (an input without a prompt counts as the text it is answered on)."""
    prompt = model_input.get("prompt")
    count = count_tokens(prompt) if isinstance(prompt, str) else count_tokens(_subject(model_input))
    for name in SYSTEM_FIELDS:
        system = model_input.get(name)
        if isinstance(system, str):
            count += count_tokens(system)
    return count


def max_output_tokens(model_input: dict[str, Any]) -> int | None:
    """The most tokens the model may write: the first limit field holding a positive integer
    (anything else there is no limit, as a model with a default would have)."""
    for name in MAX_TOKENS_FIELDS:
        value = model_input.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def truncated(chunks: list[str], limit: int | None) -> list[str]:
    """The chunks cut after `limit` tokens: where a real model stops writing."""
    if limit is None:
        return chunks
    kept: list[str] = []
    left = limit
    for chunk in chunks:
        if left <= 0:
            break
        tokens = count_tokens(chunk)
        kept.append(chunk if tokens <= left else first_tokens(chunk, left))
        left -= tokens
    return kept


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
    """The chunks a simulated language model streams for `model_input`, one sentence each, at
    most the input's `max_output_tokens` tokens in all."""
    # The words do not depend on the limit, so a limited text is the start of the whole one.
    unlimited = {k: v for k, v in model_input.items() if k not in MAX_TOKENS_FIELDS}
    canonical = json.dumps(unlimited, sort_keys=True, default=str).encode()
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
    return truncated(chunks, max_output_tokens(model_input))
