"""The one clock a service reads ``now`` from.

Production runs on :class:`SystemClock`. Tests and the demo give every service the same
clock file (``PUSHWARDEN_<SERVICE>_CLOCK_FILE``) and move it with :func:`shift_clock_file`,
so that several processes cross a DST night or a one-hour trigger delay together, in
seconds; in-process tests may use :class:`ManualClock`. Whatever a handler, worker or
policy decision needs as "now" comes from the app's clock, never from ``datetime.now``.

The file holds ``{"origin": <unix s>, "offset_s": <s>, "speed": <x>}``: at real time
``t`` the clock reads ``origin + offset_s + (t - origin) * speed``. Shifting writes a new
file whose reading at the moment of the write continues from the old one, so the clock
never runs backwards unless asked to.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    """Where a service reads the time."""

    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        """``datetime.now(UTC)``."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told (in-process tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The instant last set."""
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant``."""
        self._now = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move forward by ``delta``."""
        self._now += delta


@dataclass(frozen=True, slots=True)
class ClockShift:
    """What a clock file says: ``origin + offset_s + (real - origin) * speed``."""

    origin: float
    offset_s: float = 0.0
    speed: float = 1.0

    def at(self, real: float) -> float:
        """The shifted reading (unix seconds) at real time ``real``."""
        return self.origin + self.offset_s + (real - self.origin) * self.speed

    @classmethod
    def parse(cls, text: str, source: str) -> ClockShift:
        """Read a clock file's JSON; ``ValueError`` naming ``source`` when malformed."""
        try:
            data = json.loads(text)
            shift = cls(float(data["origin"]), float(data["offset_s"]), float(data["speed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: not a clock file ({exc})") from exc
        if not all(math.isfinite(v) for v in (shift.origin, shift.offset_s, shift.speed)):
            raise ValueError(f"{source}: clock values must be finite")
        if shift.speed <= 0:
            raise ValueError(f"{source}: speed must be positive")
        return shift


class FileClock:
    """Real time shifted and sped up as a clock file says; re-read whenever it changes.

    A missing file reads as real time, so a test can start the services first and shift
    them later.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._shift: ClockShift | None = None

    def _current(self) -> ClockShift | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._shift = None, None
            return None
        stamp = (stat.st_mtime_ns, stat.st_ino)
        if stamp != self._stamp:
            self._shift = ClockShift.parse(self.path.read_text(encoding="utf-8"), str(self.path))
            self._stamp = stamp
        return self._shift

    def now(self) -> datetime:
        """The shifted instant."""
        real = time.time()
        shift = self._current()
        return datetime.fromtimestamp(real if shift is None else shift.at(real), UTC)


def read_clock_file(path: Path) -> ClockShift | None:
    """The shift a clock file holds, or None when there is none."""
    try:
        return ClockShift.parse(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        return None


def write_clock_file(path: Path, shift: ClockShift) -> None:
    """Replace the clock file atomically (readers see the old or the new shift)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(
        json.dumps({"origin": shift.origin, "offset_s": shift.offset_s, "speed": shift.speed}),
        encoding="utf-8",
    )
    os.replace(scratch, path)


def shift_clock_file(
    path: Path,
    *,
    advance: timedelta = timedelta(0),
    to: datetime | None = None,
    speed: float | None = None,
) -> datetime:
    """Move every clock that reads ``path``: jump ``to`` an instant or ``advance`` by a
    delta from where it reads now, and from then on run at ``speed`` (default: as
    before). Returns the new reading."""
    real = time.time()
    old = read_clock_file(path) or ClockShift(origin=real)
    start = to.timestamp() if to is not None else old.at(real)
    start += advance.total_seconds()
    new_speed = old.speed if speed is None else speed
    write_clock_file(path, ClockShift(origin=real, offset_s=start - real, speed=new_speed))
    return datetime.fromtimestamp(start, UTC)


def clock_for(path: Path | None) -> Clock:
    """The clock a service runs on: :class:`FileClock` when a clock file is configured
    (tests, demo), else :class:`SystemClock`."""
    return SystemClock() if path is None else FileClock(path)
