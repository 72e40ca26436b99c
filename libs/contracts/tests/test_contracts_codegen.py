"""The committed generated code is current, and the check notices stale code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _check(venv_bin: Path, repo_root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_bin / "python"), str(repo_root / "scripts" / "gen_protos.py"), "--check", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_committed_code_matches_protos(venv_bin: Path, repo_root: Path) -> None:
    result = _check(venv_bin, repo_root)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_fails_when_a_proto_changes_without_regenerating(
    venv_bin: Path, repo_root: Path, tmp_path: Path
) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(repo_root / "protos", protos, ignore=shutil.ignore_patterns("node_modules"))
    changed = protos / "pushwarden" / "consent" / "v1" / "messages.proto"
    text = changed.read_text(encoding="utf-8")
    anchor = "message GetConsentStateRequest {\n"
    assert anchor in text
    changed.write_text(
        text.replace(anchor, anchor + "  // Added by the test.\n  string added_by_test = 99;\n"),
        encoding="utf-8",
    )
    result = _check(
        venv_bin,
        repo_root,
        "--proto-root",
        str(protos),
        "--out",
        str(repo_root / "libs/contracts/src"),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pushwarden/consent/v1/messages_pb2.py (differs)" in result.stderr
    assert "pushwarden/consent/v1/messages_pb2.pyi (differs)" in result.stderr
    # Untouched packages are not reported.
    assert "delivery" not in result.stderr


def test_check_reports_a_missing_generated_file(
    venv_bin: Path, repo_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "src"
    shutil.copytree(
        repo_root / "libs/contracts/src/pushwarden",
        out / "pushwarden",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (out / "pushwarden/delivery/v1/delivery_pb2_grpc.pyi").unlink()
    (out / "pushwarden/delivery/v1/leftover_pb2.py").write_text("", encoding="utf-8")
    result = _check(venv_bin, repo_root, "--out", str(out))
    assert result.returncode == 1
    assert "pushwarden/delivery/v1/delivery_pb2_grpc.pyi (missing)" in result.stderr
    assert "pushwarden/delivery/v1/leftover_pb2.py (stale" in result.stderr
