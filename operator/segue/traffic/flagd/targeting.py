"""The flagd flag-definitions document, as the flagd router reads and rewrites it (no I/O).

A document is JSON: ``{"flags": {<key>: {"state", "variants", "defaultVariant",
"targeting"}}, ...}`` (https://flagd.dev/reference/flag-definitions/). Segue owns two fields
of one flag and nothing else in the document:

- weight 0 and no segment: ``defaultVariant`` is the legacy variant and there is no
  ``targeting``, so every evaluation gets legacy (this is also what a rollback writes);
- weight 100: ``defaultVariant`` is the new variant, no ``targeting``;
- in between, ``defaultVariant`` stays legacy and ``targeting`` is flagd's ``fractional``
  split on the evaluation's targeting key, ``{"fractional": [[legacy, 100 - w], [new, w]]}``
  (flagd hashes the flag key with the targeting key; an evaluation without a targeting key
  gets the default, legacy);
- a segment wraps that in JSON Logic's ``if``: ``{"if": [{"in": [{"var": <context key>},
  [values...]]}, new, <the split, or the variant the weight gives>]}``.

Reading accepts what Segue writes and a user's own ``fractional`` between the two variants
(any bucketing, any weights), so a flag split by hand is read as its percentage. Any other
targeting is refused rather than guessed at.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from pydantic import ValidationError

from segue.api.routing import Segment

# Names shown when a key is missing (the document may hold many flags).
MAX_NAMES_SHOWN: Final = 10
DISABLED: Final = "DISABLED"


class FlagError(ValueError):
    """The document or the flag cannot be read or written as configured; the message names
    the place in the document, the spec field and the fix."""


@dataclass(frozen=True)
class Variants:
    """The flag and the variants of the two versions, as the Rollout names them."""

    flag: str
    legacy: str
    new: str


@dataclass(frozen=True)
class Split:
    """What a flag does now: the new version's share and the segment sent to it."""

    weight: int
    segment: Segment | None


def _names(keys: Any) -> str:
    names = [str(k) for k in keys][: MAX_NAMES_SHOWN + 1]
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) or "none"
    return shown + (", ..." if len(names) > MAX_NAMES_SHOWN else "")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Bounded: a parsed 1 MiB document takes some ten times that in memory.
@lru_cache(maxsize=16)
def parse_document(text: str) -> Any:
    """The document's JSON (cached by text: a pass reads it without parsing it again; the
    result is shared, so callers do not change it). FlagError when it is not JSON."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise FlagError("the document (spec.traffic.flagd.key) is JSON nested too deeply") from None
    except ValueError as e:
        raise FlagError(
            f"the document (spec.traffic.flagd.key) is not valid JSON ({e}); it must be a flagd "
            "flag-definitions document"
        ) from None


def find_flag(doc: Any, names: Variants) -> dict[str, Any]:
    """The flag's definition, checked: an object, ENABLED, with both variants."""
    flags = doc.get("flags") if isinstance(doc, dict) else None
    if not isinstance(flags, dict):
        raise FlagError(
            'the document (spec.traffic.flagd.key) has no "flags" object; it must be a flagd '
            "flag-definitions document "
            '({"flags": {"<flag>": {...}}})'
        )
    where = f"flags.{names.flag}"
    flag = flags.get(names.flag)
    if flag is None:
        raise FlagError(
            f"the document has no flag {names.flag} (spec.traffic.flagd.flag) under flags (it has: "
            f"{_names(flags)})"
        )
    if not isinstance(flag, dict):
        raise FlagError(f"{where} is not an object (spec.traffic.flagd.flag)")
    variants = flag.get("variants")
    if not isinstance(variants, dict):
        raise FlagError(
            f"{where}.variants is missing or not an object; the flag needs a variant for "
            "each version (spec.traffic.flagd.legacyVariant, newVariant)"
        )
    for variant, field in ((names.legacy, "legacyVariant"), (names.new, "newVariant")):
        if variant not in variants:
            raise FlagError(
                f"{where}.variants has no variant {variant} (spec.traffic.flagd.{field}) "
                f"(it has: {_names(variants)})"
            )
    if flag.get("state") == DISABLED:
        raise FlagError(
            f"{where}.state is {DISABLED}: flagd then serves the application's code default "
            "whatever the targeting; set it to ENABLED"
        )
    return flag


