"""A Docker registry token server (distribution's token auth spec) for a real registry.

The registry is started with `auth: token` naming this server's realm, its service and
issuer, and the issuer certificate as `rootcertbundle`; it then answers 401 with
`WWW-Authenticate: Bearer realm=…,service=…,scope=…` and accepts the JWTs issued here
(RS256, the issuer certificate in the `x5c` header)::

    tokens = TokenServer.start(tmp / "tokens", users={"alice": "wonderland"})
    reg = start_registry(tmp / "reg", token=tokens.registry_auth())
    ...
    tokens.requests        # every token request: (scope, user)
    tokens.stop()

Anonymous requests get `pull`; users named in `users` (Basic auth) get `pull,push`; wrong
credentials get 401, as a real token server answers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.certs import self_signed_rsa

__all__ = ["TokenAuth", "TokenRequest", "TokenServer"]

SERVICE = "imagegate-test-registry"


@dataclass(frozen=True)
class TokenAuth:
    """What the registry's `auth: token:` config needs."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class TokenRequest:
    scopes: tuple[str, ...]
    user: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenServer:
    """A token server on 127.0.0.1 (a thread of this process)."""

    directory: Path
    users: dict[str, str]
    issuer: str
    _key: rsa.RSAPrivateKey
    _cert_der: bytes
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[TokenRequest] = field(default_factory=list)

    @classmethod
    def start(
        cls, directory: Path, users: dict[str, str] | None = None, issuer: str = "imagegate-test"
    ) -> TokenServer:
        key, cert = self_signed_rsa(directory, issuer)
        server = cls(
            directory, dict(users or {}), issuer, key, cert.public_bytes(serialization.Encoding.DER)
        )
        server._serve()
        return server

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self, realm: str | None = None) -> TokenAuth:
        """The registry config for this server (`realm`: another URL in front of it)."""
        return TokenAuth(realm or self.realm, SERVICE, self.issuer, self.directory / "issuer.pem")

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- tokens ------------------------------------------------------------------------------

    def token(self, scopes: list[str], user: str, service: str) -> str:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3 or parts[0] != "repository":
                continue
            wanted = set(parts[-1].split(","))
            allowed = {"pull", "push"} if user else {"pull"}
            access.append(
                {"type": "repository", "name": ":".join(parts[1:-1]),
                 "actions": sorted(wanted & allowed)}
            )  # fmt: skip
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": user, "aud": service, "exp": now + 300,
            "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        signing_input = (
            _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        ).encode()
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + _b64(signature)

    def _serve(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = (
                        base64.b64decode(auth[6:]).decode("utf-8", "replace").partition(":")
                    )
                    if outer.users.get(name) != password or not name:
                        self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                        return
                    user = name
                scopes = query.get("scope", [])
                with outer._lock:
                    outer.requests.append(TokenRequest(tuple(scopes), user))
                service = query.get("service", [SERVICE])[0]
                token = outer.token(scopes, user, service)
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
