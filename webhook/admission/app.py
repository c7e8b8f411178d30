"""The webhook's app. Routes are thin: read the review, call the service, answer.

`/validate` and `/mutate` are plain ASGI handlers in front of FastAPI (`fastpath`); FastAPI
serves the rest (`/healthz`, `/readyz`, `/metrics`).

`create_app(settings)` builds everything in the lifespan (process context, cluster reader,
policy store, service), so importing this module has no side effects and tests can pass
their own parts: a `ProcessContext` (whose registry client may carry an injected HTTP
transport), a cluster reader, a static policy store.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import Receive, Scope, Send

from webhook.admission.fastpath import AdmissionEndpoints, Parts
from webhook.admission.metrics import Metrics
from webhook.admission.service import AdmissionService
from webhook.context import ProcessContext
from webhook.errors import ImagegateError
from webhook.k8s.cluster import ClusterReader, KubernetesCluster, NoCluster
from webhook.policy.model import ImagePolicy
from webhook.policy.store import ClusterPolicies, PolicyStore, StaticPolicies
from webhook.rebuild.replacements import Replacements, read_replacements
from webhook.report.recorder import ReportRecorder, report_writer
from webhook.settings import Settings

log = logging.getLogger("imagegate.admission")


class WebhookApp(FastAPI):
    """FastAPI, with `/validate` and `/mutate` answered before its middleware and routing.

    The admission routes are the hot path (`webhook.admission.fastpath`); every other path
    goes through FastAPI as usual.
    """

    admission: AdmissionEndpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _ADMISSION_PATHS:
            await self.admission(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def metrics_text(self) -> bytes | None:
        """The Prometheus exposition, or None before the lifespan built the metrics (for the
        separate plain-HTTP metrics port)."""
        parts = self.admission.parts
        return None if parts is None else generate_latest(parts.metrics.registry)


_ADMISSION_PATHS = frozenset(("/validate", "/mutate"))


def create_app(
    settings: Settings,
    *,
    context: ProcessContext | None = None,
    cluster: ClusterReader | None = None,
    policies: PolicyStore | None = None,
) -> WebhookApp:
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
            app.state.parts = endpoints.parts = Parts(service, metrics, store)
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

    app = WebhookApp(title="imagegate webhook", lifespan=lifespan, docs_url=None, redoc_url=None)
    endpoints = app.admission = AdmissionEndpoints(settings.webhook)

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

    @app.get("/metrics")  # also on the plain-HTTP metrics port (`metrics_port`)
    async def metrics(request: Request) -> Response:
        body = generate_latest(_parts(request).metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


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
