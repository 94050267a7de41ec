"""uvicorn running an app: in the foreground (``fastlic serve``) or on a thread of this
process, on a free loopback port (tests and benchmarks).

uvicorn's shutdown is the graceful drain: it stops accepting, lets the requests in
flight finish (up to ``drain_s``), then runs the app's lifespan shutdown, which
waits for the worker pool.
"""
from __future__ import annotations

import socket
import threading
import time

import uvicorn


def uvicorn_config(app, *, drain_s: float, max_connections: int | None,
                   log_level: str, **options) -> uvicorn.Config:
    return uvicorn.Config(app, lifespan="on", log_level=log_level,
                          timeout_graceful_shutdown=drain_s, limit_concurrency=max_connections,
                          **options)


class BackgroundServer:
    """``with BackgroundServer(app) as server:`` serves ``app`` at ``server.url``.

    stop() is the graceful shutdown (the drain), as on SIGTERM.
    """

    def __init__(self, app, *, drain_s: float = 30.0, max_connections: int | None = None,
                 log_level: str = "warning"):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(
            app, drain_s=drain_s, max_connections=max_connections, log_level=log_level))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        name="fastlic-uvicorn", daemon=True)

    def start(self, timeout_s: float = 10.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def begin_stop(self) -> None:
        """Start the graceful shutdown and return at once."""
        self.server.should_exit = True

    def stop(self, timeout_s: float | None = 60.0) -> bool:
        """Shut down gracefully; True if the server thread ended within ``timeout_s``."""
        self.begin_stop()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
