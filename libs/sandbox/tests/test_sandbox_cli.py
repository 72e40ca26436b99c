"""``python -m pushwarden.sandbox apns``: starts, announces itself, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

import httpx
from aioapns import NotificationRequest

from pushwarden.sandbox.apns import generate_signing_key
from pushwarden.sandbox.clients import ApnsCredentials, apns_client

GONE = "e5" * 32
LIVE = "f6" * 32


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pushwarden.sandbox",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    assert line, (await proc.stderr.read()).decode() if proc.stderr else "no output"
    return proc, json.loads(line)


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), timeout=15)


async def test_cli_serves_with_demo_key_and_fault_file(tmp_path: Path) -> None:
    faults = tmp_path / "faults.json"
    faults.write_text(
        json.dumps([{"effect": "status", "token": GONE, "status": 410, "timestamp_ms": 77}])
    )
    state = tmp_path / "state"
    proc, info = await _start(
        "apns", "--port", "0", "--state-dir", str(state), "--faults", str(faults)
    )
    try:
        assert info["provider"] == "apns"
        assert info["faults"] == 1
        host, port = str(info["listening"]).rsplit(":", 1)
        ca_file = str(info["ca_file"])
        assert Path(ca_file).parent == state
        demo = info["demo_key"]
        assert isinstance(demo, dict)
        creds = ApnsCredentials(
            Path(demo["key_file"]).read_text(),  # noqa: ASYNC240 - a small file, once
            demo["key_id"],
            demo["team_id"],
            demo["topic"],
        )
        apns = apns_client(
            host=host,
            port=int(port),
            ca_file=ca_file,
            key=creds.key,
            key_id=creds.key_id,
            team_id=creds.team_id,
            topic=creds.topic,
        )
        gone = await apns.send_notification(NotificationRequest(GONE, {"aps": {"alert": "x"}}))
        live = await apns.send_notification(NotificationRequest(LIVE, {"aps": {"alert": "x"}}))
        apns.pool.close()
        assert (gone.status, gone.description, gone.timestamp) == ("410", "Unregistered", 77)
        assert live.status == "200"
        verify = ssl.create_default_context(cafile=ca_file)
        async with httpx.AsyncClient(verify=verify) as http:
            count = await http.get(f"https://{host}:{port}/_sandbox/count")
        assert count.json() == {"count": 2}
    finally:
        code = await _stop(proc)
    assert code == 0


async def test_cli_accepts_given_keys(tmp_path: Path) -> None:
    pem = generate_signing_key()
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_text(pem)
    proc, info = await _start(
        "apns",
        "--port",
        "0",
        "--state-dir",
        str(tmp_path),
        "--key",
        f"KEY1:TEAM1:{key_file}:com.a.app,com.b.app",
    )
    try:
        assert info["key_ids"] == ["KEY1"]
        assert "demo_key" not in info
        host, port = str(info["listening"]).rsplit(":", 1)
        results = []
        for topic in ("com.b.app", "com.c.app"):
            apns = apns_client(
                host=host,
                port=int(port),
                ca_file=str(info["ca_file"]),
                key=pem,
                key_id="KEY1",
                team_id="TEAM1",
                topic=topic,
            )
            results.append(await apns.send_notification(NotificationRequest(LIVE, {"a": 1})))
            apns.pool.close()
        assert [(r.status, r.description) for r in results] == [
            ("200", None),
            ("400", "TopicDisallowed"),
        ]
    finally:
        assert await _stop(proc) == 0
