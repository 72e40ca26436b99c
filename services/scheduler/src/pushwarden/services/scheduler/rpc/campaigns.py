"""CreateCampaign, StartCampaign, PauseCampaign, ResumeCampaign, CancelCampaign,
GetCampaign and ListCampaigns."""

from __future__ import annotations

from datetime import datetime

from pushwarden.common.v1 import decision_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.domain.campaigns import CampaignState, check_campaign
from pushwarden.services.scheduler.handlers.campaigns import CampaignHandlers, CampaignView
from pushwarden.services.scheduler.rpc.context import Context
from pushwarden.services.scheduler.rpc.sends import contact_record

MAX_PAGE = 1000
_OUTCOMES = {
    "ALLOW": decision_pb2.OUTCOME_ALLOW,
    "DEFER": decision_pb2.OUTCOME_DEFER,
    "DROP": decision_pb2.OUTCOME_DROP,
}


class CampaignRpcs(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The campaign RPCs."""

    _campaigns: CampaignHandlers

    async def CreateCampaign(
        self, request: messages_pb2.CreateCampaignRequest, context: Context
    ) -> messages_pb2.CreateCampaignResponse:
        """Store a DRAFT campaign (idempotent by key)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("idempotency_key", request.idempotency_key)
        if problems.required("campaign", request.HasField("campaign")):
            check_campaign(problems, "campaign", request.campaign, self._campaigns.now())
        problems.raise_if_any()
        view, replayed = await self._campaigns.create(
            request.app_id, request.campaign, request.idempotency_key
        )
        return messages_pb2.CreateCampaignResponse(campaign=campaign_proto(view), replayed=replayed)

    async def StartCampaign(
        self, request: messages_pb2.StartCampaignRequest, context: Context
    ) -> messages_pb2.StartCampaignResponse:
        """DRAFT → SCHEDULED (idempotent)."""
        _check_ids(request.app_id, request.campaign_id)
        view = await self._campaigns.start(request.app_id, request.campaign_id)
        return messages_pb2.StartCampaignResponse(campaign=campaign_proto(view))

    async def PauseCampaign(
        self, request: messages_pb2.PauseCampaignRequest, context: Context
    ) -> messages_pb2.PauseCampaignResponse:
        """Hold dispatch (idempotent)."""
        _check_ids(request.app_id, request.campaign_id)
        view = await self._campaigns.pause(request.app_id, request.campaign_id)
        return messages_pb2.PauseCampaignResponse(campaign=campaign_proto(view))

    async def ResumeCampaign(
        self, request: messages_pb2.ResumeCampaignRequest, context: Context
    ) -> messages_pb2.ResumeCampaignResponse:
        """Release dispatch (idempotent)."""
        _check_ids(request.app_id, request.campaign_id)
        view = await self._campaigns.resume(request.app_id, request.campaign_id)
        return messages_pb2.ResumeCampaignResponse(campaign=campaign_proto(view))

    async def CancelCampaign(
        self, request: messages_pb2.CancelCampaignRequest, context: Context
    ) -> messages_pb2.CancelCampaignResponse:
        """Drop what is pending (idempotent)."""
        _check_ids(request.app_id, request.campaign_id)
        view = await self._campaigns.cancel(request.app_id, request.campaign_id)
        return messages_pb2.CancelCampaignResponse(campaign=campaign_proto(view))

    async def GetCampaign(
        self, request: messages_pb2.GetCampaignRequest, context: Context
    ) -> messages_pb2.GetCampaignResponse:
        """A campaign with its progress counters."""
        _check_ids(request.app_id, request.campaign_id)
        view = await self._campaigns.get(request.app_id, request.campaign_id)
        return messages_pb2.GetCampaignResponse(campaign=campaign_proto(view))

    async def ListCampaigns(
        self, request: messages_pb2.ListCampaignsRequest, context: Context
    ) -> messages_pb2.ListCampaignsResponse:
        """Campaigns, newest first, optionally of some states."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        states: list[str] = []
        for index, value in enumerate(request.states):
            state = CampaignState.from_proto(value)
            if state is None:
                problems.add(f"states[{index}]", f"unknown campaign state {value}")
            else:
                states.append(state.value)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE)
        filters = {"states": ",".join(sorted(states))}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        after = (datetime.fromisoformat(cursor.after[0]), cursor.after[1]) if cursor else None
        views = await self._campaigns.page(request.app_id, states, after, size + 1)
        response = messages_pb2.ListCampaignsResponse(
            campaigns=[campaign_proto(view) for view in views[:size]]
        )
        if len(views) > size:
            last = views[size - 1].row
            response.next_page_token = encode_page_token(
                (last.created_at.isoformat(), last.campaign_id), filters
            )
        return response

    async def ListCampaignDecisions(
        self, request: messages_pb2.ListCampaignDecisionsRequest, context: Context
    ) -> messages_pb2.ListCampaignDecisionsResponse:
        """A campaign's per-user records (latest decision), by user id."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("campaign_id", request.campaign_id)
        problems.enum("outcome", request.outcome, _OUTCOMES.values(), required=False)
        problems.enum("reason", request.reason, decision_pb2.ReasonCode.values(), required=False)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE)
        filters = {
            "outcome": request.outcome,
            "reason": request.reason,
            "variant": request.variant_id,
            "holdout": request.holdout if request.HasField("holdout") else None,
        }
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        outcome_names = {value: name for name, value in _OUTCOMES.items()}
        records = await self._campaigns.decisions(
            request.app_id,
            request.campaign_id,
            cursor.after[0] if cursor else None,
            size + 1,
            outcome=outcome_names.get(request.outcome),
            reason=request.reason or None,
            variant_id=request.variant_id or None,
            holdout=request.holdout if request.HasField("holdout") else None,
        )
        response = messages_pb2.ListCampaignDecisionsResponse(
            records=[contact_record(record, include_trace=False) for record in records[:size]]
        )
        if len(records) > size:
            response.next_page_token = encode_page_token((records[size - 1].user_id,), filters)
        return response


def _check_ids(app_id: str, campaign_id: str) -> None:
    require_app(app_id)
    problems = Violations()
    problems.caller_id("app_id", app_id)
    problems.caller_id("campaign_id", campaign_id)
    problems.raise_if_any()


def campaign_proto(view: CampaignView) -> resources_pb2.Campaign:
    """A stored campaign as the contract's Campaign (progress when computed)."""
    row = view.row
    campaign = resources_pb2.Campaign.FromString(row.definition)
    campaign.campaign_id = row.campaign_id
    campaign.state = CampaignState(row.state).proto
    campaign.created_at.FromDatetime(row.created_at)
    if row.started_at is not None:
        campaign.started_at.FromDatetime(row.started_at)
    if row.finished_at is not None:
        campaign.finished_at.FromDatetime(row.finished_at)
    progress = campaign.progress
    progress.audience_size = row.audience_size
    progress.fan_out_complete = row.fan_out_complete
    progress.holdout = row.holdout_size
    progress.updated_at.FromDatetime(view.computed_at)
    counted = view.progress
    if counted is not None:
        progress.pending = counted.pending
        progress.deferred = counted.deferred
        progress.sent = counted.sent
        progress.dropped = counted.dropped
        for (outcome, reason), count in sorted(counted.by_outcome.items()):
            progress.by_outcome.add(
                outcome=_OUTCOMES[outcome],
                reason=decision_pb2.ReasonCode.ValueType(reason),
                count=count,
            )
        for variant_id, (assigned, sent) in sorted(counted.variants.items()):
            progress.variants.add(variant_id=variant_id, assigned=assigned, sent=sent)
    return campaign
