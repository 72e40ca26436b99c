"""Delivery's service tests start from databases already at the migrations' head (copied
from a template migrated once per session: see ``pushwarden.runtime.testing``).

The ``platform`` fixture is the world a delivery test runs in: a real consent service
served in-process on its own database (same backend as delivery's), the fake APNs and
fake FCM with one app's credentials, and one clock file every service reads, so a test
moves time for all of them instead of sleeping. ``platform.delivery()`` serves a
delivery app on the test's database (several may run at once, as replicas do).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.runtime.db import is_sqlite
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.runtime.testing import throwaway_postgres_database
from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.core import SandboxServer, ThreadedSandbox
from pushwarden.services.consent.bootstrap import bootstrap as consent_bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.delivery.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.delivery.telemetry import AttemptTelemetry

if TYPE_CHECKING:
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as ConsentStub
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )

PUSHWARDEN_TEST_MIGRATIONS = MIGRATIONS

APP = "shop"
TOPIC = "com.example.shop"
PROJECT = "shop-project"
PSEUDONYM_KEY = "k" * 64
_numbers = itertools.count(1)


@dataclass
class Sandbox:
    """The fake providers and the credentials file that points at them."""

    apns: SandboxServer
    fcm: ThreadedSandbox
    credentials_file: Path


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    """A fake APNs (on this loop) and a fake FCM (own thread: google-auth blocks) with
    one app's credentials; their CA is trusted process-wide while the test runs."""
    state = tmp_path / "sandbox"
    pem = generate_signing_key()
    (tmp_path / "shop.p8").write_text(pem)
    key = ApnsKey.from_private_pem("KEY0000001", "TEAM000001", pem, [TOPIC])
    account, account_key = fcm.new_service_account(PROJECT)
    apns_server = await start_apns([key], state_dir=state)
    assert apns_server.ca_file is not None
    try:
        with (
            fcm.run_fcm_in_thread([account], state_dir=state) as fcm_server,
            fcm.sandbox_ca_trust(apns_server.ca_file),
        ):
            fcm.write_service_account_file(
                tmp_path / "shop-sa.json", account, account_key, f"{fcm_server.url}/token"
            )
            credentials = tmp_path / "credentials.toml"
            credentials.write_text(
                "\n".join(
                    [
                        f"[apps.{APP}.apns]",
                        'key_file = "shop.p8"',
                        'key_id = "KEY0000001"',
                        'team_id = "TEAM000001"',
                        f'topic = "{TOPIC}"',
                        'environment = "sandbox"',
                        f"endpoint = '{apns_server.url}'",
                        f"[apps.{APP}.fcm]",
                        'service_account_file = "shop-sa.json"',
                        f'project_id = "{PROJECT}"',
                        f"endpoint = '{fcm_server.url}'",
                    ]
                )
                + "\n"
            )
            yield Sandbox(apns_server, fcm_server, credentials)
    finally:
        await apns_server.close()


@contextlib.contextmanager
def _sibling_database(url: str, tmp_path: Path) -> Iterator[str]:
    """Another empty database on the same backend as ``url`` (consent's own)."""
    if is_sqlite(url):
        yield f"sqlite:///{tmp_path / 'consent' / 'consent.db'}"
        return
    with throwaway_postgres_database("pw_consent_") as other:
        yield other


