"""`POST /validate` and `POST /mutate` as plain ASGI handlers, in front of the FastAPI app.

These two routes are the whole load of the webhook: every Pod, every workload, every update
goes through them. FastAPI's middleware stack and Starlette's routing and Request/Response
objects cost as much per request as imagegate's own work on a warm cache, so the admission
routes skip them: the body is read straight from `receive` (with the size limit and the body
deadline), parsed and its envelope validated in one pass (`models.parse_review`, msgspec), and
the common answers are written from precomputed bytes with the uid spliced in. Everything else
(`/healthz`, `/readyz`, `/metrics`, 404s) stays FastAPI's.

Every guarantee of the FastAPI routes holds here: a malformed review is a 400 that says why, an
oversized one a 413, a dribbled one a 408, never a 5xx; the admission uid is on every log line
written while answering; the request, violation, error and latency metrics are counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.types import Message, Receive, Scope, Send

from webhook.admission.metrics import Metrics
from webhook.admission.models import (
    AdmissionResponse,
    AdmissionReview,
    ReviewError,
    Status,
    parse_review,
    review_json,
)
from webhook.admission.service import AdmissionService, Resumed
from webhook.logs import admission_uid
from webhook.policy.store import PolicyStore
from webhook.settings import WebhookSettings

log = logging.getLogger("imagegate.admission")


@dataclass
class Parts:
    """What the lifespan builds; tests may hand in their own cluster or policy store."""

    service: AdmissionService
    metrics: Metrics
    policies: PolicyStore


class _Refused(Exception):
    """A request we answer with an error status instead of an AdmissionReview."""

    def __init__(self, status: int, message: str, reason: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # the `imagegate_errors` label
        self.close = close  # the rest of the body may still be on the wire: do not reuse


class _Disconnected(Exception):
    """The client went away before its review arrived."""


# The answers as JSONResponse rendered them (compact separators, non-ASCII kept), cut where the
# variable parts go. `review_json` + `JSONResponse` stay the reference: `encode` falls back to
# them for every answer that is not one of the two common shapes.
_PREFIX = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":'
_ALLOWED = b',"allowed":true}}'
_DENIED = b',"allowed":false,"status":{"code":403,"message":'
_DENIED_END = b',"reason":"Forbidden"}}}'
_JSON_HEADERS = b"application/json"
_TEXT_HEADERS = b"text/plain; charset=utf-8"

_ascii = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode


_compact = msgspec.json.Encoder().encode


def _json(value: Any) -> bytes:
    """Compact JSON in UTF-8 (msgspec writes what `JSONResponse` wrote, four times faster); a
    lone surrogate (valid in a JSON string, not in UTF-8) is written escaped instead of
    failing the answer."""
    try:
        return _compact(value)
    except UnicodeEncodeError:
        return _ascii(value).encode()


def encode(response: AdmissionResponse) -> bytes:
    """The AdmissionReview answer, byte for byte what `JSONResponse(review_json(r))` writes."""
    plain = (
        response.warnings is None
        and response.patch is None
        and response.patch_type is None
        and response.audit_annotations is None
    )
    status = response.status
    if plain and response.allowed and status is None:
        return _PREFIX + _json(response.uid) + _ALLOWED
    denial = plain and not response.allowed
    if denial and status is not None and status.code == 403 and status.reason == "Forbidden":
        return _PREFIX + _json(response.uid) + _DENIED + _json(status.message) + _DENIED_END
    return _json(review_json(response))


class AdmissionEndpoints:
    """The ASGI handler of `/validate` and `/mutate`; `parts` is set by the app's lifespan."""

    def __init__(self, hook: WebhookSettings) -> None:
        self.parts: Parts | None = None
        self._limit = hook.max_body_bytes
        self._body_timeout = hook.body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = "validate" if scope["path"] == "/validate" else "mutate"
        parts = self.parts
        if parts is None:  # only before the lifespan ran; uvicorn never routes then
            await _send(send, 503, b"imagegate is starting", _TEXT_HEADERS, close=True)
            return
        if scope["method"] != "POST":
            await _send(send, 405, b'{"detail":"Method Not Allowed"}', _JSON_HEADERS, allow=b"POST")
            return
        started = time.perf_counter()
        try:
            review = await self._read(scope, receive)
        except _Refused as refused:
            parts.metrics.error(refused.reason)
            if refused.status == 408:
                log.info("refused a slow request", extra={"error": refused.message})
            else:
                log.warning("refused a malformed AdmissionReview", extra={"error": refused.message})
            body = refused.message.encode()
            await _send(send, refused.status, body, _TEXT_HEADERS, close=refused.close)
            return
        except _Disconnected:  # nothing to answer, nothing to alarm
            parts.metrics.error("disconnect")
            log.debug("client disconnected before its review arrived")
            await _send(send, 400, b"", _TEXT_HEADERS, close=True)  # dropped by the server
            return
        request = review.request
        token = admission_uid.set(request.uid)
        try:
            body = await self._answer(parts, review, endpoint)
        finally:
            parts.metrics.observe(endpoint, time.perf_counter() - started)
            admission_uid.reset(token)
        await _send(send, 200, body, _JSON_HEADERS)

    async def _answer(self, parts: Parts, review: AdmissionReview, endpoint: str) -> bytes:
        """The encoded answer. The service never raises; should encoding (a bug) raise, the
        answer is still an answer: a denial that says so (fail closed), or no patch."""
        request = review.request
        try:
            if endpoint == "mutate":
                response = await parts.service.mutate(request)
                parts.metrics.request(endpoint, "patched" if response.patch else "unchanged")
                return encode(response)
            decision = await parts.service.validate(request)
            verdict = "allowed" if decision.response.allowed else "denied"
            parts.metrics.request(endpoint, verdict)
            for problem in decision.problems:
                parts.metrics.violation(problem.rule, str(problem.mode))
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "admission", extra={"verdict": verdict, "problems": len(decision.problems)}
                )
            return encode(decision.response)
        except Exception as err:
            log.exception("answering a review failed unexpectedly", extra={"error": repr(err)})
            parts.metrics.error("internal")
            if endpoint == "mutate":
                return _json(review_json(AdmissionResponse(uid=request.uid, allowed=True)))
            message = f"imagegate could not answer this review ({type(err).__name__}: {err})"
            status = Status(code=403, reason="Forbidden", message=message)
            fallback = AdmissionResponse(uid=request.uid, allowed=False, status=status)
            return _json(review_json(fallback))

    async def _read(self, scope: Scope, receive: Receive) -> AdmissionReview:
        """The review, or `_Refused` saying what is wrong with it (never a 500)."""
        limit = self._limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    raise _Refused(
                        413,
                        f"request body of {value.decode()} bytes is over the {limit} byte limit",
                        "too-large",
                        close=True,
                    )
                break
        # Usually the whole body came with the head: then reading it never waits, and no timer
        # is needed. Otherwise a client dribbling its body must not hold a connection for
        # ever: one timer, cancelled when the body is in (`asyncio.timeout` costs more).
        reading = _body(receive, limit)
        try:
            waiting_on = reading.send(None)
        except StopIteration as done:
            body: bytes = done.value
        else:
            task = asyncio.current_task()
            assert task is not None
            expired: list[bool] = []
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self._body_timeout, _expire, task, expired)
            try:
                body = await Resumed(reading, waiting_on)
            except asyncio.CancelledError:
                if not expired or task.uncancel() > 0:
                    raise  # cancelled by someone else (shutdown): not ours to swallow
                message = f"request body not received within {self._body_timeout:g} s"
                raise _Refused(408, message, "slow-body", close=True) from None
            finally:
                timer.cancel()
        if not body:
            raise _Refused(
                400, "empty request body: expected an admission.k8s.io/v1 AdmissionReview",
                "bad-review",
            )  # fmt: skip
        try:
            return parse_review(body)
        except ReviewError as err:
            message = f"not an admission.k8s.io/v1 AdmissionReview: {err}"
            raise _Refused(400, message, "bad-review") from None


async def _body(receive: Receive, limit: int) -> bytes:
    """The request body, at most `limit` bytes (`_Refused` 413 beyond, whatever the client
    declared: chunked bodies have no Content-Length)."""
    message = await receive()
    _expect_body(message)
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the common case: one message
        if len(body) > limit:
            raise _too_large(limit)
        return body
    buffer = bytearray(body)
    while True:
        message = await receive()
        _expect_body(message)
        buffer += message.get("body", b"")
        if len(buffer) > limit:
            raise _too_large(limit)
        if not message.get("more_body", False):
            return bytes(buffer)


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _expect_body(message: Message) -> None:
    if message["type"] != "http.request":
        raise _Disconnected


def _too_large(limit: int) -> _Refused:
    return _Refused(413, f"request body is over the {limit} byte limit", "too-large", close=True)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    close: bool = False,
    allow: bytes | None = None,
) -> None:
    """One response: head and body (the server's protocol writes them in one go)."""
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", content_type)]
    if close:
        headers.append((b"connection", b"close"))
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
