"""Fault injection for the sandbox providers.

A :class:`FaultSpec` says which requests it hits (a token, a token prefix or
every request; with a probability drawn from a seeded generator; for the next
``times`` matches or forever) and what happens to them (an error status, a
delay, no answer, a reset stream, a dropped connection, a GOAWAY, or an
expired-token window).  A :class:`FaultPlan` holds the active specs and is
shared between the app, the control routes and the tests, possibly across
threads.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pushwarden.sandbox.core import (
    Action,
    Delay,
    DropConnection,
    GoAway,
    NoAnswer,
    ResetStream,
    Response,
)

#: Effects a spec may have; the value documents which fields it reads.
EFFECTS: Mapping[str, str] = {
    "status": "status and/or reason (each implies the other), retry_after, timestamp_ms",
    "delay": "seconds (then the normal answer, or the error when status or reason is set)",
    "no_answer": "",
    "reset_stream": "error_code",
    "drop_connection": "",
    "goaway": "error_code",
    "expired_token_window": "issued_before and/or until / seconds",
}


class FaultSpecError(ValueError):
    """A fault specification that cannot be carried out."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault: which requests it hits and what happens to them.

    ``token`` and ``token_prefix`` are exclusive; with neither the spec hits
    every request.  ``times`` counts the matches still to hit (None: forever).
    For ``expired_token_window``, a request is hit when its provider token was
    issued before ``issued_before`` (epoch seconds) and/or while the clock is
    before ``until``; ``seconds`` is a shorthand for ``until = now + seconds``
    resolved when the spec is added to a plan.
    """

    effect: str
    token: str | None = None
    token_prefix: str | None = None
    probability: float = 1.0
    seed: int = 0
    times: int | None = None
    status: int | None = None
    reason: str | None = None
    retry_after: int | None = None
    timestamp_ms: int | None = None
    seconds: float | None = None
    error_code: int | None = None
    issued_before: float | None = None
    until: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        if self.effect not in EFFECTS:
            raise FaultSpecError(f"unknown effect {self.effect!r}; one of {sorted(EFFECTS)}")
        if self.token is not None and self.token_prefix is not None:
            raise FaultSpecError("give token or token_prefix, not both")
        if not 0.0 <= self.probability <= 1.0:
            raise FaultSpecError("probability must be within 0..1")
        if self.times is not None and self.times < 0:
            raise FaultSpecError("times must be >= 0 or null")
        if self.effect == "status" and self.status is None and self.reason is None:
            raise FaultSpecError("a status effect needs a status, a reason or both")
        if self.effect == "delay" and (self.seconds is None or self.seconds < 0):
            raise FaultSpecError("a delay needs seconds >= 0")
        if self.effect == "expired_token_window" and (
            self.issued_before is None and self.until is None and self.seconds is None
        ):
            raise FaultSpecError("an expired_token_window needs issued_before, until or seconds")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultSpec:
        """Build a spec from its JSON object (unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise FaultSpecError(f"unknown fault fields: {sorted(unknown)}")
        if "effect" not in data:
            raise FaultSpecError("a fault needs an effect")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise FaultSpecError(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object, without the fields left at None."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def matches_token(self, token: str | None) -> bool:
        """Whether the token criterion (not probability or window) selects ``token``."""
        if self.token is not None:
            return token == self.token
        if self.token_prefix is not None:
            return token is not None and token.startswith(self.token_prefix)
        return True

    def window_applies(self, issued_at: float | None, now: float) -> bool:
        """For an expired-token window: whether a token issued at ``issued_at`` is refused now."""
        if self.until is not None and now >= self.until:
            return False
        if self.issued_before is not None:
            return issued_at is None or issued_at < self.issued_before
        return True


@dataclass(slots=True)
class _Entry:
    spec: FaultSpec
    rng: random.Random
    remaining: int | None
    hits: int = 0


@dataclass(slots=True)
class FaultPlan:
    """The active faults, in the order they were added; thread-safe."""

    _entries: list[_Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1

    @classmethod
    def from_specs(cls, specs: Iterable[FaultSpec]) -> FaultPlan:
        """A plan holding ``specs``."""
        plan = cls()
        for spec in specs:
            plan.add(spec)
        return plan

    @classmethod
    def from_file(cls, path: Path) -> FaultPlan:
        """A plan from a JSON file holding a list of spec objects (or one object)."""
        return cls.from_specs(parse_specs(json.loads(path.read_text())))

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, spec: FaultSpec) -> FaultSpec:
        """Activate ``spec``; returns it with its id (and ``until`` resolved from ``seconds``)."""
        with self._lock:
            if (
                spec.effect == "expired_token_window"
                and spec.seconds is not None
                and spec.until is None
            ):
                spec = replace(spec, until=time.time() + spec.seconds)
            spec = replace(spec, id=self._next_id)
            self._next_id += 1
            self._entries.append(_Entry(spec, random.Random(spec.seed), spec.times))
        return spec

    def clear(self) -> int:
        """Remove every fault; returns how many there were."""
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
        return n

    def specs(self) -> list[FaultSpec]:
        """The active specs, ``times`` showing the matches each still has to hit."""
        with self._lock:
            return [replace(e.spec, times=e.remaining) for e in self._entries]

    def hits(self) -> dict[int, int]:
        """How many requests each spec (by id) has hit so far."""
        with self._lock:
            return {e.spec.id or 0: e.hits for e in self._entries}

    def match(
        self,
        token: str | None,
        *,
        issued_at: float | None = None,
        now: float | None = None,
        effects: frozenset[str] | None = None,
    ) -> FaultSpec | None:
        """The first spec that hits this request, consuming one of its ``times``.

        ``effects`` restricts the search (the APNs app looks for expired-token
        windows separately, once it knows when the provider token was issued).
        Each candidate spec draws from its own seeded generator, so a given seed
        and number of matching requests always gives the same number of hits.
        """
        if not self._entries:
            return None
        when = time.time() if now is None else now
        with self._lock:
            for entry in self._entries:
                spec = entry.spec
                if effects is not None and spec.effect not in effects:
                    continue
                if entry.remaining == 0 or not spec.matches_token(token):
                    continue
                if spec.effect == "expired_token_window" and not spec.window_applies(
                    issued_at, when
                ):
                    continue
                if spec.probability < 1.0 and entry.rng.random() >= spec.probability:
                    continue
                if entry.remaining is not None:
                    entry.remaining -= 1
                entry.hits += 1
                return spec
        return None


def parse_specs(data: Any) -> list[FaultSpec]:
    """Specs from decoded JSON: one object or a list of objects."""
    items = data if isinstance(data, list) else [data]
    if not all(isinstance(item, dict) for item in items):
        raise FaultSpecError("a fault is a JSON object")
    return [FaultSpec.from_json(item) for item in items]


_Builder = Callable[[FaultSpec, Callable[[], Response], Callable[[FaultSpec], Response]], Action]

#: How each effect becomes an action: (spec, normal answer, error renderer) -> action.
_ACTIONS: Mapping[str, _Builder] = {
    "status": lambda spec, normal, error: error(spec),
    "expired_token_window": lambda spec, normal, error: error(spec),
    "delay": lambda spec, normal, error: Delay(
        spec.seconds or 0.0,
        normal() if spec.status is None and spec.reason is None else error(spec),
    ),
    "no_answer": lambda spec, normal, error: NoAnswer(),
    "reset_stream": lambda spec, normal, error: ResetStream(
        2 if spec.error_code is None else spec.error_code
    ),
    "drop_connection": lambda spec, normal, error: DropConnection(),
    "goaway": lambda spec, normal, error: GoAway(0 if spec.error_code is None else spec.error_code),
}


def fault_action(
    spec: FaultSpec,
    *,
    normal: Callable[[], Response],
    error: Callable[[FaultSpec], Response],
) -> Action:
    """The action that carries out ``spec``.

    ``normal`` builds the answer the request would get without the fault (only
    called for a plain delay); ``error`` renders the spec's status in the
    provider's error format.
    """
    return _ACTIONS[spec.effect](spec, normal, error)
