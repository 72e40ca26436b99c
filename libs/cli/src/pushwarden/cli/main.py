"""The ``pushwarden`` command line.

Every command talks gRPC to the services at ``--consent-addr`` ... (or
``PUSHWARDEN_CLI_<SERVICE>_ADDR``; default the ports of ``make run``) with the bearer
token of ``--token`` / ``PUSHWARDEN_CLI_TOKEN`` and, with ``--ca-file``, over TLS. The
CLI's variables carry their own ``PUSHWARDEN_CLI_`` prefix: ``PUSHWARDEN_CONSENT_*`` is
consent's own namespace, where a service refuses to start on a name it does not know.

Tables are for people; ``--json`` prints the contract's JSON mapping for scripts. Every
error is one line on stderr and a non-zero exit status (1: a service refused, failed or
could not be reached; 2: bad command line or input file, nothing sent).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console

from pushwarden.cli import campaigns as campaign_ops
from pushwarden.cli import users
from pushwarden.cli.apply import Applied, apply_resource
from pushwarden.cli.connection import DEFAULT_ADDRESSES, SERVICES, Clients, Settings
from pushwarden.cli.errors import EXIT_FAILED, EXIT_INPUT, CliError
from pushwarden.cli.manifests import load_files
from pushwarden.cli.render import (
    console,
    duration_text,
    enum_text,
    key_value_table,
    message_dict,
    print_json,
    table,
    timestamp_text,
)
from pushwarden.common.v1 import decision_pb2, policy_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2 as consent_resources
from pushwarden.scheduler.v1 import messages_pb2 as scheduler_messages
from pushwarden.scheduler.v1 import resources_pb2 as scheduler_resources
from pushwarden.segmentation.v1 import messages_pb2 as segmentation_messages

__all__ = ["cli", "main"]

PROG = "pushwarden"
ENV = "PUSHWARDEN_CLI_"
DEBUG_VARIABLE = "PUSHWARDEN_CLI_DEBUG"
T = TypeVar("T")


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"{PROG}: {' '.join(message.split())}", err=True)
    sys.exit(code)


class _Cli(click.Group):
    """The root group: every failure becomes one line on stderr and an exit status."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except CliError as error:
            _fail(error.message, error.exit_code)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx else ""
            _fail(f"{error.format_message()}{hint}", EXIT_INPUT)
        except click.ClickException as error:
            _fail(error.format_message(), error.exit_code)
        except click.Abort:
            _fail("aborted: nothing was done", EXIT_FAILED)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as error:
            if os.environ.get(DEBUG_VARIABLE):
                traceback.print_exc()
            _fail(
                f"unexpected error: {type(error).__name__}: {error} "
                f"(set {DEBUG_VARIABLE}=1 for the traceback)",
                EXIT_FAILED,
            )
        sys.exit(result if isinstance(result, int) else 0)


def _run(work: Callable[[Clients], Coroutine[Any, Any, T]], settings: Settings) -> T:
    """Run one command's async work on fresh channels."""

    async def go() -> T:
        async with Clients(settings) as clients:
            return await work(clients)

    return asyncio.run(go())


