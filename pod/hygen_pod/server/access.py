"""Who may call which route of the pod: one ASGI middleware in front of every route.

Three kinds of route, decided from the path alone and default-deny:

- **open**: the probes and Prometheus metrics (`/health`, `/ready`, `/ping`, `/metrics`);
- **operator**: dispatch and control (`/v1/offline/...`, `/control...`): the operator's
  bearer token, which the operator and its dispatcher Jobs hold (one Secret);
- **client**: everything else, vLLM's OpenAI routes and the Files/Batch API included: an
  API key (Bearer, as `vllm serve --api-key` takes it) when keys are configured. The key's
  id (a hash, never the key) is put in the request scope: files and batches belong to it.

With an admin port (`--admin-port`), the operator's routes are served there only and
everything else only on the main port (404 across), so a NetworkPolicy can let only the
operator and its dispatcher Jobs reach them.

It sits in front of vLLM's own routes too, so vLLM's `--api-key` middleware is not used:
`hygen-pod serve` takes those keys over (vLLM's would also demand an API key on the
operator's routes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

RouteKind = Literal["open", "operator", "client"]
OPEN_PATHS = frozenset({"/health", "/ready", "/ping", "/metrics"})
_OPERATOR = re.compile(r"^/+(control|v1/+offline)(/|$)", re.IGNORECASE)
OWNER_KEY = "hygen_owner"  # request.state attribute: the caller's key id ("" = no keys)

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]


def route_path(scope: Scope) -> str:
    """The path routing sees: without the app's root_path, as Starlette strips it."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def route_kind(path: str) -> RouteKind:
    if _OPERATOR.match(path):
        return "operator"
    if path in OPEN_PATHS:
        return "open"
    return "client"


def key_id(key: str) -> str:
    """A stable, non-secret name of an API key: what owns files and batches."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, given = value.decode("latin-1").partition(" ")
            return given.strip() if scheme.lower() == "bearer" and given.strip() else None
    return None


class ApiKeys:
    """The API keys a pod accepts; none = open OpenAI routes (the operator's stay closed)."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = [k for k in (k.strip() for k in keys) if k]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner_of(self, given: str | None) -> str | None:
        """The key id of ``given`` if it is one of the keys (constant time per key)."""
        if given is None:
            return None
        found = None
        for k in self._keys:
            if hmac.compare_digest(given.encode(), k.encode()):
                found = k
        return key_id(found) if found is not None else None


def read_key_file(path: str) -> list[str]:
    """Keys from a file (a mounted Secret): one per line; blank lines and # comments skipped."""
    with open(path, encoding="utf-8") as f:
        keys = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"--api-key-file {path} holds no key")
    return keys


class AccessMiddleware:
    """Refuses (401, OpenAI error shape) every request its route kind does not allow."""

    def __init__(
        self, app: ASGIApp, operator_token: str, keys: ApiKeys, admin_port: int | None = None
    ) -> None:
        self.app = app
        self.token = operator_token
        self.keys = keys
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        kind = route_kind(route_path(scope))
        if self.admin_port is not None and kind != "open":
            on_admin = (scope.get("server") or (None, None))[1] == self.admin_port
            if on_admin != (kind == "operator"):
                where = "the admin port" if kind == "operator" else "the main port"
                return await _refuse(scope, send, f"not found here: served on {where}", 404)
        if kind == "client" and scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)  # CORS preflight carries no key
        given = bearer(scope.get("headers") or ())
        if kind == "operator":
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(scope, send, "this route needs the operator's bearer token")
        elif kind == "client":
            if self.keys.enabled:
                owner = self.keys.owner_of(given)
                if owner is None:
                    return await _refuse(scope, send, "missing or wrong API key (Bearer)")
            else:
                owner = ""
            scope.setdefault("state", {})[OWNER_KEY] = owner
        return await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Any, message: str, status: int = 401) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message})
        return
    kind = "authentication_error" if status == 401 else "not_found_error"
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