def read_split(flag: dict[str, Any], names: Variants) -> Split:
    """The share of the new variant and the segment, from ``defaultVariant`` and
    ``targeting``."""
    where = f"flags.{names.flag}"
    targeting = flag.get("targeting")
    if targeting is None or targeting == {}:
        return Split(_default_weight(flag, names), None)
    if not isinstance(targeting, dict) or len(targeting) != 1:
        raise _foreign(names)
    if "fractional" in targeting:
        return Split(_fractional_weight(targeting["fractional"], names), None)
    if "if" not in targeting:
        raise _foreign(names)
    args = targeting["if"]
    if not isinstance(args, list) or len(args) not in (2, 3) or args[1] != names.new:
        raise _foreign(names)
    segment = _segment(args[0], names)
    otherwise = args[2] if len(args) == 3 else None
    if otherwise is None:
        weight = _default_weight(flag, names)
    elif otherwise == names.legacy:
        weight = 0
    elif otherwise == names.new:
        weight = 100
    elif isinstance(otherwise, dict) and list(otherwise) == ["fractional"]:
        weight = _fractional_weight(otherwise["fractional"], names)
    else:
        raise FlagError(
            f"{where}.targeting: the segment's else branch is neither a variant of the "
            f"Rollout nor a fractional split; {_OWNED}"
        )
    return Split(weight, segment)


_OWNED = (
    "Segue owns the targeting of the flag it splits (spec.traffic.flagd.flag): remove it, "
    "or give the rules to another flag"
)


def _foreign(names: Variants) -> FlagError:
    return FlagError(
        f"flags.{names.flag}.targeting is not a fractional split between "
        f"{names.legacy} and {names.new} nor a segment Segue wrote; {_OWNED}"
    )


def _default_weight(flag: dict[str, Any], names: Variants) -> int:
    default = flag.get("defaultVariant")
    if default == names.legacy:
        return 0
    if default == names.new:
        return 100
    raise FlagError(
        f"flags.{names.flag}.defaultVariant is {json.dumps(default)}, neither "
        f"{names.legacy} (spec.traffic.flagd.legacyVariant) nor {names.new} "
        "(spec.traffic.flagd.newVariant); set it to the legacy variant"
    )


def _fractional_weight(args: Any, names: Variants) -> int:
    """The new variant's percentage in a ``fractional`` between the two variants, with or
    without a bucketing expression first; weights default to 1, as flagd's do."""
    where = f"flags.{names.flag}.targeting.fractional"
    if not isinstance(args, list) or not args:
        raise FlagError(f"{where} is not a list of [variant, weight] pairs")
    if not isinstance(args[0], list):
        args = args[1:]  # the bucketing expression (flagd's default: the targeting key)
    totals = {names.legacy: 0, names.new: 0}
    for fraction in args:
        if not isinstance(fraction, list) or not 1 <= len(fraction) <= 2:
            raise FlagError(f"{where}: {json.dumps(fraction)[:80]} is not a [variant, weight] pair")
        variant = fraction[0]
        weight = fraction[1] if len(fraction) == 2 else 1
        if variant not in totals:
            raise FlagError(
                f"{where} splits to {json.dumps(variant)[:80]}, which is neither "
                f"{names.legacy} nor {names.new}; {_OWNED}"
            )
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise FlagError(f"{where}: the weight of {variant} is not an integer")
        totals[variant] += max(0, weight)
    total = totals[names.legacy] + totals[names.new]
    if total == 0:
        raise FlagError(f"{where}: the weights add up to 0")
    return round(100 * totals[names.new] / total)


def _segment(condition: Any, names: Variants) -> Segment:
    """``{"in": [{"var": key}, [values...]]}`` as a Segment."""
    args = condition.get("in") if isinstance(condition, dict) and len(condition) == 1 else None
    if not isinstance(args, list) or len(args) != 2:
        raise _foreign(names)
    var, values = args
    key = var.get("var") if isinstance(var, dict) and len(var) == 1 else None
    try:
        return Segment(header=key, values=values)
    except ValidationError:
        raise _foreign(names) from None


def desired(weight: int, segment: Segment | None, names: Variants) -> dict[str, Any]:
    """``defaultVariant`` and ``targeting`` (absent: no entry) for this weight and segment."""
    default = names.new if weight == 100 else names.legacy
    split: Any = None
    if 0 < weight < 100:
        split = {"fractional": [[names.legacy, 100 - weight], [names.new, weight]]}
    if segment is None:
        return (
            {"defaultVariant": default}
            if split is None
            else {
                "defaultVariant": default,
                "targeting": split,
            }
        )
    condition = {"in": [{"var": segment.header}, list(segment.values)]}
    otherwise = default if split is None else split
    return {"defaultVariant": default, "targeting": {"if": [condition, names.new, otherwise]}}


def with_split(flag: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """The flag with ``want``'s defaultVariant and targeting (replacing or removing its
    own), its other fields and their order kept."""
    out = copy.deepcopy(flag)
    out["defaultVariant"] = want["defaultVariant"]
    if "targeting" in want:
        out["targeting"] = want["targeting"]
    else:
        out.pop("targeting", None)
    return out


def is_current(flag: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether the flag already has exactly these two fields (then nothing is written)."""
    return flag.get("defaultVariant") == want["defaultVariant"] and flag.get(
        "targeting"
    ) == want.get("targeting")


def render(doc: dict[str, Any]) -> str:
    """The document as text: JSON indented by two spaces, key order kept."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