def _app(settings: Settings) -> str:
    if not settings.app_id:
        raise CliError(f"--app (or {ENV}APP) is required: the app to work on", EXIT_INPUT)
    return settings.app_id


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables."
)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--app", "-a", envvar=f"{ENV}APP", show_envvar=True, default="", help="The app id to work on."
)
@click.option(
    "--consent-addr",
    envvar=f"{ENV}CONSENT_ADDR",
    show_envvar=True,
    default=DEFAULT_ADDRESSES["consent"],
    show_default=True,
    help="Consent's host:port.",
)
@click.option(
    "--segmentation-addr",
    envvar=f"{ENV}SEGMENTATION_ADDR",
    show_envvar=True,
    default=DEFAULT_ADDRESSES["segmentation"],
    show_default=True,
    help="Segmentation's host:port.",
)
@click.option(
    "--scheduler-addr",
    envvar=f"{ENV}SCHEDULER_ADDR",
    show_envvar=True,
    default=DEFAULT_ADDRESSES["scheduler"],
    show_default=True,
    help="The scheduler's host:port.",
)
@click.option(
    "--delivery-addr",
    envvar=f"{ENV}DELIVERY_ADDR",
    show_envvar=True,
    default=DEFAULT_ADDRESSES["delivery"],
    show_default=True,
    help="Delivery's host:port.",
)
@click.option(
    "--token",
    envvar=f"{ENV}TOKEN",
    show_envvar=True,
    default=None,
    help="Bearer token sent as 'authorization: Bearer <token>' (auth on).",
)
@click.option(
    "--ca-file",
    envvar=f"{ENV}CA_FILE",
    show_envvar=True,
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM CA the services' certificates chain to: talk TLS.",
)
@click.option(
    "--cert-file",
    envvar=f"{ENV}CERT_FILE",
    show_envvar=True,
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM client certificate, for services that require mTLS.",
)
@click.option(
    "--key-file",
    envvar=f"{ENV}KEY_FILE",
    show_envvar=True,
    default=None,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key of --cert-file.",
)
@click.option(
    "--timeout",
    envvar=f"{ENV}TIMEOUT_S",
    show_envvar=True,
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Deadline of each call, in seconds.",
)
@click.version_option(package_name="pushwarden-cli", prog_name=PROG)
@click.pass_context
def cli(
    ctx: click.Context,
    app: str,
    consent_addr: str,
    segmentation_addr: str,
    scheduler_addr: str,
    delivery_addr: str,
    token: str | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    timeout: float,
) -> None:
    """Operate Pushwarden: apply categories, the policy, segments and campaigns from
    files; start, pause and watch campaigns; explain a decision; campaign statistics;
    export and erase a user."""
    addresses = dict(
        zip(SERVICES, (consent_addr, segmentation_addr, scheduler_addr, delivery_addr), strict=True)
    )
    for service, address in addresses.items():
        if not address.strip() or ":" not in address:
            raise CliError(f"--{service}-addr: {address!r} is not host:port", EXIT_INPUT)
    ctx.obj = Settings(
        app_id=app.strip(),
        addresses=addresses,
        token=token or None,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        timeout_s=timeout,
    )


# ---- apply -------------------------------------------------------------------------------


@cli.command()
@click.option(
    "-f",
    "--filename",
    "files",
    multiple=True,
    required=True,
    help="A YAML or JSON file of resources ('-' for stdin); repeatable.",
)
@json_option
@click.pass_obj
def apply(settings: Settings, files: tuple[str, ...], as_json: bool) -> None:
    """Create or update the resources of the files (kinds Category, Policy, Segment,
    Campaign). Idempotent: applying the same files again changes nothing."""
    resources = load_files(files, settings.app_id or None)
    done: list[Applied] = []

    async def work(clients: Clients) -> None:
        for resource in resources:
            done.append(await apply_resource(clients, resource))

    try:
        _run(work, settings)
    finally:
        if as_json:
            print_json(
                [
                    {
                        "kind": a.kind,
                        "app_id": a.app_id,
                        "name": a.name,
                        "result": a.result,
                        "id": a.ref,
                        "origin": a.origin,
                    }
                    for a in done
                ]
            )
        elif done:
            console().print(
                table(
                    None,
                    ["kind", "name", "result", "id", "from"],
                    [(a.kind, a.name, a.result, a.ref, a.origin) for a in done],
                )
            )


# ---- listings ------------------------------------------------------------------------------


@cli.command()
@json_option
@click.pass_obj
def categories(settings: Settings, as_json: bool) -> None:
    """List the app's categories."""
    app_id = _app(settings)

    async def work(clients: Clients) -> list[consent_resources.Category]:
        found: list[consent_resources.Category] = []
        token = ""
        while True:
            page = await clients.call(
                "consent",
                clients.consent.ListCategories,
                consent_messages.ListCategoriesRequest(app_id=app_id, page_token=token),
            )
            found.extend(page.categories)
            token = page.next_page_token
            if not token:
                return found

    found = _run(work, settings)
    if as_json:
        print_json([message_dict(c) for c in found])
        return
    console().print(
        table(
            f"Categories of {app_id}",
            ["id", "kind", "default", "opt-out allowed", "name", "updated"],
            [
                (
                    c.category_id,
                    enum_text(types_pb2.CategoryKind, c.kind, "CATEGORY_KIND_"),
                    enum_text(consent_resources.DefaultState, c.default_state, "DEFAULT_STATE_"),
                    "yes" if c.user_can_opt_out else "no",
                    c.display_name,
                    timestamp_text(c.updated_at),
                )
                for c in found
            ],
        )
    )


