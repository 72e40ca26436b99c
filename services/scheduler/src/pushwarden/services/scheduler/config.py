"""Settings of the scheduler service (``PUSHWARDEN_SCHEDULER_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwarden.runtime.config import ServiceConfig, port_setting, setting

SERVICE = "scheduler"
DEFAULT_PORT = 50053

_TARGET_HELP = (
    "gRPC target of the {peer} service: host:port, or dns:///host:port to balance "
    "over every replica the name resolves to."
)


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig(ServiceConfig):
    """The scheduler's configuration: the runtime's settings plus where the three
    services it calls listen (consent for eligibility, segmentation for audiences and
    events, delivery for sends), and how its dispatch loops and outbox run."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
    consent_addr: str = setting("127.0.0.1:50051", help=_TARGET_HELP.format(peer="consent"))
    segmentation_addr: str = setting(
        "127.0.0.1:50052", help=_TARGET_HELP.format(peer="segmentation")
    )
    delivery_addr: str = setting("127.0.0.1:50054", help=_TARGET_HELP.format(peer="delivery"))

    peer_timeout_s: float = setting(
        5.0,
        help="Seconds a call to consent, segmentation or delivery may take before it is "
        "abandoned; the intents it was for are tried again later.",
        minimum=0.1,
        maximum=120,
    )
    dispatch: bool = setting(
        True,
        help="Run the dispatch loops and the outbox in this process; false makes an "
        "API-only replica that stores intents for the replicas that dispatch.",
    )
    dispatch_batch: int = setting(
        500,
        help="Intents claimed per dispatch batch (one CheckEligibility call per category "
        "in it, at most 1,000 users each) and sends per Deliver call from the outbox.",
        minimum=1,
        maximum=1000,
    )
    fanout_page_size: int = setting(
        1000,
        help="Audience members per page of a campaign's fan-out (one transaction of "
        "intents and one RecordAssignments call each; the resume point after a restart).",
        minimum=1,
        maximum=10_000,
    )
    marketing_loops: int = setting(
        2,
        help="Marketing dispatch loops per process: while one waits for consent or "
        "segmentation, another decides (claims and per-user locks keep them apart, as "
        "they keep replicas apart). The transactional lane always has a loop of its own.",
        minimum=1,
        maximum=8,
    )
    dispatch_poll_s: float = setting(
        0.5,
        help="Seconds a dispatch loop or the outbox waits before looking again when "
        "nothing was due.",
        minimum=0.01,
        maximum=60,
    )
    claim_lease_s: float = setting(
        60.0,
        help="Seconds a claimed intent or outbox entry stays with the process that "
        "claimed it; a process that dies holding it gives it back after this long. Keep "
        "it well above the peer timeout.",
        minimum=1,
        maximum=3600,
    )
    handoff_retry_max_s: float = setting(
        30.0,
        help="Longest wait between two tries of handing an outbox batch to delivery "
        "(the wait doubles from 0.5 s while delivery is unreachable).",
        minimum=0.1,
        maximum=3600,
    )
