"""The runtime clock: real by default; a clock file shifts and speeds up every service
that reads it, re-read when it changes, continuing from where it was."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pushwarden.runtime.clock import (
    FileClock,
    ManualClock,
    SystemClock,
    clock_for,
    shift_clock_file,
)


def test_production_runs_on_the_system_clock() -> None:
    clock = clock_for(None)
    assert isinstance(clock, SystemClock)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)
    assert clock.now().tzinfo == UTC


def test_a_missing_clock_file_reads_real_time(tmp_path: Path) -> None:
    clock = FileClock(tmp_path / "clock.json")
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)


def test_a_shift_is_seen_by_every_clock_on_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    first, second = FileClock(path), FileClock(path)
    first.now()  # caches "no file"
    target = datetime(2030, 10, 27, 0, 30, tzinfo=UTC)  # before Europe's DST night
    shift_clock_file(path, to=target)
    for clock in (first, second):
        assert target <= clock.now() < target + timedelta(seconds=5)
    shift_clock_file(path, advance=timedelta(hours=1))
    assert target + timedelta(hours=1) <= first.now() < target + timedelta(hours=1, seconds=5)


def test_speed_makes_an_hour_pass_in_a_fraction_of_a_second(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock = FileClock(path)
    start = shift_clock_file(path, to=datetime(2030, 1, 1, tzinfo=UTC), speed=36000.0)
    time.sleep(0.2)
    elapsed = clock.now() - start
    assert timedelta(minutes=60) <= elapsed < timedelta(hours=3)
    # Changing the speed continues from the current reading, never jumping back.
    before = clock.now()
    shift_clock_file(path, speed=1.0)
    assert clock.now() >= before


def test_a_malformed_clock_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    path.write_text('{"origin": 1, "offset_s": 0, "speed": -1}')
    with pytest.raises(ValueError, match="speed must be positive"):
        FileClock(path).now()
    path.write_text("not json")
    with pytest.raises(ValueError, match="not a clock file"):
        FileClock(path).now()


def test_the_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(datetime(2030, 3, 31, 0, 59, tzinfo=UTC))
    assert clock.now() == datetime(2030, 3, 31, 0, 59, tzinfo=UTC)
    clock.advance(timedelta(minutes=2))
    assert clock.now() == datetime(2030, 3, 31, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2030, 1, 1))