def _cap_window(rule: policy_pb2.CapRule) -> str:
    if rule.HasField("rolling"):
        return f"rolling {duration_text(rule.rolling)}"
    return enum_text(policy_pb2.CalendarPeriod, rule.calendar, "CALENDAR_PERIOD_").lower()


@cli.command()
@json_option
@click.pass_obj
def policy(settings: Settings, as_json: bool) -> None:
    """Show the app's policy (caps, quiet hours, fallbacks)."""
    app_id = _app(settings)

    async def work(clients: Clients) -> scheduler_resources.Policy:
        answer = await clients.call(
            "scheduler",
            clients.scheduler.GetPolicy,
            scheduler_messages.GetPolicyRequest(app_id=app_id),
        )
        return answer.policy

    found = _run(work, settings)
    if as_json:
        print_json(message_dict(found))
        return
    quiet = found.default_quiet_hours
    windows = (
        ", ".join(
            f"{w.start.hours:02d}:{w.start.minutes:02d}-{w.end.hours:02d}:{w.end.minutes:02d}"
            for w in quiet.windows
        )
        if found.HasField("default_quiet_hours")
        else ""
    )
    fallback = found.time_zone_fallback
    out = console()
    out.print(
        key_value_table(
            f"Policy of {app_id}",
            [
                ("version", found.version),
                ("updated", timestamp_text(found.updated_at)),
                ("default quiet hours", windows or "none"),
                ("jitter window", duration_text(found.jitter_window) or "0s"),
                (
                    "time-zone fallback",
                    fallback.default_time_zone or "none (marketing needs a zone)",
                ),
                (
                    "opt-out confirmation",
                    found.opt_out_confirmation.category_id
                    if found.opt_out_confirmation.enabled
                    else "off",
                ),
            ],
        )
    )
    out.print(
        table(
            "Cap rules",
            ["rule", "scope", "category", "max", "window", "on exceed"],
            [
                (
                    rule.rule_id,
                    enum_text(policy_pb2.CapScope, rule.scope, "CAP_SCOPE_"),
                    rule.category_id,
                    rule.max_count,
                    _cap_window(rule),
                    enum_text(policy_pb2.OnExceed, rule.on_exceed, "ON_EXCEED_"),
                )
                for rule in found.cap_rules
            ],
        )
    )


@cli.command()
@json_option
@click.pass_obj
def segments(settings: Settings, as_json: bool) -> None:
    """List the app's segments."""
    app_id = _app(settings)

    async def work(clients: Clients) -> list[Any]:
        found: list[Any] = []
        token = ""
        while True:
            page = await clients.call(
                "segmentation",
                clients.segmentation.ListSegments,
                segmentation_messages.ListSegmentsRequest(app_id=app_id, page_token=token),
            )
            found.extend(page.segments)
            token = page.next_page_token
            if not token:
                return found

    found = _run(work, settings)
    if as_json:
        print_json([message_dict(s) for s in found])
        return
    console().print(
        table(
            f"Segments of {app_id}",
            ["id", "name", "description", "created"],
            [(s.segment_id, s.name, s.description, timestamp_text(s.created_at)) for s in found],
        )
    )


@cli.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(
        [
            n.removeprefix("CAMPAIGN_STATE_").lower()
            for n in scheduler_resources.CampaignState.keys()[1:]
        ]
    ),
    help="Only campaigns in this state; repeatable.",
)
@json_option
@click.pass_obj
def campaigns(settings: Settings, states: tuple[str, ...], as_json: bool) -> None:
    """List the app's campaigns, newest first (``campaign show`` has the progress)."""
    app_id = _app(settings)
    wanted = [
        scheduler_resources.CampaignState.Value(f"CAMPAIGN_STATE_{s.upper()}") for s in states
    ]

    async def work(clients: Clients) -> list[scheduler_resources.Campaign]:
        found: list[scheduler_resources.Campaign] = []
        token = ""
        while True:
            page = await clients.call(
                "scheduler",
                clients.scheduler.ListCampaigns,
                scheduler_messages.ListCampaignsRequest(
                    app_id=app_id, states=wanted, page_token=token
                ),
            )
            found.extend(page.campaigns)
            token = page.next_page_token
            if not token:
                return found

    found = _run(work, settings)
    if as_json:
        print_json([message_dict(c) for c in found])
        return
    console().print(
        table(
            f"Campaigns of {app_id}",
            ["id", "name", "state", "category", "segments", "schedule", "created"],
            [
                (
                    c.campaign_id,
                    c.name,
                    campaign_ops.state_text(c),
                    c.category_id,
                    ", ".join(c.audience.include_segment_ids),
                    campaign_ops.schedule_text(c),
                    timestamp_text(c.created_at),
                )
                for c in found
            ],
        )
    )


