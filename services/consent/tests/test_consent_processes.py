"""Concurrency across processes, not an asyncio lock: two consent server processes on one
PostgreSQL database, two client processes sending concurrent RecordConsent calls for the
same user, each to its own server. Every call is recorded once, the ledger and the feed
hold them in one order, and the state a reader sees is the last entry of that order.

Run as a script (``python test_consent_processes.py PORT APP USER PREFIX COUNT``), this
file is the client process: it connects, says ``ready``, waits for ``go`` on stdin, sends
COUNT RecordConsent calls at once and prints one JSON line per answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.healthprobe import check
from pushwarden.runtime.servicetest import rich_error
from pushwarden.runtime.testing import postgres_unavailable_reason, throwaway_postgres_database

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub

pytestmark = [pytest.mark.slow, pytest.mark.storage]

APP = "shop"
KEY = "f" * 64
CALLS_PER_CLIENT = 20
DEADLINE_S = 60.0
ALL_MARKETING = resources_pb2.ConsentScope(kind=resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING)
OPT_IN = resources_pb2.CONSENT_ACTION_OPT_IN
OPT_OUT = resources_pb2.CONSENT_ACTION_OPT_OUT


def consent_request(
    user: str, key: str, action: resources_pb2.ConsentAction.ValueType, **fields: Any
) -> messages_pb2.RecordConsentRequest:
    """An ALL_MARKETING choice."""
    return messages_pb2.RecordConsentRequest(
        app_id=APP,
        user_id=user,
        scope=ALL_MARKETING,
        action=action,
        source=resources_pb2.CONSENT_SOURCE_API,
        idempotency_key=key,
        **fields,
    )


# --- the client process ------------------------------------------------------------


async def client_main(port: int, app: str, user: str, prefix: str, count: int) -> None:
    """Send ``count`` concurrent calls (alternating opt-in / opt-out) once told to."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), DEADLINE_S)
        stub = consent_pb2_grpc.ConsentServiceStub(channel)
        print("ready", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            raise SystemExit("expected go")
        requests = [
            messages_pb2.RecordConsentRequest(
                app_id=app,
                user_id=user,
                scope=ALL_MARKETING,
                action=OPT_IN if index % 2 == 0 else OPT_OUT,
                source=resources_pb2.CONSENT_SOURCE_API,
                idempotency_key=f"{prefix}-{index}",
            )
            for index in range(count)
        ]
        replies = await asyncio.gather(
            *(stub.RecordConsent(request, timeout=DEADLINE_S) for request in requests)
        )
    for request, reply in zip(requests, replies, strict=True):
        line = {
            "key": request.idempotency_key,
            "action": request.action,
            "sequence": reply.entry.ledger_sequence,
            "replayed": reply.replayed,
        }
        print(json.dumps(line), flush=True)


# --- the test side -----------------------------------------------------------------


@dataclass
class Server:
    """A consent server process."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(database_url: str, log: Path) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_CONSENT_")}
    env.update(
        {
            "PUSHWARDEN_CONSENT_HOST": "127.0.0.1",
            "PUSHWARDEN_CONSENT_PORT": str(port),
            "PUSHWARDEN_CONSENT_DATABASE_URL": database_url,
            "PUSHWARDEN_CONSENT_PSEUDONYM_KEY": KEY,
            "PUSHWARDEN_CONSENT_DB_POOL_SIZE": "4",
        }
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pushwarden.services.consent"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, port, log)


def wait_serving(server: Server) -> None:
    """SERVING within the deadline, else fail with the server's log."""
    give_up = time.monotonic() + DEADLINE_S
    while time.monotonic() < give_up:
        if server.process.poll() is not None:
            pytest.fail(f"server exited {server.process.returncode}: {server.log.read_text()}")
        try:
            if check(f"127.0.0.1:{server.port}", timeout_s=1.0) == "SERVING":
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server not SERVING within {DEADLINE_S} s: {server.log.read_text()}")


def stop(server: Server) -> int:
    """SIGTERM, and the exit status (killed after the deadline)."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise


@pytest.fixture
def postgres_url() -> Iterator[str]:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    with throwaway_postgres_database() as url:
        yield url


@asynccontextmanager
async def two_servers(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    """Two server processes started at once on one database (their migrations race)."""
    servers = [start_server(database_url, tmp_path / f"server{n}.log") for n in (1, 2)]
    try:
        for server in servers:
            wait_serving(server)
        yield servers[0], servers[1]
    finally:
        codes = [stop(server) for server in servers]
    for server, code in zip(servers, codes, strict=True):
        assert code == 0, f"server exited {code} on SIGTERM: {server.log.read_text()}"


def start_client(server: Server, user: str, prefix: str) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, str(server.port), APP, user, prefix]
    return subprocess.Popen(
        [*command, str(CALLS_PER_CLIENT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_clients(clients: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait until every client is connected, let them all go at once, collect answers."""
    for client in clients:
        assert client.stdout is not None
        line = client.stdout.readline().strip()
        assert line == "ready", line or (client.stderr.read() if client.stderr else "")
    for client in clients:
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
    answers: list[dict[str, Any]] = []
    for client in clients:
        out, err = client.communicate(timeout=DEADLINE_S)
        assert client.returncode == 0, err
        answers += [json.loads(line) for line in out.splitlines()]
    return answers


async def whole_ledger(stub: Stub, user: str) -> messages_pb2.GetLedgerResponse:
    """Every page of the user's ledger in one response (the verification of the last)."""
    whole = messages_pb2.GetLedgerResponse()
    token = ""
    while True:
        page = await stub.GetLedger(
            messages_pb2.GetLedgerRequest(app_id=APP, user_id=user, page_size=7, page_token=token)
        )
        whole.entries.extend(page.entries)
        whole.verification.CopyFrom(page.verification)
        whole.subject = page.subject
        token = page.next_page_token
        if not token:
            return whole


async def feed(stub: Stub) -> list[resources_pb2.Change]:
    changes: list[resources_pb2.Change] = []
    request = messages_pb2.WatchChangesRequest(app_id=APP, stop_at_head=True, max_batch_size=9)
    async for message in stub.WatchChanges(request, timeout=DEADLINE_S):
        changes += message.changes
    return changes


def consecutive(numbers: list[int]) -> bool:
    return numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_two_servers_and_two_clients_record_every_choice_in_one_order(
    postgres_url: str, tmp_path: Path
) -> None:
    user = "user-many"
    async with two_servers(postgres_url, tmp_path) as (first, second):
        answers = run_clients([start_client(first, user, "a"), start_client(second, user, "b")])
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as one,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as two,
        ):
            stubs = [
                consent_pb2_grpc.ConsentServiceStub(one),
                consent_pb2_grpc.ConsentServiceStub(two),
            ]
            await check_many_recorded(stubs, user, answers)
            await check_a_key_sent_to_both_servers_records_once(stubs)


