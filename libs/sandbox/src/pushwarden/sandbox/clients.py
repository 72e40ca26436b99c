"""Client-side helpers: real provider clients aimed at a sandbox.

Used by tests, benchmarks and ``make run``.  aioapns has no host/port option:
its pool connects to ``protocol_class.APNS_SERVER`` / ``APNS_PORT``, so a
client is aimed at a fake by giving its pool a protocol class naming it.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aioapns import APNs
from aioapns.connection import APNsProductionClientProtocol
from h2.settings import SettingCodes


@functools.cache
def apns_protocol_for(
    host: str, port: int, max_streams: int | None = None
) -> type[APNsProductionClientProtocol]:
    """An aioapns protocol class that connects to ``host:port`` instead of Apple.

    ``max_streams`` caps the streams aioapns keeps in flight per connection
    (it otherwise takes the server's SETTINGS_MAX_CONCURRENT_STREAMS, 1000 at
    Apple): fewer streams per connection and more connections cost the client
    less CPU, since h2 scans every open stream whenever it opens one.
    """
    attrs: dict[str, Any] = {"APNS_SERVER": host, "APNS_PORT": port}
    if max_streams is not None:
        cap = max_streams

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            APNsProductionClientProtocol.__init__(self, *args, **kwargs)
            self.free_channels.bound = cap

        def on_remote_settings_changed(self: Any, changed_settings: Any) -> None:
            limit = changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
            if limit is not None:
                self.free_channels.bound = min(limit.new_value, cap)

        attrs["__init__"] = __init__
        attrs["on_remote_settings_changed"] = on_remote_settings_changed
    suffix = f"{port}_{max_streams or 'default'}"
    return type(f"SandboxAPNsProtocol_{suffix}", (APNsProductionClientProtocol,), attrs)


def apns_client(
    *,
    host: str,
    port: int,
    ca_file: str | Path,
    key: str,
    key_id: str,
    team_id: str,
    topic: str,
    max_connections: int = 10,
    max_streams: int | None = None,
    **kwargs: Any,
) -> APNs:
    """A real aioapns client (token auth) talking to ``host:port``, trusting ``ca_file``.

    Call it inside the running event loop (aioapns binds to the loop at build).
    ``max_streams``: see :func:`apns_protocol_for` (None keeps aioapns' behaviour).
    The TLS context is the one aioapns builds by default (no ALPN offered),
    trusting ``ca_file`` instead of the system's CAs: the fake serves it
    HTTP/2 by the connection preface, as Apple does.
    """
    client = APNs(
        key=key,
        key_id=key_id,
        team_id=team_id,
        topic=topic,
        max_connections=max_connections,
        ssl_context=ssl.create_default_context(cafile=str(ca_file)),
        **kwargs,
    )
    client.pool.protocol_class = apns_protocol_for(host, port, max_streams)
    return client


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    """What an aioapns token-auth client signs with: the .p8 PEM text, key id, team, topic."""

    key: str
    key_id: str
    team_id: str
    topic: str


def apns_client_for(
    server: Any,
    creds: ApnsCredentials,
    *,
    max_connections: int = 10,
    **kwargs: Any,
) -> APNs:
    """:func:`apns_client` aimed at a running sandbox (``SandboxServer`` or ``ThreadedSandbox``).

    Call it inside the running event loop.
    """
    return apns_client(
        host=server.host,
        port=server.port,
        ca_file=server.ca_file,
        key=creds.key,
        key_id=creds.key_id,
        team_id=creds.team_id,
        topic=creds.topic,
        max_connections=max_connections,
        **kwargs,
    )
