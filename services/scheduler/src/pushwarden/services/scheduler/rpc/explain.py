"""PreviewCampaign and ExplainDecision: dry runs that send and record nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from pushwarden.common.v1 import decision_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import messages_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.domain.campaigns import check_campaign
from pushwarden.services.scheduler.handlers.explain import (
    DEFAULT_SAMPLES,
    MAX_SAMPLES,
    ExplainHandlers,
    Explanation,
)
from pushwarden.services.scheduler.rpc.context import Context

_OUTCOMES = {
    "ALLOW": decision_pb2.OUTCOME_ALLOW,
    "DEFER": decision_pb2.OUTCOME_DEFER,
    "DROP": decision_pb2.OUTCOME_DROP,
}


class ExplainRpcs(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The dry-run RPCs."""

    _explain: ExplainHandlers

    async def PreviewCampaign(
        self, request: messages_pb2.PreviewCampaignRequest, context: Context
    ) -> messages_pb2.PreviewCampaignResponse:
        """Counts by outcome and reason with sample users over the real audience."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        as_of = self._as_of(request)
        subject = request.WhichOneof("subject")
        if subject == "campaign_id":
            problems.caller_id("campaign_id", request.campaign_id)
        elif subject == "campaign":
            check_campaign(problems, "campaign", request.campaign, as_of)
        else:
            problems.add("campaign_id", "required: a campaign_id or a campaign")
        if request.samples_per_reason > MAX_SAMPLES:
            problems.add("samples_per_reason", f"at most {MAX_SAMPLES}")
        problems.raise_if_any()
        preview = await self._explain.preview(
            request.app_id,
            campaign_id=request.campaign_id if subject == "campaign_id" else None,
            campaign=request.campaign if subject == "campaign" else None,
            as_of=as_of,
            samples_per_reason=request.samples_per_reason or DEFAULT_SAMPLES,
            max_users=request.max_users,
        )
        response = messages_pb2.PreviewCampaignResponse(
            audience_size=preview.audience_size,
            evaluated=preview.evaluated,
            truncated=preview.truncated,
        )
        for bucket in preview.buckets:
            response.buckets.add(
                outcome=_OUTCOMES[bucket.outcome],
                reason=decision_pb2.ReasonCode.ValueType(bucket.reason),
                count=bucket.count,
                sample_user_ids=bucket.samples,
            )
        for variant_id, assigned in sorted(preview.variants.items()):
            response.variants.add(
                variant_id=variant_id, assigned=assigned
            )  # sent stays 0: nothing is sent
        response.as_of.FromDatetime(preview.as_of)
        return response

    async def ExplainDecision(
        self, request: messages_pb2.ExplainDecisionRequest, context: Context
    ) -> messages_pb2.ExplainDecisionResponse:
        """The full policy trace for one user and a campaign, category or trigger."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        as_of = self._as_of(request)
        subject = request.WhichOneof("subject")
        if subject == "campaign_id":
            problems.caller_id("campaign_id", request.campaign_id)
        elif subject == "category_id":
            problems.caller_id("category_id", request.category_id)
            problems.caller_id("topic_id", request.topic_id, required=False)
        elif subject == "trigger_id":
            problems.caller_id("trigger_id", request.trigger_id)
        else:
            problems.add("campaign_id", "required: a campaign_id, category_id or trigger_id")
        problems.raise_if_any()
        explanation: Explanation
        if subject == "campaign_id":
            explanation = await self._explain.explain_campaign(
                request.app_id, request.user_id, request.campaign_id, as_of
            )
        elif subject == "category_id":
            explanation = await self._explain.explain_category(
                request.app_id,
                request.user_id,
                request.category_id,
                topic_id=request.topic_id,
                respect_quiet_hours=request.respect_quiet_hours,
                as_of=as_of,
            )
        else:
            explanation = await self._explain.explain_trigger(
                request.app_id, request.user_id, request.trigger_id, as_of
            )
        response = messages_pb2.ExplainDecisionResponse(
            decision=explanation.decision,
            variant_id=explanation.variant_id,
            holdout=explanation.holdout,
            explanation=explanation.lines,
        )
        if explanation.due_at is not None:
            response.due_at.FromDatetime(explanation.due_at)
        return response

    def _as_of(
        self, request: messages_pb2.PreviewCampaignRequest | messages_pb2.ExplainDecisionRequest
    ) -> datetime:
        if request.HasField("as_of"):
            return request.as_of.ToDatetime(UTC)
        return self._explain.now()
