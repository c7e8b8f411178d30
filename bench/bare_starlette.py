"""The second baseline of `bench/bench_warm.py`: the same allow-all endpoint on bare Starlette.

Starlette is what FastAPI is built on, without FastAPI's per-request extras; the ratio against
it shows how close imagegate's `/validate` comes to the framework floor.
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def validate(request: Request) -> JSONResponse:
    review = json.loads(await request.body())
    uid = review["request"]["uid"]
    return JSONResponse(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": True},
        }
    )


async def docs(request: Request) -> JSONResponse:
    """Answers the bench's readiness probe (FastAPI's app has /docs)."""
    return JSONResponse({})


app = Starlette(routes=[Route("/validate", validate, methods=["POST"]), Route("/docs", docs)])
