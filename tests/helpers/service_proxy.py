"""A Service stand-in: a TCP proxy on 127.0.0.1 that sends each new connection to the next
of a set of backends (round robin), as kube-proxy balances a Service's connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class ServiceProxy:
    def __init__(self, backends: Callable[[], list[int]]) -> None:
        """``backends()``: the ports of the ready pods now (asked per connection)."""
        self.backends = backends
        self.hits: dict[int, int] = {}
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._n = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            ports = self.backends()
            if not ports:
                conn.close()
                continue
            port = ports[self._n % len(ports)]
            self._n += 1
            self.hits[port] = self.hits.get(port, 0) + 1
            try:
                up = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