# ---- campaign ------------------------------------------------------------------------------


@cli.group()
def campaign() -> None:
    """Show, start, pause, resume, cancel and watch a campaign; its decisions and
    statistics."""


def _print_campaign(found: scheduler_resources.Campaign, as_json: bool) -> None:
    if as_json:
        print_json(message_dict(found))
    else:
        console().print(campaign_ops.campaign_view(found))


@campaign.command("show")
@click.argument("campaign_id")
@json_option
@click.pass_obj
def campaign_show(settings: Settings, campaign_id: str, as_json: bool) -> None:
    """A campaign with its progress counters."""
    app_id = _app(settings)
    found = _run(lambda c: campaign_ops.get_campaign(c, app_id, campaign_id), settings)
    _print_campaign(found, as_json)


watch_options = [
    click.option(
        "--interval",
        default=0.5,
        show_default=True,
        type=click.FloatRange(min=0.05),
        help="Seconds between two polls.",
    ),
    click.option(
        "--max-wait",
        default=None,
        type=click.FloatRange(min=0),
        help="Give up (exit 1) after this many seconds; default: wait on.",
    ),
]


def _with(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _lifecycle_command(verb: str, help_text: str) -> None:
    @campaign.command(verb, help=help_text)
    @click.argument("campaign_id")
    @json_option
    @click.pass_obj
    def command(settings: Settings, campaign_id: str, as_json: bool) -> None:
        app_id = _app(settings)
        found = _run(lambda c: campaign_ops.lifecycle(c, verb, app_id, campaign_id), settings)
        if as_json:
            print_json(message_dict(found))
        else:
            click.echo(f"campaign {campaign_id} is {campaign_ops.state_text(found)}")


_lifecycle_command("pause", "Pause a scheduled or running campaign (idempotent).")
_lifecycle_command("resume", "Resume a paused campaign (idempotent).")
_lifecycle_command("cancel", "Cancel a campaign: pending sends are dropped (idempotent).")


def _watch(
    settings: Settings, campaign_id: str, interval: float, max_wait: float | None, as_json: bool
) -> None:
    app_id = _app(settings)
    out: Console | None = None if as_json else console()
    found = _run(
        lambda c: campaign_ops.watch(
            c, app_id, campaign_id, interval_s=interval, max_wait_s=max_wait, console=out
        ),
        settings,
    )
    if as_json:
        print_json(message_dict(found))
    else:
        assert out is not None
        out.print(campaign_ops.outcome_table(found))


@campaign.command("start")
@click.argument("campaign_id")
@click.option("--watch", "and_watch", is_flag=True, help="Then watch it until it completes.")
@_with(watch_options)
@json_option
@click.pass_obj
def campaign_start(
    settings: Settings,
    campaign_id: str,
    and_watch: bool,
    interval: float,
    max_wait: float | None,
    as_json: bool,
) -> None:
    """Start a draft campaign (idempotent: a started campaign stays as it is)."""
    app_id = _app(settings)
    found = _run(lambda c: campaign_ops.lifecycle(c, "start", app_id, campaign_id), settings)
    if and_watch:
        if not as_json:
            click.echo(f"campaign {campaign_id} is {campaign_ops.state_text(found)}")
        _watch(settings, campaign_id, interval, max_wait, as_json)
    elif as_json:
        print_json(message_dict(found))
    else:
        click.echo(f"campaign {campaign_id} is {campaign_ops.state_text(found)}")


@campaign.command("watch")
@click.argument("campaign_id")
@_with(watch_options)
@json_option
@click.pass_obj
def campaign_watch(
    settings: Settings, campaign_id: str, interval: float, max_wait: float | None, as_json: bool
) -> None:
    """Follow a campaign with a live progress bar until it is COMPLETED or CANCELLED,
    then print its decisions (with --json: the final campaign only)."""
    _watch(settings, campaign_id, interval, max_wait, as_json)


_OUTCOMES = [n.removeprefix("OUTCOME_").lower() for n in decision_pb2.Outcome.keys()[1:]]
_REASONS = [n.removeprefix("REASON_CODE_").lower() for n in decision_pb2.ReasonCode.keys()[1:]]


@campaign.command("decisions")
@click.argument("campaign_id")
@click.option("--outcome", type=click.Choice(_OUTCOMES), default=None, help="Only this outcome.")
@click.option("--reason", type=click.Choice(_REASONS), default=None, help="Only this reason.")
@click.option("--variant", default="", help="Only users assigned this variant.")
@click.option(
    "--holdout/--no-holdout", default=None, help="Only holdout users, or only the others."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many."
)
@json_option
@click.pass_obj
def campaign_decisions(
    settings: Settings,
    campaign_id: str,
    outcome: str | None,
    reason: str | None,
    variant: str,
    holdout: bool | None,
    limit: int,
    as_json: bool,
) -> None:
    """Who got what, and who was held back and why: one row per user of the campaign."""
    app_id = _app(settings)
    request = scheduler_messages.ListCampaignDecisionsRequest(
        app_id=app_id, campaign_id=campaign_id, variant_id=variant
    )
    if outcome is not None:
        request.outcome = decision_pb2.Outcome.Value(f"OUTCOME_{outcome.upper()}")
    if reason is not None:
        request.reason = decision_pb2.ReasonCode.Value(f"REASON_CODE_{reason.upper()}")
    if holdout is not None:
        request.holdout = holdout

    async def work(clients: Clients) -> list[scheduler_resources.ContactRecord]:
        found: list[scheduler_resources.ContactRecord] = []
        while len(found) < limit:
            request.page_size = min(limit - len(found), 1000)
            page = await clients.call("scheduler", clients.scheduler.ListCampaignDecisions, request)
            found.extend(page.records)
            request.page_token = page.next_page_token
            if not page.next_page_token:
                break
        return found[:limit]

    found = _run(work, settings)
    if as_json:
        print_json([message_dict(record) for record in found])
        return
    console().print(
        table(
            f"Decisions of {campaign_id}",
            ["user", "variant", "outcome", "reason", "due", "sent"],
            [
                (
                    r.user_id,
                    "holdout" if r.holdout else r.variant_id,
                    enum_text(decision_pb2.Outcome, r.decision.outcome, "OUTCOME_"),
                    enum_text(decision_pb2.ReasonCode, r.decision.reason, "REASON_CODE_"),
                    timestamp_text(r.due_at),
                    timestamp_text(r.sent_at),
                )
                for r in found
            ],
        )
    )


@campaign.command("stats")
@click.argument("campaign_id")
@click.option(
    "--attribution-window",
    "window_h",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Hours after assignment a conversion counts (default 72).",
)
@json_option
@click.pass_obj
def campaign_stats(
    settings: Settings, campaign_id: str, window_h: float | None, as_json: bool
) -> None:
    """Delivery's statistics of a campaign: per variant, holdout and lift."""
    app_id = _app(settings)
    answer = _run(lambda c: campaign_ops.stats(c, app_id, campaign_id, window_h), settings)
    if as_json:
        print_json(message_dict(answer))
    else:
        console().print(campaign_ops.stats_view(answer))


# ---- explain -------------------------------------------------------------------------------


def _timestamp(value: str | None, option: str) -> Timestamp | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option}: {value!r} is not an ISO 8601 instant", EXIT_INPUT) from None
    if moment.tzinfo is None:
        raise CliError(f"{option}: {value!r} needs a UTC offset (e.g. Z)", EXIT_INPUT)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@cli.command()
