"""Local fake push providers (APNs, FCM) with recording and fault injection.

See ``libs/sandbox/README.md``.  The core (``core``), the recording
(``recording``), the faults (``faults``) and the TLS material (``certs``) are
shared by both fakes; ``apns`` and ``fcm`` are the providers.
"""

from pushwarden.sandbox.certs import (
    TlsMaterial,
    client_ssl_context,
    generate_tls_material,
    server_ssl_context,
)
from pushwarden.sandbox.core import (
    Action,
    App,
    Delay,
    DropConnection,
    GoAway,
    Http2Only,
    NoAnswer,
    Request,
    ResetStream,
    Response,
    SandboxServer,
    ThreadedSandbox,
    run_in_thread,
    start_server,
)
from pushwarden.sandbox.faults import FaultPlan, FaultSpec, FaultSpecError
from pushwarden.sandbox.recording import RecordedRequest, Recorder

__all__ = [
    "Action",
    "App",
    "Delay",
    "DropConnection",
    "FaultPlan",
    "FaultSpec",
    "FaultSpecError",
    "GoAway",
    "Http2Only",
    "NoAnswer",
    "RecordedRequest",
    "Recorder",
    "Request",
    "ResetStream",
    "Response",
    "SandboxServer",
    "ThreadedSandbox",
    "TlsMaterial",
    "client_ssl_context",
    "generate_tls_material",
    "run_in_thread",
    "server_ssl_context",
    "start_server",
]