class Platform:
    """Consent serving, the fakes, one clock file, and a way to serve delivery."""

    def __init__(
        self,
        database_url: str,
        consent: ConsentStub,
        consent_addr: str,
        sandbox: Sandbox,
        clock_file: Path,
    ) -> None:
        self.database_url = database_url
        self.consent = consent
        self.consent_addr = consent_addr
        self.sandbox = sandbox
        self.clock_file = clock_file

    app = APP
    topic = TOPIC

    @staticmethod
    async def eventually(
        check: Callable[[], Awaitable[bool]], *, within_s: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll ``check`` until it holds; fail after a generous ``within_s`` seconds."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{what} did not happen within {within_s} s")
            await asyncio.sleep(0.05)

    def delivery_config(self, *, dispatch: bool = True, **extra: str) -> DeliveryConfig:
        """Delivery on the test's database, pointed at consent and the fakes."""
        settings = {
            "CONSENT_ADDR": self.consent_addr,
            "CREDENTIALS": str(self.sandbox.credentials_file),
            "CLOCK_FILE": str(self.clock_file),
            "DISPATCH": "true" if dispatch else "false",
            "DISPATCH_POLL_S": "0.05",
            "RETRY_BASE_S": "30",
            "APNS_TIMEOUT": "5",
            "FCM_TIMEOUT": "5",
        }
        settings.update(extra)
        return local_test_config(DeliveryConfig, self.database_url, **settings)

    @contextlib.asynccontextmanager
    async def delivery(
        self, *, dispatch: bool = True, telemetry: AttemptTelemetry | None = None, **extra: str
    ) -> AsyncIterator[DeliveryStub]:
        """Serve a delivery app (its dispatcher too, unless ``dispatch`` is false)."""
        config = self.delivery_config(dispatch=dispatch, **extra)
        async with serving(bootstrap(config, telemetry=telemetry)) as ch:
            stub: DeliveryStub = delivery_pb2_grpc.DeliveryServiceStub(ch)
            yield stub

    async def define_categories(self) -> None:
        """``promos`` (marketing, opted in by default) and ``orders`` (transactional)."""
        for category_id, kind in (
            ("promos", types_pb2.CATEGORY_KIND_MARKETING),
            ("orders", types_pb2.CATEGORY_KIND_TRANSACTIONAL),
        ):
            await self.consent.DefineCategory(
                messages_pb2.DefineCategoryRequest(
                    app_id=APP,
                    category=resources_pb2.Category(
                        category_id=category_id,
                        kind=kind,
                        default_state=resources_pb2.DEFAULT_STATE_OPTED_IN,
                    ),
                )
            )

    async def register(
        self, user_id: str, platform: types_pb2.Platform.ValueType
    ) -> resources_pb2.Device:
        """A device with notifications allowed: iOS on APNs, Android on FCM."""
        ios = platform == types_pb2.PLATFORM_IOS
        number = next(_numbers)
        answer = await self.consent.RegisterDevice(
            messages_pb2.RegisterDeviceRequest(
                app_id=APP,
                device=resources_pb2.Device(
                    user_id=user_id,
                    platform=platform,
                    provider=types_pb2.PROVIDER_APNS if ios else types_pb2.PROVIDER_FCM,
                    token=f"{number:064x}" if ios else f"fcm-token-{number}",
                    time_zone="Europe/Paris",
                    permission=types_pb2.PERMISSION_STATE_GRANTED,
                ),
            )
        )
        return answer.device


@pytest.fixture
async def platform(
    any_database_url: str, tmp_path: Path, sandbox: Sandbox
) -> AsyncIterator[Platform]:
    """Consent serving on its own database of the test's backend, plus the fakes."""
    clock_file = tmp_path / "clock.json"
    with _sibling_database(any_database_url, tmp_path) as consent_url:
        consent_app = consent_bootstrap(
            local_test_config(
                ConsentConfig,
                consent_url,
                PSEUDONYM_KEY=PSEUDONYM_KEY,
                CLOCK_FILE=str(clock_file),
            )
        )
        async with serving(consent_app) as channel:
            assert consent_app.runtime is not None
            stub: ConsentStub = consent_pb2_grpc.ConsentServiceStub(channel)
            built = Platform(
                any_database_url,
                stub,
                f"127.0.0.1:{consent_app.runtime.port}",
                sandbox,
                clock_file,
            )
            await built.define_categories()
            yield built


@pytest.fixture(autouse=True)
async def _no_task_outlives_the_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Bound the wait for tasks a test leaves behind (torn down last, before the loop).

    Stopping a service cancels its in-flight calls; SQLAlchemy then closes the cancelled
    call's connection in a shielded task that absorbs every cancellation until the close
    is done. Very rarely (about once per full CI run, on SQLite) that close never
    completed and the event loop's close waited for it until the test timed out. Such a
    task is given 10 s here; if it is still running, its stack is reported as a warning
    and the loop is told to forget it, so one stuck clean-up cannot hang the suite."""
    yield
    current = asyncio.current_task()
    left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    if not left:
        return
    _, stuck = await asyncio.wait(left, timeout=10)
    for task in stuck:
        stack = io.StringIO()
        task.print_stack(file=stack)
        warnings.warn(
            f"{request.node.nodeid}: a task ignored cancellation for 10 s after the test; "
            f"left behind:\n{stack.getvalue()}",
            RuntimeWarning,
            stacklevel=1,
        )
        asyncio.tasks._unregister_task(task)  # the loop must not wait on it
