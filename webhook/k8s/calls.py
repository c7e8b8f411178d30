"""The one way webhook.k8s calls the Kubernetes API: in a thread, with typed errors.

The `kubernetes` client is synchronous and raises its own `ApiException` (and urllib3's errors
when the server cannot be reached). `call` runs a client call in a thread and converts those,
in this one place, into the `ClusterError` family of `webhook.errors` (as Gafaelfawr's
`_convert_exception` does), so callers catch `ClusterNotFound` or `ClusterConflict` instead of
looking at statuses, and nothing above `webhook.k8s` knows the client exists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

from webhook.errors import (
    ClusterConflict,
    ClusterError,
    ClusterForbidden,
    ClusterInvalid,
    ClusterNotFound,
    ClusterUnavailable,
)

T = TypeVar("T")

MAX_SERVER_MESSAGE = 500

_BY_STATUS: dict[int, type[ClusterError]] = {
    400: ClusterInvalid,
    401: ClusterForbidden,
    403: ClusterForbidden,
    404: ClusterNotFound,
    409: ClusterConflict,
    422: ClusterInvalid,
    429: ClusterUnavailable,
}


async def call(fn: Callable[[], T], what: str) -> T:
    """Run the blocking client call `fn` in a thread; its errors become `ClusterError`s.

    `what` says what was being done, as a phrase after "cannot" ("read namespace default").
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return await asyncio.to_thread(fn)
    except ApiException as err:
        raise api_error(err, what) from None
    except (HTTPError, OSError) as err:
        raise ClusterUnavailable(
            f"cannot {what}: the Kubernetes API is unreachable: {err}"
        ) from None


def api_error(err: Any, what: str) -> ClusterError:
    """The `ClusterError` for a kubernetes `ApiException`: the status picks the class, and the
    message has what was being done, the status and the API server's own message."""
    status = err.status if isinstance(err.status, int) else None
    kind = _BY_STATUS.get(status or 0, ClusterError)
    if status is not None and status >= 500:
        kind = ClusterUnavailable
    answer = " ".join(str(part) for part in (status, err.reason) if part)
    message = f"cannot {what}: {answer or 'error'}"
    detail = _server_message(err.body)
    if detail:
        message += f": {detail}"
    return kind(message, status)


def _server_message(body: Any) -> str:
    """The `message` of the Status object the API server answers errors with, if any."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if not isinstance(body, str) or not body:
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:MAX_SERVER_MESSAGE] if message else ""
