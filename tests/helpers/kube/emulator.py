"""A Kubernetes API emulator for e2e tests: kmock's server plus the semantics kopf relies on.

kmock 0.8 gives the HTTP server, URL parsing, discovery documents and error rendering; this
subclass owns the object store: resourceVersion/uid/generation stamping, list kinds, label
selectors, PUT, merge and JSON patches, the status subresource, generateName, watch streams
that resume from a resourceVersion (410 when too old), finalizers, owner-reference garbage
collection, CRD registration on create, server-side Table printing for kubectl, and fault
injection (status codes before or after applying a write, slow responses, dropped watches).
It does not check RBAC, run admission webhooks, validate against CRD schemas, or run pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import itertools
import json
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
from kmock import KubernetesEmulator
from kmock._internal import parsing, references, rendering

from tests.helpers.kube import structural

Key = tuple[str, str, str]  # (group/version/plural, namespace or "", name)

BUILTINS: list[tuple[str, str, str, str, bool, set[str], list[str]]] = [
    # group, version, plural, kind, namespaced, subresources, short names
    ("", "v1", "pods", "Pod", True, {"status"}, ["po"]),
    ("", "v1", "services", "Service", True, {"status"}, ["svc"]),
    ("", "v1", "configmaps", "ConfigMap", True, set(), ["cm"]),
    ("", "v1", "secrets", "Secret", True, set(), []),
    ("", "v1", "events", "Event", True, set(), ["ev"]),
    ("", "v1", "namespaces", "Namespace", False, {"status"}, ["ns"]),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, set(), ["sa"]),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, {"status"}, ["pvc"]),
    ("events.k8s.io", "v1", "events", "Event", True, set(), ["ev"]),
    ("apps", "v1", "deployments", "Deployment", True, {"status", "scale"}, ["deploy"]),
    ("batch", "v1", "jobs", "Job", True, {"status"}, []),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, set(), []),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, set(), []),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, set(), []),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, set(), []),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        set(),
        [],
    ),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, set(), ["netpol"]),
    ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True, set(), []),
    ("monitoring.coreos.com", "v1", "podmonitors", "PodMonitor", True, set(), []),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        {"status"},
        ["crd", "crds"],
    ),
]
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
HISTORY = 20000  # watch events kept per resource; older resourceVersions get 410 Gone
# The real server's size limits (kube-apiserver and etcd defaults, from their documentation):
MAX_BODY = 3 * 1024 * 1024  # a write's request body (413 RequestEntityTooLarge)
MAX_STORED = 1536 * 1024  # an object as stored (etcd --max-request-bytes: 500, not 4xx)
MAX_DATA = 1024 * 1024  # a ConfigMap's data + binaryData, a Secret's data (422 Invalid)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
            "details": self.details,
        }


@dataclass
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: set[str]
    short_names: list[str] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    schema: dict[str, Any] | None = None  # a CRD version's openAPIV3Schema

    @property
    def gvp(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass
class Fault:
    """Answer matching requests with ``status`` (after applying the write if ``after_apply``)."""

    method: str
    plural: str
    status: int = 500
    times: int = 1
    subresource: str | None = None
    after_apply: bool = False
    delay_s: float = 0.0
    name: str | None = None
    hits: int = 0

    def matches(self, method: str, rt: ResourceType, name: str | None, sub: str | None) -> bool:
        return (
            self.times > 0
            and self.method == method
            and self.plural == rt.plural
            and (self.name is None or self.name == name)
            and (self.subresource == sub)
        )


_kmock_parse_path = parsing.parse_path
_NS_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespace prefix, not the resource."""
    m = _NS_PATH.match(path)
    if m:
        return parsing.ParsedPath("", "v1", "namespaces", None, m.group(1), None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path


@dataclass(frozen=True)
class Access:
    """Who asked for what, in RBAC terms: (user agent, API group, resource[/sub], verb)."""

    agent: str
    group: str
    resource: str
    verb: str

    @classmethod
    def of(cls, req: rendering.Request, rt: ResourceType, method: str) -> Access:
        watch = req.params.get("watch") in ("true", "1")
        verb = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
            method, "watch" if watch else "get" if req.name else "list"
        )
        res = rt.plural + (f"/{req.subresource}" if req.subresource else "")
        return cls(req.headers.get("User-Agent", ""), rt.group, res, verb)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are treated the same way)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def field_matches(selector: str, obj: dict[str, Any]) -> bool:
    """Field selectors (a.b=c, a.b==c, a.b!=c; comma = and) on the object's fields, e.g.
    Events' involvedObject.name / involvedObject.uid as `kubectl describe` asks for them."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        neg = "!=" in term
        k, v = re.split("!=|==?", term, maxsplit=1)
        node: Any = obj
        for part in k.strip().split("."):
            node = node.get(part) if isinstance(node, dict) else None
        got = "" if node is None else str(node)
        if (got == v.strip()) == neg:
            return False
    return True


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: a=b, a==b, a!=b, a, !a (comma = and)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in term:
            k, v = re.split("==?", term, maxsplit=1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def jsonpath(obj: Any, path: str) -> Any:
    """The dotted subset of JSONPath that printer columns use (``.status.phase``)."""
    for part in filter(None, path.strip().lstrip(".").split(".")):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _age(ts: str | None) -> str:
    if not ts:
        return "<unknown>"
    t = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    s = int((dt.datetime.now(dt.UTC) - t).total_seconds())
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


@attrs.define(eq=False)
class KubeEmulator(KubernetesEmulator):
    """The store and the verbs; discovery is kmock's, fed from the registered types."""

    types: dict[str, ResourceType] = attrs.field(factory=dict, init=False)
    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    history: dict[str, deque] = attrs.field(factory=dict, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    log: list[tuple[str, str, int]] = attrs.field(factory=list, init=False)
    access: list[Access] = attrs.field(factory=list, init=False)
    _rv: Any = attrs.field(factory=lambda: itertools.count(1000), init=False)
    _changed: asyncio.Condition | None = attrs.field(default=None, init=False)
    _watch_epoch: int = attrs.field(default=0, init=False)
    on_write: list[Callable[[str, dict[str, Any]], None]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for g, v, p, kind, ns, subs, short in BUILTINS:
            self.register(ResourceType(g, v, p, kind, ns, set(subs), short))
        for ns in ("default", "kube-system"):
            obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": ns,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": "1",
                    "creationTimestamp": _now(),
                    "generation": 1,
                },
            }
            self.store[("/v1/namespaces", "", ns)] = obj

    # ------------------------------------------------------------ registry
    def register(self, rt: ResourceType) -> None:
        self.types[rt.gvp] = rt
        self.history.setdefault(rt.gvp, deque(maxlen=HISTORY))
        info = self.resources[references.resource(rt.group, rt.version, rt.plural)]
        info.kind, info.namespaced, info.singular = rt.kind, rt.namespaced, rt.kind.lower()
        info.verbs = set(VERBS)
        info.shortnames = set(rt.short_names)
        info.subresources = set(rt.subresources)

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        for ver in spec.get("versions", []):
            subs = {"status"} if "status" in ver.get("subresources", {}) else set()
            self.register(
                ResourceType(
                    spec["group"],
                    ver["name"],
                    names["plural"],
                    names["kind"],
                    spec.get("scope", "Namespaced") == "Namespaced",
                    subs,
                    list(names.get("shortNames", [])),
                    list(ver.get("additionalPrinterColumns", [])),
                    (ver.get("schema") or {}).get("openAPIV3Schema"),
                )
            )

    def _discover(self, group: str, version: str) -> dict[str, Any]:
        """APIResourceList for one group version (subresources carry no short names)."""
        rts = [rt for rt in self.types.values() if rt.group == group and rt.version == version]
        if not rts and group:
            raise ApiError(404, "NotFound", f"the server could not find {group}/{version}")
        out = []
        for rt in rts:
            base = {"singularName": rt.kind.lower(), "namespaced": rt.namespaced, "kind": rt.kind}
            out.append({**base, "name": rt.plural, "verbs": VERBS, "shortNames": rt.short_names})
            out += [
                {
                    **base,
                    "name": f"{rt.plural}/{s}",
                    "singularName": "",
                    "verbs": ["get", "patch", "update"],
                }
                for s in sorted(rt.subresources)
            ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": out,
        }

    def _type(self, request: rendering.Request) -> ResourceType | None:
        r = request.resource
        if r is None or r.plural is None:
            return None
        return self.types.get(f"{r.group}/{r.version}/{r.plural}")

    # ------------------------------------------------------------ faults
    def inject(self, method: str, plural: str, status: int = 500, **kw: Any) -> Fault:
        f = Fault(method.upper(), plural, status, **kw)
        self.faults.append(f)
        return f

    def drop_watches(self) -> None:
        """End every open watch stream (as an apiserver restart or a proxy timeout would)."""
        self._watch_epoch += 1
        if self._changed is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------ serving
    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        rt = self._type(request)
        r = request.resource
        if rt is None and r is not None and r.version and not r.plural and request.method == "GET":
            return aiohttp.web.json_response(self._discover(r.group or "", r.version))
        is_put = str(request.method.value).upper() == "PUT"  # kmock 0.8 gives PUT no action
        if rt is None or (request.action is None and not (is_put and request.name)):
            return await super(KubernetesEmulator, self)._handle(request)  # discovery
        if self._changed is None:
            self._changed = asyncio.Condition()
        method = str(request.method.value).upper()
        self.access.append(Access.of(request, rt, method))
        fault = next(
            (f for f in self.faults if f.matches(method, rt, request.name, request.subresource)),
            None,
        )
        try:
            if fault is not None:
                fault.times -= 1
                fault.hits += 1
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.after_apply:
                    await self._serve(request, rt, method)
                if fault.status:
                    raise ApiError(
                        fault.status,
                        "InternalError" if fault.status >= 500 else "Conflict",
                        f"injected fault {fault.status}",
                    )
            resp = await self._serve(request, rt, method)
            self.log.append((method, str(request.url.path), resp.status))
            return resp
        except ApiError as e:
            self.log.append((method, str(request.url.path), e.code))
            return aiohttp.web.json_response(e.body(), status=e.code)

    async def _serve(self, req: rendering.Request, rt: ResourceType, method: str):
        ns = req.namespace or ""
        if req.body and len(req.body) > MAX_BODY:
            raise ApiError(
                413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}"
            )
        if req.body and req.data is None:
            try:
                req = attrs.evolve(req, data=json.loads(req.body))
            except ValueError as e:
                ctype = req.headers.get("Content-Type")
                raise ApiError(
                    415, "UnsupportedMediaType", f"only JSON bodies are served, got {ctype}"
                ) from e
        sub = req.subresource
        if method == "GET" and req.params.get("watch") in ("true", "1"):
            return await self._watch(req, rt, ns)
        if method == "GET" and req.name is None:
            items = self._select(rt, ns, req.params.get("labelSelector", ""))
            items = [o for o in items if field_matches(req.params.get("fieldSelector", ""), o)]
            rv = str(self._current_rv())
            if "as=Table" in req.headers.get("Accept", ""):
                return aiohttp.web.json_response(self._table(rt, items, rv))
            return aiohttp.web.json_response(
                {
                    "apiVersion": rt.api_version,
                    "kind": f"{rt.kind}List",
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }
            )
        if method == "POST" and req.name is None:
            return aiohttp.web.json_response(await self._create(rt, ns, req.data), status=201)
        if req.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        key = (rt.gvp, ns, req.name)
        if method == "GET":
            obj = self._get(rt, key)
            if "as=Table" in req.headers.get("Accept", ""):
                return aiohttp.web.json_response(
                    self._table(rt, [obj], obj["metadata"]["resourceVersion"])
                )
            return aiohttp.web.json_response(obj)
        if method in ("PATCH", "PUT"):
            ctype = req.headers.get("Content-Type", "")
            return aiohttp.web.json_response(
                await self._update(rt, key, method, ctype, req.data, sub)
            )
        if method == "DELETE":
            return aiohttp.web.json_response(await self._delete(rt, key))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    # ------------------------------------------------------------ verbs
    def _current_rv(self) -> int:
        return max(
            (int(o["metadata"]["resourceVersion"]) for o in self.store.values()), default=999
        )

    def _select(self, rt: ResourceType, ns: str, selector: str) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (gvp, ons, _), o in sorted(self.store.items())
            if gvp == rt.gvp
            and (not ns or ons == ns)
            and selector_matches(selector, o["metadata"].get("labels") or {})
        ]

    def _get(self, rt: ResourceType, key: Key) -> dict[str, Any]:
        obj = self.store.get(key)
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.plural}.{rt.group or "core"} "{key[2]}" not found',
                name=key[2],
                group=rt.group,
                kind=rt.plural,
            )
        return copy.deepcopy(obj)

    async def _emit(self, rt: ResourceType, kind: str, obj: dict[str, Any]) -> None:
        self.history[rt.gvp].append(
            (int(obj["metadata"]["resourceVersion"]), kind, copy.deepcopy(obj))
        )
        for hook in self.on_write:
            hook(kind, obj)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    def _stamp(self, obj: dict[str, Any]) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))

    def _admit(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        old: dict[str, Any] | None = None,
        sub: str | None = None,
    ) -> dict[str, Any]:
        """What the real server does before storing: a custom resource pruned, defaulted
        and validated against its CRD schema (on /status the status only; on an update,
        unchanged fields ratchet); size limits on every object."""
        name = obj["metadata"].get("name", "")
        if rt.schema is not None:
            obj, errs = structural.admit(obj, rt.schema, old, status_only=sub == "status")
            if errs:
                what = errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rt.kind}.{rt.group} "{name}" is invalid: {what}',
                    name=name,
                    group=rt.group,
                    kind=rt.kind,
                    causes=[{"message": e, "field": e.split(":", 1)[0]} for e in errs],
                )
        if rt.plural in ("configmaps", "secrets"):
            size = sum(
                len(k.encode()) + len(str(v).encode())
                for part in ("data", "binaryData")
                for k, v in (obj.get(part) or {}).items()
            )
            if size > MAX_DATA:
                raise ApiError(
                    422,
                    "Invalid",
                    f'{rt.kind} "{name}" is invalid: []: Too long: must have at most '
                    f"{MAX_DATA} bytes",
                    name=name,
                    kind=rt.plural,
                )
        if len(json.dumps(obj)) > MAX_STORED:
            raise ApiError(500, "InternalError", "etcdserver: request is too large")
        return obj

    async def _create(
        self, rt: ResourceType, ns: str, body: Any, admit: bool = True
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(415, "UnsupportedMediaType", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise ApiError(422, "Invalid", f"{rt.kind}: metadata.name: Required value")
        if rt.namespaced:
            if meta.get("namespace") not in (None, ns):
                raise ApiError(
                    400, "BadRequest", "the namespace of the object does not match the URL"
                )
            meta["namespace"] = ns
        key = (rt.gvp, ns if rt.namespaced else "", meta["name"])
        if key in self.store:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.plural} "{meta["name"]}" already exists',
                name=meta["name"],
                kind=rt.plural,
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        meta.pop("resourceVersion", None)
        if "status" in rt.subresources and rt.group not in ("", "apps", "batch"):
            obj.pop("status", None)
        if admit:
            obj = self._admit(rt, obj)
        self._stamp(obj)
        self.store[key] = obj
        if rt.plural == "customresourcedefinitions":
            self._register_crd(obj)
        await self._emit(rt, "ADDED", obj)
        return copy.deepcopy(obj)

    async def _update(
        self, rt: ResourceType, key: Key, method: str, ctype: str, body: Any, sub: str | None
    ) -> dict[str, Any]:
        old = self._get(rt, key)
        if method == "PUT":
            new = copy.deepcopy(body)
        elif "json-patch" in ctype:
            try:
                new = jsonpatch.apply_patch(old, body)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {e}") from e
        else:
            new = merge_patch(old, body)
        want_rv = (new.get("metadata") or {}).get("resourceVersion")
        if (
            want_rv
            and want_rv != old["metadata"]["resourceVersion"]
            and (
                method == "PUT"
                or (isinstance(body, dict) and body.get("metadata", {}).get("resourceVersion"))
            )
        ):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural} "{key[2]}": '
                "the object has been modified; please apply your changes to the latest version",
            )
        has_status = "status" in rt.subresources
        if sub == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            new = merged
        elif sub is not None:
            raise ApiError(404, "NotFound", f"subresource {sub} is not supported here")
        elif has_status:
            new["status"] = old.get("status")
            if new["status"] is None:
                new.pop("status")
        meta = new.setdefault("metadata", {})
        for k in (
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
            "deletionTimestamp",
        ):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        body_of = lambda o: {k: v for k, v in o.items() if k not in ("metadata", "status")}  # noqa: E731
        if body_of(new) != body_of(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new = self._admit(rt, new, old, sub)
        if new == old:
            return old  # a no-op write does not bump the resourceVersion
        self._stamp(new)
        self.store[key] = new
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            await self._remove(rt, key)
        else:
            await self._emit(rt, "MODIFIED", new)
        return copy.deepcopy(new)

    async def _delete(self, rt: ResourceType, key: Key) -> dict[str, Any]:
        obj = self._get(rt, key)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                self._stamp(obj)
                self.store[key] = obj
                await self._emit(rt, "MODIFIED", obj)
            return copy.deepcopy(obj)
        await self._remove(rt, key)
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Success",
            "details": {"name": key[2]},
        }

    async def _remove(self, rt: ResourceType, key: Key) -> None:
        obj = self.store.pop(key)
        self._stamp(obj)
        await self._emit(rt, "DELETED", obj)
        uid = obj["metadata"]["uid"]
        for okey, dep in list(self.store.items()):  # garbage-collect the dependents
            refs = dep["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs) and okey in self.store:
                await self._delete(self.types[okey[0]], okey)

    # ------------------------------------------------------------ watch
    async def _watch(self, req: rendering.Request, rt: ResourceType, ns: str):
        raw = req._raw_request
        assert raw is not None
        selector = req.params.get("labelSelector", "")
        since = int(req.params.get("resourceVersion") or 0)
        timeout = float(req.params.get("timeoutSeconds") or 0) or None
        hist = self.history[rt.gvp]
        if since and hist and since < hist[0][0] - 1 and len(hist) == hist.maxlen:
            raise ApiError(410, "Expired", f"too old resource version: {since}")
        resp = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(raw)
        epoch = self._watch_epoch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None

        def wanted(o: dict[str, Any]) -> bool:
            m = o["metadata"]
            return (
                (not ns or m.get("namespace") == ns)
                and (req.name is None or m.get("name") == req.name)
                and selector_matches(selector, m.get("labels") or {})
            )

        if not since:  # no resourceVersion: start with the current state
            for o in self._select(rt, ns, selector):
                if req.name is None or o["metadata"]["name"] == req.name:
                    await resp.write(json.dumps({"type": "ADDED", "object": o}).encode() + b"\n")
            since = self._current_rv()
        assert self._changed is not None
        try:
            # ends on drop_watches() or when the client went away (kill -9 sends no FIN we see
            # until we write, and an idle watch writes nothing)
            while self._watch_epoch == epoch and not (
                raw.transport is None or raw.transport.is_closing()
            ):
                for rv, kind, o in [e for e in hist if e[0] > since]:
                    since = rv
                    if wanted(o):
                        await resp.write(json.dumps({"type": kind, "object": o}).encode() + b"\n")
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), timeout=min(left or 5, 5))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    # ------------------------------------------------------------ kubectl tables
    def _table(self, rt: ResourceType, items: list[dict[str, Any]], rv: str) -> dict[str, Any]:
        cols = [
            {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}
        ]
        cols += [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": "",
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in rt.columns
        ]
        has_age = any(c["jsonPath"] == ".metadata.creationTimestamp" for c in rt.columns)
        if not has_age:
            cols.append(
                {"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}
            )
        rows = []
        for o in items:
            cells: list[Any] = [o["metadata"]["name"]]
            for c in rt.columns:
                v = jsonpath(o, c["jsonPath"])
                cells.append(_age(v) if c.get("type") == "date" else v)
            if not has_age:
                cells.append(_age(o["metadata"].get("creationTimestamp")))
            rows.append(
                {
                    "cells": cells,
                    "object": {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    },
                }
            )
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": cols,
            "rows": rows,
        }
