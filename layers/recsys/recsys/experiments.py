"""A/B variants: what each one changes, and which one a user gets.

A variant is configured as JSON (the template's `Variants` parameter, AB_VARIANTS):
`[{"name": "control", "share": 0.5}, {"name": "fresh", "share": 0.5, "weights": {"popularity": 0.3}}]`.
`weights` overrides fields of the fitted BlendWeights; `diversity` and `explore` are the
defaults a request of that variant gets when it does not name its own. A user's variant
is a stable hash of the experiment name and the user id, so it never changes while the
configuration does not.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, replace

from recsys.scoring import BlendWeights

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EXPERIMENT = "recsys-ab-1"


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    weights: dict[str, float] = field(default_factory=dict)
    diversity: float = 0.0
    explore: float = 0.0

    def blend(self, fitted: BlendWeights) -> BlendWeights:
        return replace(fitted, **self.weights) if self.weights else fitted


CONTROL = (Variant("control", 1.0),)


def parse_variants(text: str | None) -> tuple[Variant, ...]:
    """The configured variants; empty configuration means everyone gets `control`."""
    if not text or not text.strip():
        return CONTROL
    raw = json.loads(text)
    if not isinstance(raw, list) or not raw:
        raise ValueError("variants: expected a non-empty JSON list")
    known = {f.name for f in fields(BlendWeights)}
    variants = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) - {"name", "share", "weights", "diversity", "explore"}:
            raise ValueError(f"variants: bad entry {entry!r}")
        name, weights = str(entry.get("name", "")), entry.get("weights") or {}
        if not NAME.fullmatch(name) or not isinstance(weights, dict) or set(weights) - known:
            raise ValueError(f"variants: bad name or weights in {entry!r}")
        variant = Variant(name, float(entry.get("share", 0)), {k: float(v) for k, v in weights.items()},
                          float(entry.get("diversity", 0)), float(entry.get("explore", 0)))
        if variant.share < 0 or not (0 <= variant.diversity <= 1) or not (0 <= variant.explore <= 1):
            raise ValueError(f"variants: share >= 0, diversity and explore in [0, 1]: {entry!r}")
        variants.append(variant)
    if len({v.name for v in variants}) != len(variants) or abs(sum(v.share for v in variants) - 1.0) > 1e-6:
        raise ValueError("variants: names must be unique and shares must sum to 1")
    return tuple(variants)


def bucket(user_id: str, experiment: str = EXPERIMENT) -> float:
    """A number in [0, 1) fixed by the user id (uniform over users)."""
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def assign(user_id: str, variants: tuple[Variant, ...]) -> Variant:
    point, edge = bucket(user_id), 0.0
    for variant in variants:
        edge += variant.share
        if point < edge:
            return variant
    return variants[-1]
