"""Campaign commands' work: lifecycle calls, the live watch, statistics, explain."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from pushwarden.cli.connection import Clients
from pushwarden.cli.errors import CliError
from pushwarden.cli.render import (
    duration_text,
    enum_text,
    key_value_table,
    message_dict,
    table,
    timestamp_text,
)
from pushwarden.common.v1 import decision_pb2
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.scheduler.v1 import messages_pb2 as scheduler_messages
from pushwarden.scheduler.v1 import resources_pb2 as scheduler_resources

__all__ = [
    "FINAL_STATES",
    "campaign_view",
    "explain_view",
    "get_campaign",
    "lifecycle",
    "schedule_text",
    "stats_view",
    "watch",
]

Campaign = scheduler_resources.Campaign
FINAL_STATES = frozenset(
    {scheduler_resources.CAMPAIGN_STATE_COMPLETED, scheduler_resources.CAMPAIGN_STATE_CANCELLED}
)


def state_text(campaign: Campaign) -> str:
    """The campaign's state without its prefix."""
    return enum_text(scheduler_resources.CampaignState, campaign.state, "CAMPAIGN_STATE_")


async def get_campaign(clients: Clients, app_id: str, campaign_id: str) -> Campaign:
    """GetCampaign."""
    answer = await clients.call(
        "scheduler",
        clients.scheduler.GetCampaign,
        scheduler_messages.GetCampaignRequest(app_id=app_id, campaign_id=campaign_id),
    )
    return answer.campaign


async def lifecycle(clients: Clients, verb: str, app_id: str, campaign_id: str) -> Campaign:
    """StartCampaign, PauseCampaign, ResumeCampaign or CancelCampaign."""
    scheduler = clients.scheduler
    calls: dict[str, Any] = {
        "start": (scheduler.StartCampaign, scheduler_messages.StartCampaignRequest),
        "pause": (scheduler.PauseCampaign, scheduler_messages.PauseCampaignRequest),
        "resume": (scheduler.ResumeCampaign, scheduler_messages.ResumeCampaignRequest),
        "cancel": (scheduler.CancelCampaign, scheduler_messages.CancelCampaignRequest),
    }
    rpc, request = calls[verb]
    answer = await clients.call("scheduler", rpc, request(app_id=app_id, campaign_id=campaign_id))
    campaign: Campaign = answer.campaign
    return campaign


def schedule_text(campaign: Campaign) -> str:
    schedule = campaign.schedule
    mode = schedule.WhichOneof("mode")
    if mode == "at":
        return f"at {timestamp_text(schedule.at.send_at)}"
    if mode == "local_time":
        local = schedule.local_time
        return (
            f"local time {local.date.year:04d}-{local.date.month:02d}-{local.date.day:02d} "
            f"{local.time.hours:02d}:{local.time.minutes:02d}"
        )
    if mode == "best_time":
        return (
            f"best time {timestamp_text(schedule.best_time.window_start)} .. "
            f"{timestamp_text(schedule.best_time.window_end)}"
        )
    return mode or ""


def _done(campaign: Campaign) -> int:
    progress = campaign.progress
    return progress.sent + progress.dropped + progress.holdout


def outcome_table(campaign: Campaign) -> Table:
    """Decisions by outcome and reason."""
    rows = sorted(
        (
            enum_text(decision_pb2.Outcome, count.outcome, "OUTCOME_"),
            enum_text(decision_pb2.ReasonCode, count.reason, "REASON_CODE_"),
            count.count,
        )
        for count in campaign.progress.by_outcome
    )
    return table("Decisions", ["outcome", "reason", "count"], rows)


def campaign_view(campaign: Campaign) -> Group:
    """The campaign, its progress and its decisions for people."""
    progress = campaign.progress
    summary = key_value_table(
        f"Campaign {campaign.campaign_id}",
        [
            ("name", campaign.name),
            ("state", state_text(campaign)),
            ("category", campaign.category_id),
            ("audience", ", ".join(campaign.audience.include_segment_ids)),
            ("schedule", schedule_text(campaign)),
            ("holdout", f"{campaign.holdout_basis_points / 100:g} %"),
            (
                "audience size",
                f"{progress.audience_size}"
                + ("" if progress.fan_out_complete else " (fan-out running)"),
            ),
            ("sent", progress.sent),
            ("dropped", progress.dropped),
            ("held out", progress.holdout),
            ("pending", f"{progress.pending} ({progress.deferred} deferred)"),
            ("started", timestamp_text(campaign.started_at)),
            ("finished", timestamp_text(campaign.finished_at)),
        ],
    )
    variants = table(
        "Variants",
        ["variant", "weight", "assigned", "sent"],
        [
            (
                v.variant_id,
                next(
                    (f"{x.weight} %" for x in campaign.variants if x.variant_id == v.variant_id), ""
                ),
                v.assigned,
                v.sent,
            )
            for v in progress.variants
        ],
    )
    return Group(summary, variants, outcome_table(campaign))


