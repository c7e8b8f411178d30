"""CPU µs per warm review, in process: the app as uvicorn calls it, without HTTP or TLS.

`bench_warm.py` measures whole servers over HTTPS; on a shared machine its figures move with
the neighbours. This one calls the ASGI app (`create_app`, with its lifespan) directly, in a
loop, with the realistic passing and denied Pod reviews of `bench_warm.py` (a registry on
loopback serves a non-root image and a root one; the first answer of each warms the verdict
cache and proves it is real), and measures process CPU time (`time.process_time`) per review:
the best of several batches, which hardly moves with the machine's load. JSON logs are on, as in
`imagegate serve`, written to /dev/null (so a denial pays for its audit record).

    .venv/bin/python bench/bench_warm_inprocess.py [--reviews 3000] [--batches 7] [--profile]

`--profile` prints a cProfile of one batch of each review instead (cumulative order).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from tests.integration.reviews import realistic_pod_review  # noqa: E402
from tests.support.small_image import manifest, sha256  # noqa: E402
from webhook import logs  # noqa: E402
from webhook.admission.app import WebhookApp, create_app  # noqa: E402
from webhook.context import ProcessContext  # noqa: E402
from webhook.k8s.cluster import NoCluster  # noqa: E402
from webhook.policy.model import ImagePolicy  # noqa: E402
from webhook.policy.store import StaticPolicies  # noqa: E402
from webhook.registry import mediatypes as mt  # noqa: E402
from webhook.registry.auth import Keyring  # noqa: E402
from webhook.registry.client import RegistryClient  # noqa: E402
from webhook.settings import Settings  # noqa: E402


def _config(user: str) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"User": user, "Entrypoint": ["/app"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
        }
    ).encode()


# repository → (manifest, config): "good" runs as a numeric non-root user, "zero" as root.
IMAGES = {
    name: (manifest(_config(user)), _config(user))
    for name, user in (("good", "65532"), ("zero", "0"))
}


def serve() -> ThreadingHTTPServer:
    """A registry on 127.0.0.1 serving the two images under any tag."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.split("/")[2] if self.path.count("/") >= 4 else ""  # /v2/NAME/…
            found = IMAGES.get(name)
            if found is None:
                self.send_response(404 if self.path != "/v2/" else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            image, config = found
            body, kind = (
                (image, mt.OCI_MANIFEST)
                if "/manifests/" in self.path
                else (config, "application/octet-stream")
            )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Docker-Content-Digest", sha256(body))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _scope() -> dict[str, Any]:
    """The scope uvicorn (httptools) hands the app for one POST /validate."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8443),
        "client": ("127.0.0.1", 50000),
        "scheme": "https",
        "method": "POST",
        "root_path": "",
        "path": "/validate",
        "raw_path": b"/validate",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8443"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, */*"),
        ],
        "state": {},
    }


async def _answer(app: WebhookApp, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await app(_scope(), receive, send)
    return sent[0]["status"], sent[-1]["body"]


async def run(args: argparse.Namespace) -> int:
    registry = serve()
    host = f"127.0.0.1:{registry.server_address[1]}"
    settings = Settings()
    context = ProcessContext.from_settings(
        settings, registry=RegistryClient(settings.registry, Keyring.empty())
    )
    policy = ImagePolicy.model_validate(
        {
            "metadata": {"name": "bench"},
            "spec": {"mode": "enforce", "rules": {"allowedBases": {"enabled": False}}},
        }
    )
    app = create_app(
        settings, context=context, cluster=NoCluster(), policies=StaticPolicies([policy])
    )
    bodies = {
        "pass": json.dumps(realistic_pod_review(f"{host}/good:1")).encode(),
        "deny": json.dumps(realistic_pod_review(f"{host}/zero:1")).encode(),
    }
    async with app.router.lifespan_context(app):
        for review, allowed in (("pass", True), ("deny", False)):  # warm, and prove it is real
            status, answer = await _answer(app, bodies[review])
            response = json.loads(answer)["response"]
            if status != 200 or response["allowed"] is not allowed:
                raise SystemExit(f"the {review} review was not answered as expected: {answer!r}")
        for review in ("pass", "deny"):
            body = bodies[review]

            async def batch(body: bytes = body) -> None:
                for _ in range(args.reviews):
                    await _answer(app, body)

            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await batch()
                profiler.disable()
                print(f"=== {review} review, {args.reviews} reviews ===")
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
                continue
            await batch()  # settle
            times = []
            for _ in range(args.batches):
                started = time.process_time()
                await batch()
                times.append((time.process_time() - started) / args.reviews * 1e6)
            times.sort()
            print(
                f"{review} review: best {times[0]:6.1f} µs/review, median "
                f"{times[len(times) // 2]:6.1f} ({args.batches} batches of {args.reviews})"
            )
    await context.aclose()
    registry.shutdown()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reviews", type=int, default=3000, help="reviews per batch")
    parser.add_argument("--batches", type=int, default=7, help="batches; the best is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile one batch of each")
    args = parser.parse_args()
    # JSON logs as `imagegate serve --log-format json` writes them, into /dev/null.
    stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    try:
        logs.configure(json_format=True)
    finally:
        devnull, sys.stderr = sys.stderr, stderr
    runner: Callable[[Any], int] = uvloop.run
    code = runner(run(args))
    devnull.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
