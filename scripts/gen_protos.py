"""Generate the Python contracts package from protos/ (``make protos``).

Runs ``grpc_tools.protoc`` with the message (``--python_out``), service
(``--grpc_python_out``) and typed-stub (mypy-protobuf's ``protoc-gen-mypy`` and
``protoc-gen-mypy_grpc``) generators into a scratch directory, adds an
``__init__.py`` and a ``py.typed`` marker to every generated subpackage (never to
the shared ``pushwarden`` namespace itself), then replaces the committed tree under
``libs/contracts/src/pushwarden``.

``--check`` regenerates into a temporary directory only and exits 1, listing the
files that differ, when the committed code is stale (``make protos-check``, CI).
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROTO_ROOT = REPO / "protos"
DEFAULT_OUT = REPO / "libs" / "contracts" / "src"
# The namespace shared by every Pushwarden distribution: the generator owns
# only the subpackages below it, listed here so nothing else is ever touched.
NAMESPACE = "pushwarden"
GENERATED_AREAS = ("common", "consent", "delivery", "scheduler", "segmentation")
PLUGINS = {"mypy": "protoc-gen-mypy", "mypy_grpc": "protoc-gen-mypy_grpc"}
SERVICE_RE = re.compile(r"^service\s", re.MULTILINE)
INIT_TEXT = '"""Generated from protos/{path}: do not edit; run `make protos`."""\n'


class GenerationError(RuntimeError):
    """protoc or one of its plugins failed."""


def _plugin_path(name: str) -> Path:
    """Find a protoc plugin installed beside the running interpreter (the venv)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise GenerationError(f"{name} not found next to {sys.executable}: run `make install`")
    return path


def proto_files(proto_root: Path) -> list[str]:
    """Every .proto under the namespace, relative to the root, in a stable order."""
    return sorted(
        p.relative_to(proto_root).as_posix() for p in (proto_root / NAMESPACE).rglob("*.proto")
    )


def service_files(proto_root: Path, files: Sequence[str]) -> list[str]:
    """The files that declare a service: only these get gRPC modules."""
    return [f for f in files if SERVICE_RE.search((proto_root / f).read_text(encoding="utf-8"))]


def _protoc(proto_root: Path, outputs: Sequence[str], files: Sequence[str]) -> None:
    # Deferred: only generation needs grpcio-tools, which ships no type information.
    from grpc_tools import protoc  # type: ignore[import-untyped]

    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        *outputs,
        *(f"--plugin=protoc-gen-{key}={_plugin_path(name)}" for key, name in PLUGINS.items()),
        *files,
    ]
    if protoc.main(args) != 0:
        raise GenerationError("protoc failed (see the messages above)")


def run_protoc(proto_root: Path, out_dir: Path) -> None:
    """Messages and their stubs for every file; services and theirs for service files."""
    files = proto_files(proto_root)
    if not files:
        raise GenerationError(f"no .proto files under {proto_root / NAMESPACE}")
    _protoc(proto_root, [f"--python_out={out_dir}", f"--mypy_out=quiet:{out_dir}"], files)
    services = service_files(proto_root, files)
    grpc_outputs = [
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out=quiet,generate_concrete_servicer_stubs:{out_dir}",
    ]
    _protoc(proto_root, grpc_outputs, services)


def add_package_markers(out_dir: Path) -> None:
    """Make every generated directory below the namespace a typed package."""
    namespace_dir = out_dir / NAMESPACE
    for directory in sorted(p for p in namespace_dir.rglob("*") if p.is_dir()):
        rel = directory.relative_to(out_dir).as_posix()
        (directory / "__init__.py").write_text(INIT_TEXT.format(path=rel), encoding="utf-8")
        (directory / "py.typed").write_text("", encoding="utf-8")


def generate(proto_root: Path, out_dir: Path) -> None:
    """Generate the complete package tree into ``out_dir`` (which must be empty)."""
    run_protoc(proto_root, out_dir)
    add_package_markers(out_dir)
    stray = sorted(p.name for p in (out_dir / NAMESPACE).iterdir() if p.name not in GENERATED_AREAS)
    if stray:
        raise GenerationError(f"unexpected generated entries {stray}: update GENERATED_AREAS")


def _tree(root: Path) -> dict[str, Path]:
    """Files of the generated areas below ``root``, keyed by relative path."""
    files: dict[str, Path] = {}
    for area in GENERATED_AREAS:
        base = root / NAMESPACE / area
        if base.is_dir():
            for path in base.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    files[path.relative_to(root).as_posix()] = path
    return files


def differences(fresh: Path, committed: Path) -> list[str]:
    """Relative paths that are missing, extra or different in ``committed``."""
    new, old = _tree(fresh), _tree(committed)
    changed = [
        f"{rel} (missing)" if rel not in old else f"{rel} (differs)"
        for rel in sorted(new)
        if rel not in old or not filecmp.cmp(new[rel], old[rel], shallow=False)
    ]
    changed += [f"{rel} (stale, not generated any more)" for rel in sorted(set(old) - set(new))]
    return changed


def install(fresh: Path, out_dir: Path) -> None:
    """Replace the generated areas under ``out_dir`` by the fresh ones."""
    for area in GENERATED_AREAS:
        target = out_dir / NAMESPACE / area
        if target.exists():
            shutil.rmtree(target)
        source = fresh / NAMESPACE / area
        if source.exists():
            shutil.copytree(source, target)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    parser.add_argument("--proto-root", type=Path, default=DEFAULT_PROTO_ROOT)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the contracts src dir")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pw-protos-") as scratch:
        fresh = Path(scratch)
        try:
            generate(args.proto_root.resolve(), fresh)
        except GenerationError as exc:
            print(f"gen_protos: {exc}", file=sys.stderr)
            return 2
        if args.check:
            changed = differences(fresh, args.out)
            if changed:
                print("generated contracts are stale; run `make protos`:", file=sys.stderr)
                for line in changed:
                    print(f"  {line}", file=sys.stderr)
                return 1
            print("generated contracts are up to date")
            return 0
        install(fresh, args.out)
    print(f"generated {len(proto_files(args.proto_root))} proto files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
