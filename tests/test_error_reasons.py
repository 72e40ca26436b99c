"""Every ErrorInfo reason the services and the runtime raise is a value of the contract's
``common.v1.ErrorReason``: clients branch on it, so it must be documented there."""

from __future__ import annotations

import re
from pathlib import Path

from pushwarden.common.v1 import types_pb2

REPO = Path(__file__).resolve().parent.parent
SOURCES = [REPO / "libs" / "runtime" / "src", *sorted((REPO / "services").glob("*/src"))]
# reason="X" literals, and Violations.reason = "X" assignments.
PATTERN = re.compile(r"""reason\s*=\s*["']([A-Z][A-Z0-9_]*)["']""")


def test_every_raised_reason_is_in_the_contract() -> None:
    names = types_pb2.ErrorReason.DESCRIPTOR.values_by_name
    known = {name.removeprefix("ERROR_REASON_") for name in names}
    used: dict[str, list[str]] = {}
    for root in SOURCES:
        for path in root.rglob("*.py"):
            for reason in PATTERN.findall(path.read_text(encoding="utf-8")):
                used.setdefault(reason, []).append(str(path.relative_to(REPO)))
    assert used, "no reasons found: the pattern is broken"
    unknown = {reason: paths for reason, paths in used.items() if reason not in known}
    assert unknown == {}
