"""The baseline for `make bench`: a bare FastAPI endpoint that admits every review.

It reads and parses the same AdmissionReview body and answers `allowed: true`, so the ratio
against imagegate's `/validate` measures what checking images costs on top of FastAPI.
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/validate")
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
