"""The admission fast path: `/validate` and `/mutate` as plain ASGI handlers before FastAPI.

In process (the app as uvicorn calls it) and against a real uvicorn server over a real socket:
every guarantee of the FastAPI routes it replaced holds (400 that says why, 413, 408, 405, no
5xx, the uid on log lines, metrics), the answers are the bytes `JSONResponse` wrote, other paths
are still FastAPI's, and each response leaves in one transport write.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tests.integration.reviews import container, pod_spec, review
from tests.support.processes import LoggedProcess, free_port, spawn
from webhook import cli
from webhook.admission.app import WebhookApp, create_app
from webhook.admission.fastpath import encode
from webhook.admission.metrics_port import MetricsServer
from webhook.admission.models import AdmissionResponse, Status, review_json
from webhook.admission.server import _GuardedHttpTools, _metrics_server
from webhook.admission.server import run as serve_run
from webhook.context import ProcessContext
from webhook.k8s.cluster import NoCluster
from webhook.logs import admission_uid
from webhook.policy.model import ImagePolicy
from webhook.policy.store import StaticPolicies
from webhook.registry.auth import Keyring
from webhook.registry.client import RegistryClient
from webhook.settings import RegistrySettings, Settings, WebhookSettings

IMAGE = "registry.example/app:1"
LIMIT = 64 * 1024


def _unreachable(request: httpx.Request) -> httpx.Response:
    """A registry that cannot be reached: the policy's onError (deny) decides, with a reason."""
    raise httpx.ConnectError("connection refused")


def _app(**hook: Any) -> WebhookApp:
    settings = Settings(
        registry=RegistrySettings(retries=0, backoff_seconds=0.0),
        webhook=WebhookSettings(max_body_bytes=LIMIT, **hook),
    )
    registry = RegistryClient(settings.registry, Keyring.empty(), httpx.MockTransport(_unreachable))
    context = ProcessContext.from_settings(settings, registry=registry)
    policy = ImagePolicy.model_validate({"spec": {"onError": "deny"}})
    return create_app(
        settings, context=context, cluster=NoCluster(), policies=StaticPolicies([policy])
    )


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(_app()) as test_client:
        yield test_client


def _denied_review(uid: str = "11111111-2222-3333-4444-555555555555") -> dict[str, Any]:
    return review("Pod", pod_spec(container("app", IMAGE)), uid=uid)


def _allowed_review(uid: str = "aaaaaaaa-2222-3333-4444-555555555555") -> dict[str, Any]:
    """A Pod in an exempt namespace: admitted without a registry."""
    return review("Pod", pod_spec(container("app", IMAGE)), namespace="kube-system", uid=uid)


def _metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# --- malformed requests: 4xx that say why, never a 5xx ----------------------------------------


def _without_uid() -> bytes:
    body = _denied_review()
    del body["request"]["uid"]
    return json.dumps(body).encode()


def _with(path: str, value: Any) -> bytes:
    body = _denied_review()
    body[path] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        pytest.param(b"", 400, "empty request body", id="empty"),
        pytest.param(b"{not json", 400, "AdmissionReview: the body is not JSON (", id="garbage"),
        pytest.param(b"[1,2,3]", 400, "AdmissionReview", id="json-array"),
        pytest.param(_with("kind", "Pod"), 400, "kind", id="wrong-kind"),
        pytest.param(
            _with("apiVersion", "admission.k8s.io/v1beta1"),
            400,
            "apiVersion",
            id="wrong-api-version",
        ),
        pytest.param(
            _without_uid(), 400, "missing required field `uid` - at `$.request`", id="missing-uid"
        ),
        pytest.param(
            _with("request", {"uid": ""}), 400, "length >= 1 - at `$.request.uid`", id="empty-uid"
        ),
        pytest.param(
            b"{" + b" " * LIMIT + b"}", 413, f"over the {LIMIT} byte limit", id="too-large"
        ),
    ],
)
@pytest.mark.parametrize("endpoint", ["/validate", "/mutate"])
def test_a_malformed_review_gets_a_4xx_that_says_why(
    client: TestClient, endpoint: str, body: bytes, status: int, says: str
) -> None:
    answer = client.post(endpoint, content=body)
    assert answer.status_code == status
    assert says in answer.text
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    reason = "too-large" if status == 413 else "bad-review"
    assert _metric(client.get("/metrics").text, "imagegate_errors_total", reason=reason) == 1.0


