"""FCM HTTP v1 on firebase-admin 7.7, through ``send_each_async``.

What is set up here, in :meth:`FcmProvider._open` and nowhere else: the
endpoint (firebase-admin has no option for it: the private class attribute
``_MessagingService.FCM_URL``, read when an app's messaging service is
built), an async HTTP client with the SDK's own 500/503 retries turned off
(its auth flow still refreshes the access token once or twice on a 401;
those requests are counted), and one firebase ``App`` per app and per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import firebase_admin
import httpx
from firebase_admin import _http_client, _retry, credentials, exceptions, messaging
from google.auth.transport import requests as google_requests

from pushwarden.payload import FcmMessage, render_fcm
from pushwarden.services.delivery.providers.classify import (
    Verdict,
    classify_fcm,
    retry_after_seconds,
)
from pushwarden.services.delivery.providers.credentials import FcmCredentials
from pushwarden.services.delivery.providers.model import (
    Delivered,
    Failed,
    Outcome,
    OutgoingPush,
    RetryAfter,
    TokenDead,
)

#: send_each_async refuses more than this per call.
MAX_CHUNK = 500
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
_BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# What FCM says when the registration token itself is malformed.
_BAD_TOKEN_MESSAGE = "registration token is not a valid"
_app_numbers = itertools.count(1)
# HTTP send requests per device token during one chunk (the request hook fills it).
_requests_per_token: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "fcm_requests_per_token", default=None
)


async def _count_request(request: httpx.Request) -> None:
    counts = _requests_per_token.get()
    if counts is None or not request.url.path.endswith(":send"):
        return
    token = json.loads(request.content).get("message", {}).get("token")
    if token is not None:
        counts[token] = counts.get(token, 0) + 1


class FcmProvider:
    """One app's Firebase project behind :class:`~.model.PushProvider`.

    The firebase ``App`` is opened on first use inside the running loop and
    belongs to it; ``aclose`` closes it there.  ``timeout`` bounds each HTTP
    request (firebase-admin's ``httpTimeout``); ``chunk_size`` messages go per
    ``send_each_async`` call (at most 500), chunks one after another.
    """

    name = "fcm"

    def __init__(
        self,
        credentials: FcmCredentials,
        *,
        label: str = "app",
        timeout: float = 10.0,
        chunk_size: int = 100,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be 1-{MAX_CHUNK}")
        self._credentials = credentials
        self._label = label
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._app: firebase_admin.App | None = None
        self._opening = asyncio.Lock()

    async def _ensure(self) -> firebase_admin.App:
        async with self._opening:
            if self._app is None:
                self._app = await self._open()
            return self._app

    async def _open(self) -> firebase_admin.App:
        # httpx logs every request at INFO: a line per FCM push in the service's log
        # (and a good part of the CPU a push costs). Its warnings still show.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        creds = self._credentials
        certificate = credentials.Certificate(str(creds.service_account_file))
        app = firebase_admin.initialize_app(
            certificate,
            {"projectId": creds.project_id, "httpTimeout": self._timeout},
            name=f"pushwarden-delivery-{self._label}-{next(_app_numbers)}",
        )
        try:
            service_class = messaging._MessagingService
            saved = service_class.FCM_URL
            if creds.endpoint is not None:
                service_class.FCM_URL = creds.endpoint.url + "/v1/projects/{0}/messages:send"
            try:
                service = messaging._get_messaging_service(app)
            finally:
                service_class.FCM_URL = saved
            # One request per attempt: our retries decide, with Retry-After, not the
            # SDK's four immediate-backoff resends of every 500 and 503.
            shipped = service._async_client
            client = _http_client.HttpxAsyncClient(
                credential=service._credential,
                timeout=self._timeout,
                retry_config=_retry.HttpxRetry(max_retries=0),
            )
            client.async_client.event_hooks["request"].append(_count_request)
            service._async_client = client
            await shipped.aclose()
            # google-auth fetches access tokens with blocking requests.  The first is
            # fetched off the loop here; later ones, once a token is within minutes of
            # expiring, on google-auth's background thread while the old one still
            # serves.  Only a token already expired is fetched in line.
            credential = certificate.get_credential()
            credential.with_non_blocking_refresh()
            # A failure here is reported per message by the send's own refresh.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(credential.refresh, google_requests.Request())
        except BaseException:
            await asyncio.to_thread(firebase_admin.delete_app, app)
            raise
        return app

    async def send(self, batch: Sequence[OutgoingPush]) -> list[Outcome]:
        """Each push once, in chunks; one outcome per push, in order."""
        outcomes: list[Outcome] = []
        for start in range(0, len(batch), self._chunk_size):
            outcomes.extend(await self._send_chunk(batch[start : start + self._chunk_size]))
        return outcomes

    async def _send_chunk(self, chunk: Sequence[OutgoingPush]) -> list[Outcome]:
        slots: list[Outcome | None] = []
        to_send: list[tuple[int, messaging.Message]] = []
        with warnings.catch_warnings():
            # firebase-admin 7.7 prefers installation ids; devices report tokens.
            warnings.filterwarnings("ignore", "Message.token is deprecated", DeprecationWarning)
            for push in chunk:
                rendered = render_fcm(push.content, push.options)
                if not rendered.size.fits:
                    slots.append(Failed(reason="PayloadTooLarge", permanent=True, requests=0))
                    continue
                slots.append(None)
                to_send.append((len(slots) - 1, to_message(rendered.message, push.token)))
        if not to_send:
            return [slot for slot in slots if slot is not None]
        outcomes = await self._send_messages([message for _, message in to_send])
        for (index, _), outcome in zip(to_send, outcomes, strict=True):
            slots[index] = outcome
        return [slot for slot in slots if slot is not None]

    async def _send_messages(self, messages: list[messaging.Message]) -> list[Outcome]:
        try:
            app = await self._ensure()
        except Exception as exc:  # the app could not open: nothing was sent
            reason = f"ClientError:{type(exc).__name__}"
            return [RetryAfter(reason=reason, requests=0) for _ in messages]
        counts: dict[str, int] = {}
        reset = _requests_per_token.set(counts)
        try:
            batch = await messaging.send_each_async(messages, app=app)
        except ValueError as exc:
            # firebase-admin refused a message before sending any: find it alone.
            if len(messages) > 1:
                return [o for message in messages for o in await self._send_messages([message])]
            return [Failed(reason=f"InvalidMessage:{exc}", permanent=True, requests=0)]
        except Exception as exc:  # the whole call failed: every push may retry
            reason = f"ClientError:{type(exc).__name__}"
            return [RetryAfter(reason=reason, requests=counts.get(m.token, 0)) for m in messages]
        finally:
            _requests_per_token.reset(reset)
        return [
            _outcome(response, counts.get(message.token, 0))
            for message, response in zip(messages, batch.responses, strict=True)
        ]

    async def aclose(self) -> None:
        """Close the HTTP client inside this loop, then delete the firebase App."""
        app, self._app = self._app, None
        if app is None:
            return
        await messaging._get_messaging_service(app)._async_client.aclose()
        # delete_app closes the async client again with asyncio.run (harmless once
        # closed), which cannot run inside a loop: hence the thread.
        await asyncio.to_thread(firebase_admin.delete_app, app)


def _outcome(response: messaging.SendResponse, requests: int) -> Outcome:
    if response.success:
        return Delivered(provider_id=response.message_id, requests=requests)
    error = response.exception
    if not isinstance(error, exceptions.FirebaseError):
        return Failed(
            reason=f"ClientError:{type(error).__name__}", permanent=False, requests=requests
        )
    http = error.http_response
    code = fcm_error_code(error)
    verdict = classify_fcm(code, None if http is None else http.status_code)
    if verdict is Verdict.PERMANENT and code == "INVALID_ARGUMENT" and token_is_invalid(error):
        verdict = Verdict.TOKEN_DEAD
    match verdict:
        case Verdict.TOKEN_DEAD:
            return TokenDead(reason=code, requests=requests)
        case Verdict.RETRY:
            seconds = None if http is None else retry_after_seconds(http.headers.get("retry-after"))
            return RetryAfter(reason=code, seconds=seconds, requests=requests)
        case _:
            return Failed(reason=code, permanent=True, requests=requests)


def _error_body(error: exceptions.FirebaseError) -> dict[str, Any]:
    http = error.http_response
    if http is None:
        return {}
    try:
        body = http.json()
    except ValueError:
        return {}
    inner = body.get("error") if isinstance(body, dict) else None
    return inner if isinstance(inner, dict) else {}


def fcm_error_code(error: exceptions.FirebaseError) -> str:
    """The FCM error code of a failed send (its FcmError detail), else Google's status."""
    for detail in _error_body(error).get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _FCM_ERROR_TYPE:
            return str(detail.get("errorCode") or error.code)
    return str(error.code)


def token_is_invalid(error: exceptions.FirebaseError) -> bool:
    """Whether an INVALID_ARGUMENT names the registration token as what is invalid.

    FCM says so by a field violation on ``message.token`` or, as documented for
    malformed tokens, by its message ("The registration token is not a valid
    FCM registration token").  Any other INVALID_ARGUMENT is about the message.
    """
    body = _error_body(error)
    for detail in body.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == _BAD_REQUEST_TYPE:
            fields = {v.get("field") for v in detail.get("fieldViolations") or ()}
            if fields and fields <= {"message.token"}:
                return True
    return _BAD_TOKEN_MESSAGE in str(body.get("message", "")).lower()


def to_message(message: FcmMessage, token: str) -> messaging.Message:
    """The ``messaging.Message`` the renderer's plain data stands for, field by field."""
    note, android, apns, web = message.notification, message.android, message.apns, message.webpush
    aps, alert, android_note = apns.aps, apns.aps.alert, android.notification
    return messaging.Message(
        token=token,
        data=message.data,
        notification=None
        if note is None
        else messaging.Notification(title=note.title, body=note.body, image=note.image),
        android=messaging.AndroidConfig(
            priority=android.priority,
            ttl=android.ttl,
            collapse_key=android.collapse_key,
            notification=None
            if android_note is None
            else messaging.AndroidNotification(
                sound=android_note.sound,
                tag=android_note.tag,
                click_action=android_note.click_action,
                channel_id=android_note.channel_id,
                icon=android_note.icon,
                color=android_note.color,
            ),
        ),
        apns=messaging.APNSConfig(
            headers=apns.headers,
            payload=messaging.APNSPayload(
                aps=messaging.Aps(
                    alert=None
                    if alert is None
                    else messaging.ApsAlert(
                        subtitle=alert.subtitle,
                        title_loc_key=alert.title_loc_key,
                        title_loc_args=list(alert.title_loc_args or ()) or None,
                        loc_key=alert.loc_key,
                        loc_args=list(alert.loc_args or ()) or None,
                    ),
                    badge=aps.badge,
                    sound=aps.sound,
                    content_available=aps.content_available,
                    category=aps.category,
                    thread_id=aps.thread_id,
                    mutable_content=aps.mutable_content,
                    custom_data=aps.custom_data,
                )
            ),
            fcm_options=None if apns.image is None else messaging.APNSFCMOptions(image=apns.image),
        ),
        webpush=None
        if web is None
        else messaging.WebpushConfig(
            headers=web.headers,
            notification=None
            if web.notification is None
            else messaging.WebpushNotification(
                icon=web.notification.icon,
                badge=web.notification.badge,
                require_interaction=web.notification.require_interaction,
                actions=[
                    messaging.WebpushNotificationAction(a.action, a.title, icon=a.icon)
                    for a in web.notification.actions or ()
                ]
                or None,
            ),
            fcm_options=None if web.link is None else messaging.WebpushFCMOptions(link=web.link),
        ),
    )