async def watch(
    clients: Clients,
    app_id: str,
    campaign_id: str,
    *,
    interval_s: float,
    max_wait_s: float | None,
    console: Console | None,
) -> Campaign:
    """Poll GetCampaign until the campaign is COMPLETED or CANCELLED, showing a live
    progress bar of decided users (sent, dropped, held out) over the audience on
    ``console`` (none: quietly). A PAUSED campaign is watched on."""
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.fields[state]:<9}"),
        BarColumn(bar_width=18),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
    )
    with Progress(*columns, console=console, disable=console is None) as bar:
        task = bar.add_task(campaign_id, total=None, state="", counts="")
        while True:
            campaign = await get_campaign(clients, app_id, campaign_id)
            progress = campaign.progress
            bar.update(
                task,
                total=progress.audience_size if progress.fan_out_complete else None,
                completed=_done(campaign),
                state=state_text(campaign),
                counts=(
                    f"sent {progress.sent}, dropped {progress.dropped}, holdout "
                    f"{progress.holdout}, pending {progress.pending}"
                ),
            )
            if campaign.state in FINAL_STATES:
                if progress.audience_size and progress.fan_out_complete:
                    bar.update(task, total=progress.audience_size)
                return campaign
            if max_wait_s is not None and time.monotonic() - started > max_wait_s:
                raise CliError(
                    f"campaign {campaign_id} is still {state_text(campaign)} after "
                    f"{max_wait_s:g} s ({_done(campaign)} of {progress.audience_size} decided)"
                )
            await asyncio.sleep(interval_s)


async def stats(
    clients: Clients, app_id: str, campaign_id: str, window_h: float | None
) -> delivery_messages.GetCampaignStatsResponse:
    """Delivery's GetCampaignStats."""
    request = delivery_messages.GetCampaignStatsRequest(app_id=app_id, campaign_id=campaign_id)
    if window_h is not None:
        request.attribution_window.CopyFrom(Duration(seconds=round(window_h * 3600)))
    return await clients.call("delivery", clients.delivery.GetCampaignStats, request)


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def stats_view(answer: delivery_messages.GetCampaignStatsResponse) -> Group:
    """GetCampaignStats for people: one row per group, then the lift."""
    groups = [("total", answer.total), *((f"variant {g.variant_id}", g) for g in answer.variants)]
    columns = [
        "group",
        "targeted",
        "sent",
        "delivered",
        "failed",
        "suppressed",
        "expired",
        "opened",
        "open rate",
        "converted",
        "conv. rate",
    ]
    rows: list[list[object]] = [
        [
            name,
            g.targeted,
            g.sent,
            g.delivered,
            g.failed,
            g.suppressed,
            g.expired,
            g.opened,
            _percent(g.open_rate),
            g.converted_users,
            _percent(g.conversion_rate),
        ]
        for name, g in groups
    ]
    if answer.HasField("holdout"):
        holdout = answer.holdout
        rows.append(
            [
                "holdout",
                holdout.users,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                holdout.converted_users,
                _percent(holdout.conversion_rate),
            ]
        )
    subject = answer.campaign_id or answer.trigger_id
    window = duration_text(answer.attribution_window)
    parts: list[Any] = [
        table(f"Statistics of {subject} (attribution window {window})", columns, rows)
    ]
    lifts = [(name, g.lift) for name, g in groups if g.HasField("lift")]
    if lifts:
        parts.append(
            table(
                "Lift against the holdout",
                [
                    "group",
                    "treatment",
                    "holdout",
                    "absolute",
                    "relative",
                    "95% interval",
                    "significant",
                ],
                [
                    (
                        name,
                        _percent(lift.treatment_rate),
                        _percent(lift.holdout_rate),
                        f"{lift.absolute_lift * 100:+.1f} pts",
                        _percent(lift.relative_lift),
                        f"{lift.absolute_lift_ci.lower * 100:+.1f} .. "
                        f"{lift.absolute_lift_ci.upper * 100:+.1f} pts"
                        if lift.HasField("absolute_lift_ci")
                        else "",
                        "yes" if lift.significant else "no",
                    )
                    for name, lift in lifts
                ],
            )
        )
    failures = [
        (name, reason.reason, reason.count) for name, g in groups for reason in g.failed_by_reason
    ]
    if failures:
        parts.append(table("Failures by reason", ["group", "reason", "count"], failures))
    return Group(*parts)


