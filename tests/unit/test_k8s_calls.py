"""`webhook.k8s.calls.call`: every kubernetes client failure becomes one typed `ClusterError`.

The statuses are injected as the client's own `ApiException` (built as the client builds it,
with the API server's Status body); the unreachable and the answering API server are real
sockets on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from webhook.errors import (
    ClusterConflict,
    ClusterError,
    ClusterForbidden,
    ClusterInvalid,
    ClusterNotFound,
    ClusterUnavailable,
    ImagegateError,
)
from webhook.k8s.calls import call
from webhook.k8s.cluster import KubernetesCluster
from webhook.k8s.objects import ImagegateObjects


def status_body(code: int, reason: str, message: str) -> str:
    """The `Status` object the API server answers an error with."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


def failing(err: BaseException) -> Any:
    def fn() -> None:
        raise err

    return fn


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (400, "Bad Request", ClusterInvalid),
        (401, "Unauthorized", ClusterForbidden),
        (403, "Forbidden", ClusterForbidden),
        (404, "Not Found", ClusterNotFound),
        (409, "Conflict", ClusterConflict),
        (410, "Gone", ClusterError),
        (422, "Unprocessable Entity", ClusterInvalid),
        (429, "Too Many Requests", ClusterUnavailable),
        (500, "Internal Server Error", ClusterUnavailable),
        (503, "Service Unavailable", ClusterUnavailable),
        (504, "Gateway Timeout", ClusterUnavailable),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
async def test_each_status_raises_its_own_error_type(
    status: int, reason: str, expected: type[ClusterError]
) -> None:
    body = status_body(status, reason.replace(" ", ""), f"the server says {status}")
    err = ApiException(status=status, reason=reason, body=body)

    with pytest.raises(expected) as raised:
        await call(failing(err), "patch imagerebuilds default/web")

    assert type(raised.value) is expected
    assert isinstance(raised.value, ImagegateError)
    assert raised.value.status == status
    assert str(raised.value) == (
        f"cannot patch imagerebuilds default/web: {status} {reason}: the server says {status}"
    )


async def test_a_body_that_is_not_a_status_leaves_the_message_at_the_status() -> None:
    err = ApiException(status=502, reason="Bad Gateway", body="<html>proxy error</html>")

    with pytest.raises(ClusterUnavailable, match=r"^cannot list pods: 502 Bad Gateway$"):
        await call(failing(err), "list pods")


async def test_the_server_message_is_capped() -> None:
    err = ApiException(
        status=422, reason="Unprocessable Entity", body=status_body(422, "", "x" * 5000)
    )

    with pytest.raises(ClusterInvalid) as raised:
        await call(failing(err), "create policyreports default/imagegate-default")

    assert len(str(raised.value)) < 600


async def test_other_errors_are_not_converted() -> None:
    """A programming error (a bad argument to the client) is a bug, not a cluster answer."""
    with pytest.raises(ValueError, match="bad argument"):
        await call(failing(ValueError("bad argument")), "read namespace default")


async def test_the_value_comes_back_from_the_thread() -> None:
    caller = threading.get_ident()

    assert await call(lambda: threading.get_ident() != caller, "read namespace default") is True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_client(host: str) -> Any:
    configuration = k8s.Configuration()
    configuration.host = host
    configuration.retries = 0
    return k8s.ApiClient(configuration)


async def test_an_api_server_that_is_not_listening_is_unavailable() -> None:
    port = free_port()
    cluster = KubernetesCluster(api_client(f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(ClusterUnavailable) as raised:
            await cluster.list_all("v1", "namespaces")
    finally:
        cluster.close()

    assert raised.value.status is None
    assert str(raised.value).startswith(
        "cannot list namespaces (v1) in all namespaces: the Kubernetes API is unreachable: "
    )


class StatusServer(BaseHTTPRequestHandler):
    """Answers every request with the Status in `server.answer` (code, reason, message)."""

    def _answer(self) -> None:
        code, reason, message = self.server.answer  # type: ignore[attr-defined]
        body = status_body(code, reason, message).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def host_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


async def test_a_stale_claim_is_a_conflict_with_the_server_message(
    api_server: ThreadingHTTPServer,
) -> None:
    api_server.answer = (  # type: ignore[attr-defined]
        409,
        "Conflict",
        'Operation cannot be fulfilled on imagerebuilds.imagegate.dev "web": '
        "the object has been modified; please apply your changes to the latest version",
    )
    client = api_client(host_of(api_server))
    try:
        objects = ImagegateObjects(client)
        with pytest.raises(ClusterConflict) as raised:
            await objects.patch_status("imagerebuilds", "default", "web", {"phase": "Running"}, "7")
    finally:
        client.close()

    assert str(raised.value) == (
        "cannot patch the status of imagerebuilds default/web: 409 Conflict: "
        'Operation cannot be fulfilled on imagerebuilds.imagegate.dev "web": '
        "the object has been modified; please apply your changes to the latest version"
    )


async def test_creating_an_existing_object_is_not_an_error(
    api_server: ThreadingHTTPServer,
) -> None:
    api_server.answer = (409, "AlreadyExists", 'imagerebuilds.imagegate.dev "web" already exists')  # type: ignore[attr-defined]
    client = api_client(host_of(api_server))
    try:
        objects = ImagegateObjects(client)
        body = {"metadata": {"name": "web"}, "spec": {}}
        created = await objects.create_if_absent("imagerebuilds", "default", body)
    finally:
        client.close()

    assert created is False


async def test_a_forbidden_lookup_names_what_was_read(api_server: ThreadingHTTPServer) -> None:
    api_server.answer = (  # type: ignore[attr-defined]
        403,
        "Forbidden",
        'namespaces "team-a" is forbidden: User "system:serviceaccount:imagegate:webhook" '
        'cannot get resource "namespaces" in API group "" in the namespace "team-a"',
    )
    cluster = KubernetesCluster(api_client(host_of(api_server)))
    try:
        with pytest.raises(ClusterForbidden) as raised:
            await cluster.namespace_labels("team-a")
    finally:
        cluster.close()

    assert raised.value.status == 403
    assert str(raised.value).startswith(
        'cannot read namespace team-a: 403 Forbidden: namespaces "team-a"'
    )
