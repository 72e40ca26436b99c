"""The contracts distribution installs alone into an empty virtualenv and imports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

AREAS = ("consent", "segmentation", "scheduler", "delivery")

PROBE = """
import json, sys
from pushwarden.consent.v1 import consent_pb2, consent_pb2_grpc
from pushwarden.segmentation.v1 import segmentation_pb2, segmentation_pb2_grpc
from pushwarden.scheduler.v1 import scheduler_pb2, scheduler_pb2_grpc
from pushwarden.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from pushwarden.common.v1 import decision_pb2
mods = {m.__name__: m.__file__ for m in (
    consent_pb2, consent_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc,
    scheduler_pb2, scheduler_pb2_grpc, delivery_pb2, delivery_pb2_grpc, decision_pb2)}
stub = consent_pb2_grpc.ConsentServiceStub
print(json.dumps({"files": mods, "prefix": sys.prefix, "stub": stub.__name__}))
"""


@pytest.mark.slow
def test_contracts_install_alone_and_import(
    venv_bin: Path, repo_root: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run(
        [str(venv_bin / "uv"), "venv", "-q", "--python", str(venv_bin / "python"), str(venv)],
        check=True,
        timeout=120,
        env=env,
    )
    python = venv / "bin" / "python"
    # Build from a copy so the wheel build leaves nothing behind in the work tree.
    source = tmp_path / "contracts"
    shutil.copytree(
        repo_root / "libs" / "contracts",
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"),
    )
    subprocess.run(
        [
            str(venv_bin / "uv"),
            "pip",
            "install",
            "-q",
            "--python",
            str(python),
            "-c",
            str(repo_root / "constraints.txt"),
            str(source),
        ],
        check=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run(
        [str(python), "-I", "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=outside,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stub"] == "ConsentServiceStub"
    for area in AREAS:
        assert f"pushwarden.{area}.v1.{area}_pb2_grpc" in report["files"]
    for name, file in report["files"].items():
        assert Path(file).resolve().is_relative_to(venv.resolve()), (name, file)
        assert "site-packages" in Path(file).parts
        # Typed: the stubs and the PEP 561 marker ship with the modules.
        assert Path(file).with_suffix(".pyi").is_file(), name
        assert (Path(file).parent / "py.typed").is_file(), name
    # Only the contracts and their runtime dependencies went in: no other Pushwarden code.
    listing = subprocess.run(
        [str(venv_bin / "uv"), "pip", "list", "--python", str(python), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    ours = sorted(
        p["name"] for p in json.loads(listing.stdout) if p["name"].startswith("pushwarden")
    )
    assert ours == ["pushwarden-contracts"]