async def explain(
    clients: Clients,
    app_id: str,
    user_id: str,
    *,
    campaign_id: str | None,
    category_id: str | None,
    trigger_id: str | None,
    as_of: Timestamp | None,
    topic_id: str,
    respect_quiet_hours: bool,
) -> scheduler_messages.ExplainDecisionResponse:
    """The scheduler's ExplainDecision."""
    request = scheduler_messages.ExplainDecisionRequest(
        app_id=app_id,
        user_id=user_id,
        topic_id=topic_id,
        respect_quiet_hours=respect_quiet_hours,
    )
    if campaign_id is not None:
        request.campaign_id = campaign_id
    elif category_id is not None:
        request.category_id = category_id
    elif trigger_id is not None:
        request.trigger_id = trigger_id
    if as_of is not None:
        request.as_of.CopyFrom(as_of)
    return await clients.call("scheduler", clients.scheduler.ExplainDecision, request)


def _compact(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return str(value)


def _step_detail(step: decision_pb2.TraceStep) -> str:
    """The numbers a step carries (its ``detail``), compactly."""
    kind = step.WhichOneof("detail")
    if kind is None:
        return ""
    detail = message_dict(getattr(step, kind))
    return ", ".join(f"{name}={_compact(value)}" for name, value in detail.items())


def explain_view(
    user_id: str, subject: str, answer: scheduler_messages.ExplainDecisionResponse
) -> Group:
    """The trace as a table: one row per check with its result, reason and the
    scheduler's sentence for it, then the outcome."""
    decision = answer.decision
    outcome = enum_text(decision_pb2.Outcome, decision.outcome, "OUTCOME_")
    reason = enum_text(decision_pb2.ReasonCode, decision.reason, "REASON_CODE_")
    steps = list(decision.trace.steps)
    lines = list(answer.explanation)
    paired = len(lines) == len(steps) + 1
    rows = [
        (
            index,
            enum_text(decision_pb2.Check, step.check, "CHECK_"),
            enum_text(decision_pb2.StepResult, step.result, "STEP_RESULT_"),
            enum_text(decision_pb2.ReasonCode, step.reason, "REASON_CODE_"),
            lines[index - 1] if paired else _step_detail(step),
        )
        for index, step in enumerate(steps, 1)
    ]
    trace = decision.trace
    headline = [
        ("user", user_id),
        ("message", subject),
        ("outcome", f"{outcome} ({reason})" if reason else outcome),
    ]
    if decision.HasField("defer_until"):
        headline.append(("deferred until", timestamp_text(decision.defer_until)))
    if answer.variant_id or answer.holdout:
        headline.append(("variant", "holdout" if answer.holdout else answer.variant_id))
    if answer.HasField("due_at"):
        headline.append(("due at", timestamp_text(answer.due_at)))
    if trace.time_zone:
        source = enum_text(decision_pb2.TimeZoneSource, trace.time_zone_source, "TIME_ZONE_SOURCE_")
        zone = f"{trace.time_zone} (from {source.lower()})" if source else trace.time_zone
        headline.append(("time zone", zone))
    headline.append(("evaluated at", timestamp_text(trace.evaluated_at)))
    parts: list[Any] = [
        key_value_table("Decision", headline),
        table(
            "Trace", ["#", "check", "result", "reason", "explanation" if paired else "detail"], rows
        ),
    ]
    if not paired and lines:
        parts.append(table("Explanation", ["step"], [(line,) for line in lines[:-1]]))
    if lines:
        parts.append(Text(lines[-1], style="bold"))
    return Group(*parts)