@click.argument("user_id")
@click.option("--campaign", "campaign_id", default=None, help="Explain this campaign's send.")
@click.option(
    "--category", "category_id", default=None, help="Explain an ad-hoc message of this category."
)
@click.option("--trigger", "trigger_id", default=None, help="Explain a firing of this trigger.")
@click.option("--as-of", default=None, help="Decide as if now were this instant (ISO 8601).")
@click.option("--topic", default="", help="With --category: the message's topic.")
@click.option(
    "--respect-quiet-hours",
    is_flag=True,
    help="With a transactional --category: the message opts in to quiet hours.",
)
@json_option
@click.pass_obj
def explain(
    settings: Settings,
    user_id: str,
    campaign_id: str | None,
    category_id: str | None,
    trigger_id: str | None,
    as_of: str | None,
    topic: str,
    respect_quiet_hours: bool,
    as_json: bool,
) -> None:
    """Why a message would (or would not) reach USER_ID now: the policy's full trace."""
    app_id = _app(settings)
    subjects = [
        (n, v)
        for n, v in (("campaign", campaign_id), ("category", category_id), ("trigger", trigger_id))
        if v is not None
    ]
    if len(subjects) != 1:
        raise CliError("give exactly one of --campaign, --category, --trigger", EXIT_INPUT)
    when = _timestamp(as_of, "--as-of")
    answer = _run(
        lambda c: campaign_ops.explain(
            c,
            app_id,
            user_id,
            campaign_id=campaign_id,
            category_id=category_id,
            trigger_id=trigger_id,
            as_of=when,
            topic_id=topic,
            respect_quiet_hours=respect_quiet_hours,
        ),
        settings,
    )
    if as_json:
        print_json(message_dict(answer))
    else:
        kind, value = subjects[0]
        console().print(campaign_ops.explain_view(user_id, f"{kind} {value}", answer))