def test_a_chunked_body_is_read_and_answered(client: TestClient) -> None:
    raw = json.dumps(_denied_review()).encode()
    chunks = iter([raw[:100], raw[100:2000], raw[2000:]])
    answer = client.post("/validate", content=chunks)  # no Content-Length: chunked
    assert answer.status_code == 200
    assert answer.json()["response"]["allowed"] is False


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length to refuse it by
        for _ in range(1000):
            yield b" " * 1024

    answer = client.post("/validate", content=chunks())
    assert answer.status_code == 413
    assert f"over the {LIMIT} byte limit" in answer.text
    assert answer.headers["connection"] == "close"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_naming_post(client: TestClient, method: str) -> None:
    answer = client.request(method, "/validate")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"
    assert answer.json() == {"detail": "Method Not Allowed"}


def test_other_paths_are_fastapis(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    missing = client.post("/validate/extra", json=_denied_review())
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})


async def test_a_body_dribbled_past_the_deadline_is_408() -> None:
    app = _app(body_timeout_seconds=0.2)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async with _lifespan(app):
        await app(_scope("/validate"), receive, send)
    assert sent[0]["status"] == 408
    assert sent[1]["body"] == b"request body not received within 0.2 s"
    assert (b"connection", b"close") in sent[0]["headers"]


async def test_a_client_gone_before_its_body_is_counted() -> None:
    app = _app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async with _lifespan(app):
        await app(_scope("/mutate"), receive, send)
        exposition = app.metrics_text()
    assert [m.get("status") for m in sent] == [400, None]  # the server drops it: no one listens
    assert exposition is not None
    assert _metric(exposition.decode(), "imagegate_errors_total", reason="disconnect") == 1.0


# --- answers, logs and metrics ------------------------------------------------------------------


def test_answers_and_metrics_are_counted(client: TestClient) -> None:
    denied = client.post("/validate", json=_denied_review()).json()["response"]
    allowed = client.post("/validate", json=_allowed_review()).json()["response"]
    mutated = client.post("/mutate", json=_denied_review()).json()["response"]
    assert denied["allowed"] is False
    assert IMAGE in denied["status"]["message"]
    assert allowed == {"uid": "aaaaaaaa-2222-3333-4444-555555555555", "allowed": True}
    assert mutated == {"uid": "11111111-2222-3333-4444-555555555555", "allowed": True}
    text = client.get("/metrics").text
    counted = "imagegate_admission_requests_total"
    assert _metric(text, counted, endpoint="validate", verdict="denied") == 1.0
    assert _metric(text, counted, endpoint="validate", verdict="allowed") == 1.0
    assert _metric(text, counted, endpoint="mutate", verdict="unchanged") == 1.0
    latency = "imagegate_admission_duration_seconds_count"
    assert _metric(text, latency, endpoint="validate") == 2.0
    assert _metric(text, latency, endpoint="mutate") == 1.0
    assert _metric(text, "imagegate_violations_total", rule="inspection", mode="enforce") == 1.0


class _Uids(logging.Handler):
    """What `webhook.logs` puts on each record: the admission uid in force when it is logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), admission_uid.get()))


def _logged_while_answering(
    app: WebhookApp, review: dict[str, Any]
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    handler = _Uids()
    logger = logging.getLogger("imagegate")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with TestClient(app) as client:
            answer = client.post("/validate", json=review).json()["response"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return handler.seen, answer


def test_lines_logged_while_answering_carry_the_uid() -> None:
    seen, answer = _logged_while_answering(
        _app(log_denies=True), _denied_review(uid="uid-of-this-review")
    )
    assert answer["allowed"] is False
    audit = [uid for message, uid in seen if message == "admission audit record"]
    assert audit == ["uid-of-this-review"]
    assert ("admission", "uid-of-this-review") in seen
    assert admission_uid.get() == ""  # and it does not leak past the answer


def test_a_denial_writes_no_audit_record_unless_log_denies() -> None:
    """As Gatekeeper's --log-denies (default off): the denial is in the answer, the API
    server's audit log and the metrics; admitted problems always get a record (test_webhook)."""
    assert WebhookSettings().log_denies is False
    seen, answer = _logged_while_answering(_app(), _denied_review(uid="uid-of-this-review"))
    assert answer["allowed"] is False
    assert [m for m, _ in seen if m == "admission audit record"] == []


