"""Shared fixtures of the contracts tests: where the repository and its tools are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (holds protos/, scripts/, constraints.txt)."""
    return REPO


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The root virtualenv's bin directory (python, uv, the protoc plugins)."""
    return REPO / ".venv" / "bin"