# ---- user ----------------------------------------------------------------------------------


@cli.group()
def user() -> None:
    """GDPR: export a user from every service, erase a user."""


@user.command("export")
@click.argument("user_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the JSON document to this file.",
)
@json_option
@click.pass_obj
def user_export(settings: Settings, user_id: str, output: Path | None, as_json: bool) -> None:
    """Everything consent, segmentation, the scheduler and delivery hold about USER_ID,
    as one JSON document (--json: on stdout; -o: to a file; else a summary)."""
    app_id = _app(settings)
    document = _run(lambda c: users.export_user(c, app_id, user_id), settings)
    if output is not None:
        try:
            output.write_text(
                json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        except OSError as exc:
            raise CliError(
                f"--output: cannot write {output} ({exc.strerror})", EXIT_INPUT
            ) from None
    if as_json:
        print_json(document)
        return
    out = console()
    out.print(
        table(
            f"Data held about {user_id} in {app_id}",
            ["service", "item", "count"],
            users.item_counts(document),
        )
    )
    if output is not None:
        out.print(f"written to {output}")


@user.command("erase")
@click.argument("user_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Then wait up to this many seconds until the other services hold nothing "
    "about the user (exit 1 naming what is left).",
)
@json_option
@click.pass_obj
def user_erase(
    settings: Settings, user_id: str, yes: bool, wait_s: float | None, as_json: bool
) -> None:
    """Erase USER_ID (GDPR) through consent: devices, preferences and ledger payloads go,
    a suppression record stays, and the other services erase from consent's feed."""
    app_id = _app(settings)
    if not yes:
        click.confirm(
            f"Erase user {user_id!r} of app {app_id!r}? This cannot be undone", abort=True, err=True
        )
    answer, checked = _run(lambda c: users.erase_user(c, app_id, user_id, wait_s=wait_s), settings)
    if as_json:
        print_json({**message_dict(answer), "verified_empty": checked})
        return
    erasure = answer.erasure
    console().print(
        key_value_table(
            f"Erased {user_id} of {app_id}",
            [
                (
                    "erased at",
                    timestamp_text(erasure.erased_at) if erasure.HasField("erased_at") else "",
                ),
                ("devices deleted", answer.devices_deleted),
                ("already erased", "yes" if answer.already_erased else "no"),
                ("feed cursor", answer.cursor),
                ("nothing left at", ", ".join(checked) if checked else "not checked (use --wait)"),
            ],
        )
    )


def main() -> None:
    """The console script's entry point."""
    cli.main(prog_name=PROG)