RESPONSES = {
    "allowed": AdmissionResponse(uid="u-1", allowed=True),
    "denied": AdmissionResponse(
        uid="u-2",
        allowed=False,
        status=Status(code=403, reason="Forbidden", message='imagegate denied Pod a/b:\n- "x" ✗'),
    ),
    "denied-with-warnings": AdmissionResponse(
        uid="u-3",
        allowed=False,
        warnings=["w1"],
        status=Status(code=403, reason="Forbidden", message="no"),
    ),
    "allowed-with-warnings": AdmissionResponse(uid="u-4", allowed=True, warnings=["ünïcode"]),
    "patched": AdmissionResponse(uid="u-5", allowed=True, patch_type="JSONPatch", patch="W10="),
    "other-status": AdmissionResponse(
        uid="u-6", allowed=False, status=Status(code=400, message="bad")
    ),
    "uid-needing-escapes": AdmissionResponse(uid='a"b\\c\u2028\x01é', allowed=True),
    "annotations": AdmissionResponse(uid="u-7", allowed=True, audit_annotations={"k": "v"}),
}


@pytest.mark.parametrize("name", RESPONSES)
def test_answers_are_the_bytes_jsonresponse_wrote(name: str) -> None:
    response = RESPONSES[name]
    assert encode(response) == JSONResponse(review_json(response)).body


def test_a_lone_surrogate_in_the_uid_is_escaped_not_a_500() -> None:
    response = AdmissionResponse(uid="x\udc00y", allowed=False, status=Status(
        code=403, reason="Forbidden", message="m\ud800"))  # fmt: skip
    with pytest.raises(UnicodeEncodeError):
        JSONResponse(review_json(response))  # what the FastAPI route did: a 500
    decoded = json.loads(encode(response))
    assert decoded["response"]["uid"] == "x\udc00y"
    assert decoded["response"]["status"]["message"] == "m\ud800"


def test_a_review_with_a_lone_surrogate_is_a_400_not_a_500(client: TestClient) -> None:
    body = json.dumps(_allowed_review(uid="\udcff")).encode()  # \udcff escaped in the JSON
    answer = client.post("/validate", content=body)
    assert answer.status_code == 400
    assert "the body is not JSON (JSON is malformed: invalid utf-16 surrogate pair" in answer.text


@pytest.mark.parametrize("where", ['"request":', '"spec":'])
def test_a_review_nested_too_deeply_is_a_400_not_a_500(client: TestClient, where: str) -> None:
    """msgspec recurses once per nesting level, and the depth is the tenant's to choose: in a
    field the envelope skips, and in the object (a plain dict, decoded whole)."""
    deep = b"[" * 30_000 + b"]" * 30_000  # 60 kB, under the body limit
    text = json.dumps(_allowed_review()).replace(where, f'"deep": DEEP, {where}', 1)
    assert "DEEP" in text
    body = text.encode().replace(b"DEEP", deep)
    answer = client.post("/validate", content=body)
    assert answer.status_code == 400
    assert "nested too deeply" in answer.text


# --- a real uvicorn server over a real socket: one write per response ---------------------------