async def check_many_recorded(stubs: list[Stub], user: str, answers: list[dict[str, Any]]) -> None:
    total = 2 * CALLS_PER_CLIENT
    assert len(answers) == total
    assert not any(answer["replayed"] for answer in answers)
    action_at = {answer["sequence"]: answer["action"] for answer in answers}
    assert len(action_at) == total  # every call got its own entry

    ledger = await whole_ledger(stubs[0], user)
    assert ledger == await whole_ledger(stubs[1], user)
    assert ledger.verification.verified, ledger.verification
    assert ledger.verification.entries_checked == total
    sequences = [entry.sequence for entry in ledger.entries]
    assert sorted(set(sequences)) == sequences  # strictly increasing
    # A fresh database that only these calls wrote, none of them failed: no gap.
    assert consecutive(sequences)
    assert set(sequences) == set(action_at)
    for entry in ledger.entries:
        assert entry.kind == resources_pb2.LEDGER_ENTRY_KIND_CONSENT
        assert entry.consent.scope == ALL_MARKETING
        assert entry.consent.action == action_at[entry.sequence]

    last = ledger.entries[-1]
    for stub in stubs:
        state = (
            await stub.GetConsentState(
                messages_pb2.GetConsentStateRequest(app_id=APP, user_id=user)
            )
        ).state
        assert state.marketing_opted_out == (last.consent.action == OPT_OUT)
        assert [(e.ledger_sequence, e.action) for e in state.entries] == [
            (last.sequence, last.consent.action)
        ]
        assert state.as_of_sequence >= last.sequence

    for stub in stubs:
        changes = await feed(stub)
        assert [change.kind for change in changes] == [resources_pb2.CHANGE_KIND_CONSENT] * total
        assert {change.user_id for change in changes} == {user}
        assert [change.consent.ledger_sequence for change in changes] == sequences
        assert [change.consent.action for change in changes] == [
            entry.consent.action for entry in ledger.entries
        ]
        feed_sequences = [change.sequence for change in changes]
        assert consecutive(feed_sequences)


async def check_a_key_sent_to_both_servers_records_once(stubs: list[Stub]) -> None:
    rounds = 5
    for n in range(rounds):
        user, key = f"user-once-{n}", f"once-{n}"
        request = consent_request(user, key, OPT_OUT)
        replies = await asyncio.gather(
            *(stub.RecordConsent(request, timeout=DEADLINE_S) for stub in stubs)
        )
        assert sorted(reply.replayed for reply in replies) == [False, True]
        assert replies[0].entry == replies[1].entry

        for other in (
            consent_request(user, key, OPT_IN),
            consent_request(user, key, OPT_OUT, wording_id="other-wording"),
        ):
            for stub in stubs:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.RecordConsent(other, timeout=DEADLINE_S)
                error = rich_error(refused.value)
                assert error.code == grpc.StatusCode.ALREADY_EXISTS
                assert error.reason == "IDEMPOTENCY_KEY_REUSED"

        ledger = await whole_ledger(stubs[n % 2], user)
        assert ledger.verification.verified
        assert [(e.sequence, e.consent.action) for e in ledger.entries] == [
            (replies[0].entry.ledger_sequence, OPT_OUT)
        ]


if __name__ == "__main__":
    port, app, user, prefix, count = sys.argv[1:6]
    asyncio.run(client_main(int(port), app, user, prefix, int(count)))
