"""msgspec's validation messages ("Expected `str` matching regex '\\S'") as sentences a page can
show its user under the field ("must not be empty"), keyed on the kind of error. Pure.

A message names one bound; with the field's JSON Schema at hand the sentence names both
("must be an integer from 1 to 120"). A message of a kind not known here is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

# msgspec's names of JSON types, as a sentence says them.
_TYPE_NAMES: Final = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
    "datetime": "a date and time (RFC 3339)",
    "date": "a date (YYYY-MM-DD)",
    "uuid": "a UUID",
}
_NUMBERS: Final = {"int": "an integer", "float": "a number"}

_TYPE: Final = re.compile(r"^Expected `(?P<expected>[^`]+)`(, got `(?P<got>[^`]+)`)?$")
_BOUND: Final = re.compile(r"^Expected `(?P<kind>int|float)` (?P<op>>=|<=|>|<) (?P<n>\S+)$")
_MULTIPLE: Final = re.compile(r"^Expected `(int|float)` that's a multiple of (?P<n>\S+)$")
_LENGTH: Final = re.compile(
    r"^Expected `(?P<kind>str|array|object)` of length (?P<op>>=|<=) (?P<n>\d+)$"
)
_PATTERN: Final = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$")
_ENUM: Final = re.compile(r"^Invalid enum value (?P<value>.+)$")
_MISSING: Final = re.compile(r"^Object missing required field `[^`]+`$")
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `[^`]+`$")
# A pattern that only asks for something besides whitespace: the field is blank otherwise.
_NOT_BLANK: Final = ("\\S", "\\S+", ".*\\S.*", "^.*\\S.*$")

Schema = Mapping[str, Any]


def _type_name(name: str) -> str:
    return " or ".join(_TYPE_NAMES.get(part.strip(), part.strip()) for part in name.split("|"))


def _number(text: str) -> str:
    # msgspec prints float bounds as `0.0`: a person reads `0`.
    return text[:-2] if text.endswith(".0") else text


def _plural(n: str, one: str, many: str) -> str:
    return f"{n} {one if n == '1' else many}"


def _type_sentence(match: re.Match[str], schema: Schema) -> str:
    return f"must be {_type_name(match['expected'])}"


def _bound_sentence(match: re.Match[str], schema: Schema) -> str:
    kind, op, n = _NUMBERS[match["kind"]], match["op"], _number(match["n"])
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"must be {kind} from {_number(str(low))} to {_number(str(high))}"
    lows = {"minimum": "at least", "exclusiveMinimum": "greater than"}
    highs = {"maximum": "at most", "exclusiveMaximum": "less than"}
    low_side = next((f"{w} {_number(str(schema[k]))}" for k, w in lows.items() if k in schema), "")
    high_side = next(
        (f"{w} {_number(str(schema[k]))}" for k, w in highs.items() if k in schema), ""
    )
    if low_side and high_side:
        return f"must be {kind} {low_side} and {high_side}"
    return {
        ">=": f"must be {kind} of at least {n}",
        "<=": f"must be {kind} of at most {n}",
        ">": f"must be {kind} greater than {n}",
        "<": f"must be {kind} less than {n}",
    }[op]


def _multiple_sentence(match: re.Match[str], schema: Schema) -> str:
    return f"must be a multiple of {_number(match['n'])}"


def _length_sentence(match: re.Match[str], schema: Schema) -> str:
    kind, op, n = match["kind"], match["op"], match["n"]
    if kind == "str":
        if op == ">=" and n == "1":
            return "must not be empty"
        unit = _plural(n, "character", "characters")
    else:
        if op == ">=" and n == "1":
            return "must have at least one item" if kind == "array" else "must not be empty"
        unit = _plural(n, "item", "items") if kind == "array" else _plural(n, "field", "fields")
    return f"must be at least {unit}" if op == ">=" else f"must be at most {unit}"


def _pattern_sentence(match: re.Match[str], schema: Schema) -> str:
    # msgspec shows the pattern as a Python literal would, backslashes doubled.
    pattern = match["pattern"].replace("\\\\", "\\")
    if pattern in _NOT_BLANK:
        return "must not be empty"
    return f"must match the pattern {pattern}"


def _enum_sentence(match: re.Match[str], schema: Schema) -> str:
    allowed = schema.get("enum")
    if isinstance(allowed, list) and allowed:
        return "must be one of: " + ", ".join(str(v) for v in allowed)
    return f"is not one of the allowed values (got {match['value']})"


_KINDS: Final[tuple[tuple[re.Pattern[str], Callable[[re.Match[str], Schema], str]], ...]] = (
    (_MISSING, lambda _m, _s: "is required"),
    (_UNKNOWN, lambda _m, _s: "is not allowed"),
    (_PATTERN, _pattern_sentence),
    (_LENGTH, _length_sentence),
    (_BOUND, _bound_sentence),
    (_MULTIPLE, _multiple_sentence),
    (_ENUM, _enum_sentence),
    (_TYPE, _type_sentence),
)


def sentence(message: str, schema: Schema | None = None) -> str:
    """What msgspec's `message` (without its ` - at ...` path) says, as a sentence about the
    field it names ("must be at most 2000 characters"); `schema` is the field's JSON Schema,
    when known, for the bound the message leaves out."""
    for pattern, build in _KINDS:
        if match := pattern.match(message):
            return build(match, schema or {})
    return message


def field_schema(root: Schema, pointer: str) -> Schema:
    """The JSON Schema of the value at `pointer` (`/topic`) under `root` (msgspec's schema of a
    Struct, its `$ref`s into `$defs`), the non-null alternative of an optional one; `{}` when
    the pointer leads nowhere the schema describes."""
    defs: Schema = root.get("$defs", {})

    def resolve(node: Schema) -> Schema:
        for _ in range(32):  # a bound on `$ref` chains: a schema is data, not trusted code
            if "$ref" in node:
                node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
            elif "anyOf" in node:
                options = [o for o in node["anyOf"] if o.get("type") != "null"]
                node = options[0] if len(options) == 1 else {}
            else:
                return node
        return {}

    node = resolve(root)
    for token in [t for t in pointer.split("/")[1:]]:
        name = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node.get("properties"), Mapping) and name in node["properties"]:
            node = resolve(node["properties"][name])
        elif isinstance(node.get("items"), Mapping) and name.isdigit():
            node = resolve(node["items"])
        else:
            return {}
    return node