class _CountingTransport:
    """Passes everything to the real transport; remembers each `write`."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _counting(base: type[HttpToolsProtocol], writes: list[bytes]) -> type[HttpToolsProtocol]:
    class Counting(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(_CountingTransport(transport, writes))

    return Counting


@contextlib.asynccontextmanager
async def _serving(protocol: type[HttpToolsProtocol]) -> AsyncIterator[int]:
    config = uvicorn.Config(
        _app(), host="127.0.0.1", port=0, http=protocol, log_config=None, lifespan="on",
        access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[assignment,method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _exchange(port: int, requests: list[bytes], answers: int) -> bytes:
    """Send `requests` on one connection; read until `answers` responses came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(requests))
    data = b""
    async with asyncio.timeout(10):
        while _complete(data) < answers:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    writer.close()
    return data


def _complete(data: bytes) -> int:
    """How many complete final responses (not 100 Continue) `data` holds."""
    count = 0
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            return count
        head = data[:head_end].decode("latin-1")
        found = re.search(r"(?im)^content-length: (\d+)", head)
        length = int(found.group(1)) if found else 0
        if head.startswith("HTTP/1.1 100"):
            length = 0
        if len(data) < head_end + 4 + length:
            return count
        if not head.startswith("HTTP/1.1 100"):
            count += 1
        data = data[head_end + 4 + length :]


