"""Command line: ``python -m pushwarden.sandbox {apns,fcm} --port N [...]``.

Starts one fake provider, prints one JSON line saying where it listens and
which CA to trust, serves until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from pushwarden.sandbox import speedups
from pushwarden.sandbox.apns import ApnsApp, ApnsKey, generate_signing_key
from pushwarden.sandbox.certs import TlsMaterial, generate_tls_material, server_ssl_context
from pushwarden.sandbox.core import DEFAULT_MAX_STREAMS, App, start_server
from pushwarden.sandbox.faults import FaultPlan
from pushwarden.sandbox.recording import Recorder

DEMO_KEY_ID = "SANDBOXKEY"
DEMO_TEAM_ID = "SANDBOXTEAM"
DEMO_TOPIC = "com.pushwarden.sandbox"


def _parse_key(text: str) -> ApnsKey:
    """``KEY_ID:TEAM_ID:PEM_PATH:TOPIC[,TOPIC...]`` (the PEM: a .p8 or a public key)."""
    try:
        key_id, team_id, path, topics = text.split(":", 3)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--key wants KEY_ID:TEAM_ID:PEM_PATH:TOPIC[,TOPIC...]"
        ) from None
    pem = Path(path).read_text()
    topic_list = [t for t in topics.split(",") if t]
    if "PRIVATE KEY" in pem:
        return ApnsKey.from_private_pem(key_id, team_id, pem, topic_list)
    return ApnsKey(key_id, team_id, pem, tuple(topic_list))


def _apns_keys(args: argparse.Namespace, state_dir: Path) -> tuple[list[ApnsKey], dict[str, Any]]:
    keys: list[ApnsKey] = list(args.key or [])
    if args.keys:
        path = Path(args.keys)
        data = json.loads(path.read_text())
        keys.extend(ApnsKey.from_json(item, path.parent) for item in data)
    extra: dict[str, Any] = {}
    if not keys:
        # No key given: make (once) a demo key under the state dir, so that
        # `make run` and a developer's shell share one that clients can sign with.
        pem_path = state_dir / "apns-demo-key.p8"
        if not pem_path.is_file():
            pem_path.write_text(generate_signing_key())
            pem_path.chmod(0o600)
        keys.append(
            ApnsKey.from_private_pem(DEMO_KEY_ID, DEMO_TEAM_ID, pem_path.read_text(), [DEMO_TOPIC])
        )
        extra["demo_key"] = {
            "key_file": str(pem_path),
            "key_id": DEMO_KEY_ID,
            "team_id": DEMO_TEAM_ID,
            "topic": DEMO_TOPIC,
        }
    return keys, extra


def _build_apns(
    args: argparse.Namespace, state_dir: Path, recorder: Recorder, faults: FaultPlan
) -> tuple[App, dict[str, Any]]:
    keys, extra = _apns_keys(args, state_dir)
    extra["key_ids"] = [k.key_id for k in keys]
    return ApnsApp(keys, recorder=recorder, faults=faults), extra


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (the fcm subcommand's options come from the fcm module)."""
    parser = argparse.ArgumentParser(prog="python -m pushwarden.sandbox", description=__doc__)
    sub = parser.add_subparsers(dest="provider", required=True)
    for name, port in (("apns", 50061), ("fcm", 50062)):
        p = sub.add_parser(name, help=f"fake {name.upper()} (default port {port} in make run)")
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=port, help="0 picks a free port")
        p.add_argument("--state-dir", default="var/sandbox", help="TLS material and demo keys")
        p.add_argument("--faults", help="JSON file: one fault spec or a list (see README)")
        p.add_argument(
            "--record-limit",
            type=int,
            default=200_000,
            help="requests kept in the recording (oldest forgotten first; 0: no limit)",
        )
        if name == "apns":
            p.add_argument(
                "--key",
                action="append",
                type=_parse_key,
                help="accepted key, KEY_ID:TEAM_ID:PEM_PATH:TOPIC[,TOPIC...] (repeatable)",
            )
            p.add_argument("--keys", help="JSON file: a list of key objects (see README)")
            p.add_argument("--max-streams", type=int, default=DEFAULT_MAX_STREAMS)
        else:
            from pushwarden.sandbox import fcm

            fcm.add_cli_arguments(p)
    return parser


async def serve(args: argparse.Namespace) -> None:
    """Start the chosen fake, announce it, and serve until a stop signal."""
    # Start-up work (files, keys) is done before serving, so blocking is fine.
    state_dir = Path(args.state_dir)
    material: TlsMaterial = generate_tls_material(state_dir)
    recorder = Recorder(limit=args.record_limit or None)
    faults = FaultPlan()
    extra: dict[str, Any] = {}
    if args.provider == "apns":
        if args.faults:
            faults = FaultPlan.from_file(Path(args.faults))
        app, extra = _build_apns(args, state_dir, recorder, faults)
        max_streams = args.max_streams
    else:
        from pushwarden.sandbox import fcm

        # The fcm app builds its recorder and fault plan (from --faults) itself.
        app = fcm.build_app(args, material)
        recorder = getattr(app, "recorder", recorder)
        recorder.limit = args.record_limit or None
        faults = getattr(app, "faults", faults)
        max_streams = DEFAULT_MAX_STREAMS
    server = await start_server(
        app,
        host=args.host,
        port=args.port,
        ssl_context=server_ssl_context(material),
        recorder=recorder,
        faults=faults,
        material=material,
        max_streams=max_streams,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    line = {
        "provider": args.provider,
        "listening": f"{args.host}:{server.port}",
        "url": server.url,
        "ca_file": str(material.ca_file),
        "control": f"{server.url}/_sandbox/",
        "faults": len(faults),
        **extra,
    }
    print(json.dumps(line), flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    speedups.install()
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
