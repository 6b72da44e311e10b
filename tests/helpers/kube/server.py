"""Run the API emulator on its own event loop thread and write a kubeconfig for clients."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import yaml
from kmock import Server

from tests.helpers.kube.emulator import MAX_BODY, Fault, KubeEmulator, ResourceType


class LargeBodyServer(aiohttp.test_utils.RawTestServer):
    """aiohttp refuses bodies over 1 MiB by default; kube-apiserver takes up to 3 MiB
    (the emulator answers 413 above that itself, as the real server words it)."""

    async def _make_runner(self, debug: bool = True, **kwargs: Any) -> aiohttp.web.ServerRunner:
        srv = aiohttp.web.Server(self._handler, loop=self._loop, debug=debug, **kwargs)

        def request(message, payload, protocol, writer, task):  # aiohttp's factory signature
            return aiohttp.web.BaseRequest(
                message, payload, protocol, writer, task, srv._loop, client_max_size=MAX_BODY * 2
            )

        srv.request_factory = request
        return aiohttp.web.ServerRunner(srv, debug=debug, **kwargs)


class EmulatorServer:
    """``with EmulatorServer(tmp) as api:`` serves on 127.0.0.1; ``api.kubeconfig`` points at it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.emulator = KubeEmulator()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self.url = ""
        self.kubeconfig = workdir / "kubeconfig"

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _serve(self, ready: asyncio.Future) -> None:
        self._stop = asyncio.Event()
        async with self.emulator, Server(self.emulator, server_cls=LargeBodyServer) as srv:
            ready.set_result(str(srv.url).rstrip("/"))
            await self._stop.wait()

    def __enter__(self) -> EmulatorServer:
        self._thread.start()
        fut: asyncio.Future = asyncio.run_coroutine_threadsafe(self._started(), self.loop)
        self.url = fut.result(30)
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(self.url)))
        return self

    async def _started(self) -> str:
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._serve(ready))
        return await ready

    def __exit__(self, *exc: Any) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self.emulator.drop_watches()  # open watch streams would hold the shutdown
            self._stop.set()
            await self._task

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # ------------------------------------------------- synchronous helpers for tests
    def _rt(self, plural: str, group: str = "") -> ResourceType:
        for rt in self.emulator.types.values():
            if rt.plural == plural and (not group or rt.group == group):
                return rt
        raise KeyError(plural)

    def create(self, obj: dict[str, Any], plural: str, *, admit: bool = True) -> dict[str, Any]:
        """Create as a client would. ``admit=False``: store it without the server's schema
        and size checks, as an object written under an older, looser CRD version stays
        (the server does not re-validate stored objects when a CRD changes)."""
        ns = obj.get("metadata", {}).get("namespace", "")
        group = obj["apiVersion"].rpartition("/")[0]
        return self.call(self.emulator._create(self._rt(plural, group), ns, obj, admit))

    def get(self, plural: str, namespace: str, name: str, group: str = "") -> dict[str, Any] | None:
        rt = self._rt(plural, group)
        obj = self.emulator.store.get((rt.gvp, namespace if rt.namespaced else "", name))
        return None if obj is None else copy.deepcopy(obj)

    def list(self, plural: str, namespace: str = "", group: str = "") -> list[dict[str, Any]]:
        rt = self._rt(plural, group)
        return self.call(self._list(rt, namespace))

    async def _list(self, rt: ResourceType, ns: str) -> list[dict[str, Any]]:
        return self.emulator._select(rt, ns, "")

    def patch(
        self,
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        *,
        status: bool = False,
        group: str = "",
    ) -> dict[str, Any]:
        rt = self._rt(plural, group)
        key = (rt.gvp, namespace if rt.namespaced else "", name)
        return self.call(
            self.emulator._update(
                rt, key, "PATCH", "application/merge-patch+json", body, "status" if status else None
            )
        )

    def delete(self, plural: str, namespace: str, name: str, group: str = "") -> None:
        rt = self._rt(plural, group)
        self.call(self.emulator._delete(rt, (rt.gvp, namespace if rt.namespaced else "", name)))

    def inject(self, method: str, plural: str, status: int = 500, **kw: Any) -> Fault:
        return self.emulator.inject(method, plural, status, **kw)

    def drop_watches(self) -> None:
        async def drop() -> None:
            self.emulator.drop_watches()

        self.call(drop())


def kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"},
            }
        ],
    }