def _post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = [
        b"POST " + path.encode() + b" HTTP/1.1",
        b"Host: x",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


REQUESTS: dict[str, Callable[[], bytes]] = {
    "allowed": lambda: _post("/validate", json.dumps(_allowed_review()).encode()),
    "denied": lambda: _post("/validate", json.dumps(_denied_review()).encode()),
    "mutate": lambda: _post("/mutate", json.dumps(_denied_review()).encode()),
    "malformed": lambda: _post("/validate", b"{"),
    "fastapi-route": lambda: b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "fastapi-404": lambda: b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", REQUESTS)
async def test_each_response_leaves_in_one_write(name: str) -> None:
    writes: list[bytes] = []
    async with _serving(_counting(_GuardedHttpTools, writes)) as port:
        data = await _exchange(port, [REQUESTS[name](), REQUESTS[name]()], answers=2)
    assert _complete(data) == 2  # two requests on one kept-alive connection, two answers
    assert len(writes) == 2, writes
    assert all(w.startswith(b"HTTP/1.1 ") and b"\r\n\r\n" in w for w in writes)
    assert b"".join(writes) == data


async def test_uvicorn_alone_writes_head_and_body_apart() -> None:
    """The counter can tell: without the one-write transport, a response is two writes."""
    writes: list[bytes] = []
    async with _serving(_counting(HttpToolsProtocol, writes)) as port:
        await _exchange(port, [REQUESTS["allowed"]()], answers=1)
    assert len(writes) == 2
    assert writes[0].endswith(b"\r\n\r\n")
    assert writes[1].startswith(b'{"apiVersion"')


async def test_100_continue_still_goes_out_before_the_body_arrives() -> None:
    writes: list[bytes] = []
    body = json.dumps(_allowed_review()).encode()
    async with _serving(_counting(_GuardedHttpTools, writes)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = _post("/validate", b"", b"Expect: 100-continue").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)
        )
        writer.write(head)
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        async with asyncio.timeout(5):
            final = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert final.startswith(b"HTTP/1.1 200")
    assert len(writes) == 2  # the interim answer, then head and body together


async def test_a_head_request_is_answered_not_held() -> None:
    writes: list[bytes] = []
    async with _serving(_counting(_GuardedHttpTools, writes)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 ")
    assert len(writes) == 1


# --- the plain-HTTP metrics port ---------------------------------------------------------------


async def _get(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(5):
        data = await reader.read()  # the server closes after one answer
    writer.close()
    return data


async def test_the_metrics_port_serves_the_apps_metrics_and_nothing_else() -> None:
    app = _app()
    async with _lifespan(app):
        exporter = MetricsServer(app.metrics_text, "127.0.0.1", 0)
        await exporter.start()
        try:
            ok = await _get(exporter.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            missing = await _get(exporter.port, b"GET /validate HTTP/1.1\r\nHost: x\r\n\r\n")
            posted = await _get(exporter.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            garbage = await _get(exporter.port, b"\x16\x03\x01 hello\r\n\r\n")
        finally:
            await exporter.close()
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=" in head
    assert b"# TYPE imagegate_admission_duration_seconds histogram" in body
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) == len(body)  # type: ignore[union-attr]
    assert missing.startswith(b"HTTP/1.1 404")
    assert posted.startswith(b"HTTP/1.1 405")
    assert b"Allow: GET, HEAD" in posted
    assert garbage.startswith(b"HTTP/1.1 400")


async def test_the_metrics_port_is_503_until_the_app_started_and_drops_slow_clients() -> None:
    exporter = MetricsServer(lambda: None, "127.0.0.1", 0, timeout=0.2)
    await exporter.start()
    try:
        early = await _get(exporter.port, b"GET /metrics HTTP/1.1\r\n\r\n")
        silent = await _get(exporter.port, b"GET /metr")  # never finishes its head
    finally:
        await exporter.close()
    assert early.startswith(b"HTTP/1.1 503")
    assert silent == b""


# --- helpers ------------------------------------------------------------------------------------


def _scope(path: str, method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8443),
    }  # fmt: skip


@contextlib.asynccontextmanager
async def _lifespan(app: WebhookApp) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        yield


# --- `imagegate serve --metrics-port`: a real process ------------------------------------------


def test_serve_answers_metrics_on_its_own_port_and_keeps_them_on_the_main_one(
    tmp_path: Path,
) -> None:
    port, metrics_port = free_port(), free_port()
    argv = [sys.executable, "-m", "webhook", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--log-format", "text"]  # fmt: skip
    env = {**os.environ, "IMAGEGATE_WEBHOOK_KUBERNETES": "off"}
    proc = spawn("imagegate serve", argv, tmp_path / "serve.log", env=env)
    try:
        scraped = _poll(f"http://127.0.0.1:{metrics_port}/metrics", proc)
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        assert "# TYPE imagegate_admission_requests_total counter" in scraped.text
        main = httpx.get(f"http://127.0.0.1:{port}/metrics")  # plain HTTP here: no certs given
        assert main.status_code == 200
        assert "imagegate_admission_duration_seconds" in main.text
        assert httpx.post(f"http://127.0.0.1:{metrics_port}/validate").status_code == 404
    finally:
        proc.stop(10)


def test_serve_refuses_a_metrics_port_equal_to_its_port() -> None:
    result = CliRunner().invoke(
        cli.app, ["serve", "--port", "9443", "--metrics-port", "9443"],
        env={"IMAGEGATE_WEBHOOK_KUBERNETES": "off"},
    )  # fmt: skip
    assert result.exit_code == 2
    assert "metrics port must differ" in result.output


def test_the_metrics_port_setting_defaults_to_8081_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WebhookSettings().metrics_port == 8081
    monkeypatch.setenv("IMAGEGATE_WEBHOOK_METRICS_PORT", "0")
    assert WebhookSettings().metrics_port == 0


def _poll(url: str, proc: LoggedProcess) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.alive(), proc.logs()
        with contextlib.suppress(httpx.TransportError):
            answer = httpx.get(url)
            if answer.status_code == 200:
                return answer
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200:\n{proc.logs()}")


async def test_a_metrics_port_in_use_is_logged_and_admission_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        exporter = await _metrics_server(lambda: b"", "127.0.0.1", port)
    finally:
        taken.close()
    assert exporter is None
    [record] = [r for r in caplog.records if r.getMessage().startswith("metrics port unavailable")]
    assert record.levelname == "ERROR"
    assert record.__dict__["port"] == port
    assert await _metrics_server(lambda: b"", "127.0.0.1", 0) is None  # 0: off


def test_idle_connections_outlive_the_api_server_s_own_idle_timeout() -> None:
    """The API server (Go's http.Transport, IdleConnTimeout 90 s) must close an idle
    connection before we do: when the server closes first, a review written at that moment
    fails with EOF, is not retried (a POST), and failurePolicy Fail refuses the admission."""
    go_idle_conn_timeout = 90.0
    assert WebhookSettings().keep_alive_seconds > go_idle_conn_timeout
    assert inspect.signature(serve_run).parameters["keep_alive"].default > go_idle_conn_timeout
