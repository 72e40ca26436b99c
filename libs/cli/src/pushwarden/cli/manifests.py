"""Resource files for ``pushwarden apply``: YAML (one or more ``---`` documents) or JSON
(one document or a list), each document one resource::

    kind: Category        # Category, Policy, Segment or Campaign
    app: shop             # optional: the --app of the command line otherwise
    spec:                 # the contract's message in its JSON mapping
      category_id: promos
      kind: CATEGORY_KIND_MARKETING
      default_state: DEFAULT_STATE_OPTED_IN

``spec`` is the message the RPC takes (``pushwarden.consent.v1.Category``,
``pushwarden.scheduler.v1.Policy``, ``pushwarden.segmentation.v1.Segment``,
``pushwarden.scheduler.v1.Campaign``) in protobuf's JSON mapping, field names as in the
``.proto`` files or in lowerCamelCase, enum values by name. A Campaign may name its
``key`` (default: its ``spec.name``): the idempotency key that makes applying it again a
no-op. A problem in a file is reported as one line naming the file, the document and the
field, and nothing is sent.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.message import Message

from pushwarden.cli.errors import EXIT_INPUT, CliError
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.scheduler.v1 import resources_pb2 as scheduler_resources
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_resources

__all__ = ["KINDS", "Resource", "load_files", "parse_document"]

# In the order apply sends them: what a later kind names must exist first.
KINDS: dict[str, type[Message]] = {
    "Category": consent_resources.Category,
    "Policy": scheduler_resources.Policy,
    "Segment": segmentation_resources.Segment,
    "Campaign": scheduler_resources.Campaign,
}
_ID_FIELD = {"Category": "category_id", "Segment": "segment_id"}
_OUTPUT_ONLY = {
    "Category": ("created_at", "updated_at"),
    "Policy": ("version", "updated_at"),
    "Segment": ("referenced_segment_ids", "referenced_list_ids", "created_at", "deleted_at"),
    "Campaign": ("campaign_id", "state", "progress", "created_at", "started_at", "finished_at"),
}
_TOP_LEVEL = {"kind", "app", "spec", "key"}
MAX_KEY_LENGTH = 128
KEY_PREFIX = "pushwarden-cli:"


@dataclass(frozen=True, slots=True)
class Resource:
    """One parsed document: its kind, app, the message to send, the name shown in
    output, the campaign idempotency key, and where it came from (``file#n``)."""

    kind: str
    app_id: str
    message: Message
    name: str
    key: str
    origin: str


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _parse_error_text(text: str, root: str) -> str:
    """protobuf's ParseError text as ``spec.path.to.field: problem``."""
    text = text.strip().splitlines()[0]
    path = [root]
    while match := re.match(r"Failed to parse (\w+) field: ", text):
        path.append(match.group(1))
        text = text[match.end() :]
    unknown = re.match(r'Message type "[\w.]+" has no field named "([^"]+)" at "([\w.]*)"', text)
    if unknown:
        inner = unknown.group(2).split(".")[1:]
        return ".".join([root, *inner, unknown.group(1)]) + ": unknown field"
    text = re.sub(r"\s+at [\w.]+\.*$", "", text).rstrip(".")
    return f"{'.'.join(path)}: {text}"


def parse_document(document: object, origin: str, default_app: str | None) -> Resource:
    """One document as a :class:`Resource`; a :class:`CliError` naming the field if not."""

    def bad(problem: str) -> CliError:
        return CliError(f"{origin}: {problem}", EXIT_INPUT)

    if not isinstance(document, dict):
        raise bad(f"a document is a mapping with kind and spec, not {type(document).__name__}")
    unknown = sorted(str(key) for key in document if key not in _TOP_LEVEL)
    if unknown:
        raise bad(f"{unknown[0]}: unknown key (a document has kind, app, spec and key)")
    kind = document.get("kind")
    if not isinstance(kind, str) or not kind.strip():
        raise bad(f"kind: required, one of {', '.join(KINDS)}")
    matches = [name for name in KINDS if name.lower() == kind.strip().lower()]
    if not matches:
        raise bad(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    kind = matches[0]
    app = document.get("app", default_app)
    if not isinstance(app, str) or not app.strip():
        raise bad("app: required (in the document or as --app / PUSHWARDEN_CLI_APP)")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise bad(f"spec: required, a mapping (the {KINDS[kind].DESCRIPTOR.full_name})")
    for field in _OUTPUT_ONLY[kind]:
        if field in spec or _camel(field) in spec:
            raise bad(f"spec.{field}: output only (the service sets it)")
    message = KINDS[kind]()
    try:
        json_format.ParseDict(_plain(spec), message)
    except json_format.ParseError as exc:
        raise bad(_parse_error_text(str(exc), "spec")) from None
    key = document.get("key")
    if key is not None and kind != "Campaign":
        raise bad("key: only a Campaign has a key (the others are named by their id)")
    name = ""
    if kind in _ID_FIELD:
        name = str(getattr(message, _ID_FIELD[kind]))
        if not name:
            raise bad(f"spec.{_ID_FIELD[kind]}: required (apply names {kind}s by their id)")
    elif kind == "Policy":
        name = app
    else:
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise bad("key: a non-empty string")
        name = key if isinstance(key, str) else str(getattr(message, "name", ""))
        if not name.strip():
            raise bad("spec.name: required (or key: the campaign's idempotency key)")
        if len(KEY_PREFIX + name) > MAX_KEY_LENGTH:
            raise bad(f"key: at most {MAX_KEY_LENGTH - len(KEY_PREFIX)} characters")
    return Resource(kind, app, message, name, KEY_PREFIX + name, origin)


def _plain(value: Any) -> Any:
    """YAML's native dates and times as the RFC 3339 strings the JSON mapping takes."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if hasattr(value, "isoformat") and not isinstance(value, str):
        text = value.isoformat()
        return text.replace("+00:00", "Z") if "T" in text else text
    return value


def _documents(path: str) -> Iterable[tuple[object, str]]:
    label = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{label}: cannot read ({exc.strerror})", EXIT_INPUT) from None
    if path.endswith(".json"):
        try:
            loaded: object = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"{label}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})",
                EXIT_INPUT,
            ) from None
        docs = loaded if isinstance(loaded, list) else [loaded]
    else:
        try:
            docs = []
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, list):
                    docs.extend(doc)
                elif doc is not None:
                    docs.append(doc)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise CliError(f"{label}: not YAML{where}: {problem}", EXIT_INPUT) from None
    for number, doc in enumerate(docs, 1):
        yield doc, f"{label}#{number}"


def load_files(paths: Iterable[str], default_app: str | None) -> list[Resource]:
    """Every resource of ``paths``, checked, in apply order (by kind, then as written)."""
    resources = [
        parse_document(doc, origin, default_app)
        for path in paths
        for doc, origin in _documents(path)
    ]
    if not resources:
        raise CliError("no resource in the given files", EXIT_INPUT)
    seen: dict[tuple[str, str, str], str] = {}
    for resource in resources:
        identity = (resource.kind, resource.app_id, resource.name)
        if identity in seen:
            raise CliError(
                f"{resource.origin}: {resource.kind} {resource.name!r} is also defined "
                f"at {seen[identity]}",
                EXIT_INPUT,
            )
        seen[identity] = resource.origin
    order = list(KINDS)
    return sorted(resources, key=lambda r: order.index(r.kind))
