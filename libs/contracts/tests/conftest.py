"""Shared fixtures of the contracts tests: where the repository and its tools are."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
RPC_RE = re.compile(r"^\s*rpc (\w+)\(")

RpcComments = Callable[[str], dict[str, str]]


def _rpc_comments(area: str) -> dict[str, str]:
    """Each RPC's leading comment in ``protos/pushwarden/<area>/v1/<area>.proto``,
    joined into one line, by RPC name."""
    path = REPO / "protos" / "pushwarden" / area / "v1" / f"{area}.proto"
    lines = path.read_text(encoding="utf-8").splitlines()
    comments: dict[str, str] = {}
    for index, line in enumerate(lines):
        match = RPC_RE.match(line)
        if not match:
            continue
        block: list[str] = []
        cursor = index - 1
        while cursor >= 0 and lines[cursor].strip().startswith("//"):
            block.insert(0, lines[cursor].strip().removeprefix("//").strip())
            cursor -= 1
        comments[match.group(1)] = " ".join(block)
    return comments


@pytest.fixture(scope="session")
def rpc_comments() -> RpcComments:
    """Reads the RPC doc comments of one area's service file."""
    return _rpc_comments


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds protos/, scripts/, constraints.txt)."""
    return REPO


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The root virtualenv's bin directory (python, uv, the protoc plugins)."""
    return REPO / ".venv" / "bin"
