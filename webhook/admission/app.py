"""The webhook's FastAPI app. Routes are thin: read the review, call the service, answer.

`create_app(settings)` builds everything in the lifespan (process context, cluster reader,
policy store, service), so importing this module has no side effects and tests can pass
their own parts: a `ProcessContext` (whose registry client may carry an injected HTTP
transport), a cluster reader, a static policy store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from webhook.admission.metrics import Metrics
from webhook.admission.models import AdmissionRequest, AdmissionReview, review_json
from webhook.admission.service import AdmissionService
from webhook.context import ProcessContext
from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader, KubernetesCluster, NoCluster
from webhook.logs import admission_uid
from webhook.policy.model import ImagePolicy
from webhook.policy.store import ClusterPolicies, PolicyStore, StaticPolicies
from webhook.rebuild.replacements import Replacements, read_replacements
from webhook.report.recorder import ReportRecorder, report_writer
from webhook.settings import Settings, WebhookSettings

log = logging.getLogger("imagegate.admission")


class BadReview(ImagegateError):
    """A request that is not an AdmissionReview we can answer: 400 (or 413 when too large)."""

    http_status = 400


class TooLarge(BadReview):
    http_status = 413


@dataclass
class Parts:
    """What the lifespan builds; tests may hand in their own cluster or policy store."""

    service: AdmissionService
    metrics: Metrics
    policies: PolicyStore


def create_app(
    settings: Settings,
    *,
    context: ProcessContext | None = None,
    cluster: ClusterReader | None = None,
    policies: PolicyStore | None = None,
) -> FastAPI:
    """The webhook app. Without `cluster`, one is connected (or NoCluster when there is none).

    A `context` handed in stays the caller's to close; without one, the app makes its own.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hook = settings.webhook
        reader = cluster or _connect(settings)
        store = policies or _policy_store(settings, reader)
        mapping = read_replacements(hook.replacements) if hook.replacements else {}
        replacements = Replacements(
            mapping,
            reader if not isinstance(reader, NoCluster) else None,
            hook.policy_refresh_seconds,
        )
        recorder = (
            ReportRecorder(report_writer(reader), hook.report_flush_seconds)
            if isinstance(reader, KubernetesCluster) and hook.record_reports
            else None
        )
        ctx = context or ProcessContext.from_settings(settings)
        try:
            metrics = Metrics(ctx.registry.stats)
            service = AdmissionService(
                ctx.checker, store, reader, replacements, hook, ctx.tenant_keyring, recorder,
                count_error=metrics.error,
            )  # fmt: skip
            app.state.parts = Parts(service, metrics, store)
            store.start()
            replacements.start()
            if recorder is not None:
                recorder.start()
            # Everything built so far lives as long as the process: keep it out of the
            # garbage collector's scans, which otherwise cost every request (CPython's advice
            # for servers, `gc.freeze`).
            gc.collect()
            gc.freeze()
            yield
        finally:
            if recorder is not None:
                await recorder.stop()
            await replacements.stop()
            await store.stop()
            if context is None:
                await ctx.aclose()

    app = FastAPI(title="imagegate webhook", lifespan=lifespan, docs_url=None, redoc_url=None)
    hook = settings.webhook

    # The two admission routes are plain Starlette routes: they read the raw body themselves
    # (size limit, 400 on garbage), so FastAPI's per-request dependency solving buys nothing
    # on the hottest path of the service.
    async def validate(request: Request) -> Response:
        return await _review(request, "validate", hook)

    async def mutate(request: Request) -> Response:
        return await _review(request, "mutate", hook)

    app.add_route("/validate", validate, methods=["POST"], include_in_schema=False)
    app.add_route("/mutate", mutate, methods=["POST"], include_in_schema=False)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        store = _parts(request).policies
        if store.ready and store.policies:
            return JSONResponse({"status": "ready", "policies": [p.name for p in store.policies]})
        reason = "no ImagePolicy loaded yet" if not store.problems else "; ".join(store.problems)
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        body = generate_latest(_parts(request).metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


async def _review(request: Request, endpoint: str, hook: WebhookSettings) -> Response:
    parts = _parts(request)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(hook.body_timeout_seconds):
            review = await _read_review(request, hook.max_body_bytes)
    except TimeoutError:  # a client dribbling its body must not hold a connection for ever
        parts.metrics.error("slow-body")
        message = f"request body not received within {hook.body_timeout_seconds:g} s"
        log.info("refused a slow request", extra={"error": message})
        return PlainTextResponse(message, status_code=408)
    except ClientDisconnect:  # the client went away: nothing to answer, nothing to alarm
        parts.metrics.error("disconnect")
        log.debug("client disconnected before its review arrived")
        return Response(status_code=400)
    except BadReview as err:
        parts.metrics.error("too-large" if isinstance(err, TooLarge) else "bad-review")
        log.warning("refused a malformed AdmissionReview", extra={"error": err.message})
        return PlainTextResponse(err.message, status_code=err.http_status)
    token = admission_uid.set(review.request.uid)
    try:
        body = await _answer(parts, review.request, endpoint)
    finally:
        parts.metrics.observe(endpoint, time.perf_counter() - started)
        admission_uid.reset(token)
    return JSONResponse(body)


async def _answer(parts: Parts, request: AdmissionRequest, endpoint: str) -> dict[str, Any]:
    if endpoint == "mutate":
        response = await parts.service.mutate(request)
        parts.metrics.request(endpoint, "patched" if response.patch else "unchanged")
        return review_json(response)
    decision = await parts.service.validate(request)
    verdict = "allowed" if decision.response.allowed else "denied"
    parts.metrics.request(endpoint, verdict)
    for problem in decision.problems:
        parts.metrics.violation(problem.rule, str(problem.mode))
    if log.isEnabledFor(logging.DEBUG):
        log.debug("admission", extra={"verdict": verdict, "problems": len(decision.problems)})
    return review_json(decision.response)


async def _read_review(request: Request, limit: int) -> AdmissionReview:
    """The review, or BadReview saying what is wrong with it (never a 500)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        if int(declared) > limit:
            raise TooLarge(f"request body of {declared} bytes is over the {limit} byte limit")
        body = bytearray(await request.body())  # the API server always sends Content-Length
    else:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise TooLarge(f"request body is over the {limit} byte limit")
    if not body:
        raise BadReview("empty request body: expected an admission.k8s.io/v1 AdmissionReview")
    try:
        return AdmissionReview.model_validate_json(bytes(body))
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}"
            for e in err.errors()[:5]
        )
        raise BadReview(f"not an admission.k8s.io/v1 AdmissionReview: {details}") from None


def _parts(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    return parts


def _connect(settings: Settings) -> ClusterReader:
    mode = settings.webhook.kubernetes
    if mode == "off":
        return NoCluster()
    try:
        return KubernetesCluster.connect(settings.webhook.kubeconfig)
    except ImagegateError as err:
        if mode == "required" or settings.webhook.policies_from_cluster:
            raise
        log.warning("running without a Kubernetes API", extra={"error": str(err)})
        return NoCluster()


def _policy_store(settings: Settings, cluster: ClusterReader) -> PolicyStore:
    hook = settings.webhook
    if hook.policies_from_cluster:
        return ClusterPolicies(cluster, hook.policy_refresh_seconds)
    if hook.policy is not None:
        return StaticPolicies.from_path(hook.policy)
    return StaticPolicies([ImagePolicy()])
