"""The .proto sources document every RPC and keep services apart from messages.

buf lint (COMMENTS rules) already requires a comment on every element; these
checks add what a linter cannot: each RPC comment states its idempotency and
its errors, and each service file holds nothing but its service.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parents[3] / "protos"
AREAS = ("consent", "segmentation", "scheduler", "delivery")
IDEMPOTENCY_RE = re.compile(r"\b(Idempotent|Read-only)\b")


@pytest.mark.parametrize("area", AREAS)
def test_every_rpc_states_idempotency_and_errors(
    area: str, rpc_comments: Callable[[str], dict[str, str]]
) -> None:
    comments = rpc_comments(area)
    assert len(comments) >= 5
    for rpc, text in comments.items():
        assert IDEMPOTENCY_RE.search(text), f"{area}.{rpc}: no idempotency statement"
        assert "Errors:" in text, f"{area}.{rpc}: no errors statement"


@pytest.mark.parametrize("area", AREAS)
def test_service_files_hold_only_the_service(area: str) -> None:
    text = (PROTO_ROOT / "pushwarden" / area / "v1" / f"{area}.proto").read_text(encoding="utf-8")
    assert len(re.findall(r"^service \w+Service \{", text, re.MULTILINE)) == 1
    assert not re.search(r"^(message|enum) ", text, re.MULTILINE)


def test_packages_mirror_directories() -> None:
    files = sorted(PROTO_ROOT.rglob("*.proto"))
    assert len(files) >= 17
    for path in files:
        expected = ".".join(path.parent.relative_to(PROTO_ROOT).parts)
        assert f"\npackage {expected};\n" in path.read_text(encoding="utf-8"), path


BEHAVIOUR_RE = re.compile(r"^\s*(Required|Optional|Output only|Immutable|For [^:.]+:)")


def _descriptor_set_with_comments(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path / "contracts.binpb"
    files = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in PROTO_ROOT.rglob("*.proto"))
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *files,
    ]
    assert protoc.main(args) == 0
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _collect(
    message: descriptor_pb2.DescriptorProto,
    scope: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    messages: dict[str, descriptor_pb2.DescriptorProto],
    documented: dict[tuple[str, str], bool],
) -> None:
    """Record a message (and its nested ones) and whether each field states its behaviour."""
    name = f"{scope}.{message.name}"
    messages[name] = message
    oneof_ok = [
        bool(BEHAVIOUR_RE.match(comments.get((*path, 8, i), "")))
        for i in range(len(message.oneof_decl))
    ]
    for index, field in enumerate(message.field):
        own = bool(BEHAVIOUR_RE.match(comments.get((*path, 2, index), "")))
        in_oneof = field.HasField("oneof_index") and not field.proto3_optional
        documented[(name, field.name)] = own or (in_oneof and oneof_ok[field.oneof_index])
    for index, nested in enumerate(message.nested_type):
        _collect(nested, name, (*path, 3, index), comments, messages, documented)


def test_every_input_field_states_its_behaviour(tmp_path: Path) -> None:
    """Fields a caller can send start with Required / Optional / Output only / Immutable.

    Response-only messages are output only by construction; oneof members
    inherit the behaviour stated on their oneof.
    """
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}
    documented: dict[tuple[str, str], bool] = {}
    for file in _descriptor_set_with_comments(tmp_path).file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for index, message in enumerate(file.message_type):
            _collect(message, f".{file.package}", (4, index), comments, messages, documented)

    reachable: set[str] = set()
    stack = [name for name in messages if name.endswith("Request")]
    while stack:
        name = stack.pop()
        if name in reachable or name not in messages:
            continue
        reachable.add(name)
        stack.extend(f.type_name for f in messages[name].field if f.type_name)
    assert len(reachable) > 60
    missing = sorted(
        f"{name}.{field.name}"
        for name in reachable
        if not messages[name].options.map_entry
        for field in messages[name].field
        if not documented[(name, field.name)]
    )
    assert missing == []


def test_every_enum_tells_readers_what_to_do_with_unknown_values(tmp_path: Path) -> None:
    """v1 enums may grow, so each says that readers skip unknown values and followers
    still advance their cursor (a follower that stalls on a newer server never recovers)."""
    silent: list[str] = []
    count = 0
    for file in _descriptor_set_with_comments(tmp_path).file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        enums: list[tuple[str, tuple[int, ...]]] = [
            (f"{file.package}.{e.name}", (5, i)) for i, e in enumerate(file.enum_type)
        ]
        for index, message in enumerate(file.message_type):
            enums.extend(
                (f"{file.package}.{message.name}.{e.name}", (4, index, 4, j))
                for j, e in enumerate(message.enum_type)
            )
        for name, path in enums:
            count += 1
            text = " ".join(comments.get(path, "").split())
            if "unknown value" not in text or "advances its cursor" not in text:
                silent.append(name)
    assert count > 40
    assert silent == []
