"""Waitress running the REST app in background threads, with a graceful stop.

waitress's own `serve()` blocks the main thread and has no graceful stop, so `RestServer`
runs waitress's socket loop itself, one poll at a time, in a thread of its own. `stop(grace)`
asks that thread to close the listening sockets (new connections are refused), close idle
keep-alive connections, wait for the requests in flight to be answered, then end; past the
grace period whatever is left is closed. Every object of waitress's socket map is touched
only from the loop thread, as waitress requires.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

log = logging.getLogger(__name__)

# waitress buffers a whole body before the app sees it; its limit only bounds that buffer.
# The app's own limit (rest.BodyLimit, 64 KiB by default) is the one users meet.
WAITRESS_BODY_FLOOR = 1024 * 1024


class _AtMostEvery(logging.Filter):
    """Lets one record through per `interval` seconds, dropping the others."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


# waitress logs "Task queue depth is N" at WARNING for every request that arrives while all
# its threads are busy: under load, thousands of lines a second, each formatted and written
# under the logging lock by the thread that reads every socket. One a minute says the same.
_QUEUE_WARNINGS = _AtMostEvery(60.0)


class _JsonErrorTask(ErrorTask):
    """waitress's own error answers (malformed HTTP, a body over its buffer limit) as JSON."""

    def execute(self) -> None:
        error = self.request.error
        if error.code < 500:
            body = {"type": "InvalidInput", "error": f"{error.reason}: {error.body}"}
        else:
            body = {"type": "Error"}
        data = json.dumps(body).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(data)
        self.write(data)


class _JsonErrorChannel(HTTPChannel):
    error_task_class = _JsonErrorTask


def reuse_port_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT, so that worker processes share one port and the
    kernel spreads new connections among those that listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class RestServer:
    """The REST interface: `start()` binds and serves in the background, `stop(grace)` drains."""

    name = "REST"

    def __init__(
        self,
        app: Callable[..., Any],
        host: str,
        port: int,
        *,
        threads: int,
        max_body_bytes: int,
        reuse_port: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.reuse_port = reuse_port  # several worker processes listen on one port
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self._map: dict[int, Any] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None  # monotonic deadline, once stop() is called
        self.addresses: list[str] = []  # where it listens, as URLs, once started

    # -- Interface ---------------------------------------------------------------------
    def start(self) -> None:
        """Bind the listening socket(s) (OSError if taken) and serve in a background thread."""
        where: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.reuse_port:
            where = {"sockets": [reuse_port_socket(self.host, self.port, listen=True)]}
        self._server = waitress.create_server(
            self.app,
            map=self._map,
            **where,
            threads=self.threads,
            ident="kahuna-pg",
            max_request_body_size=max(WAITRESS_BODY_FLOOR, 4 * self.max_body_bytes),
            asyncore_use_poll=True,  # select() cannot watch descriptors above 1024
        )
        logging.getLogger("waitress.queue").addFilter(_QUEUE_WARNINGS)  # added once, however often
        for listener in self._listeners():
            listener.channel_class = _JsonErrorChannel
            host, port = str(listener.effective_host), listener.effective_port
            self.addresses.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
        self._thread = threading.Thread(target=self._loop, name="rest-loop", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, grace: float) -> None:
        """Refuse new connections, let requests in flight finish for up to `grace` seconds, then close."""
        if self._thread is None or self._stop_at is not None:
            return
        self._stop_at = time.monotonic() + grace
        self._wake()
        self._thread.join(grace + 5)
        remaining = max(0.5, self._stop_at - time.monotonic())
        # The loop is over: no new task can be queued. Workers finish what they run.
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=remaining)

    # -- the loop thread -----------------------------------------------------------------
    def _listeners(self) -> list[BaseWSGIServer]:
        return [d for d in list(self._map.values()) if isinstance(d, BaseWSGIServer)]

    def _wake(self) -> None:
        for obj in list(self._map.values()):
            if hasattr(obj, "pull_trigger") and not isinstance(obj, BaseWSGIServer):
                with contextlib.suppress(OSError):  # already closed: the loop is ending anyway
                    obj.pull_trigger()
                return

    def _loop(self) -> None:
        adj_timeout = self._server.adj.asyncore_loop_timeout
        listeners_closed = False
        while self._map:
            stopping = self._stop_at is not None
            wasyncore.loop(timeout=0.05 if stopping else adj_timeout, map=self._map, use_poll=True, count=1)
            if self._stop_at is None:
                continue
            if not listeners_closed:
                for listener in self._listeners():
                    # dispatcher.close, not listener.close, which would also close the trigger
                    wasyncore.dispatcher.close(listener)
                listeners_closed = True
            open_channels = 0
            for channel in list(self._map.values()):
                if not isinstance(channel, HTTPChannel):
                    continue
                open_channels += 1
                if not channel.requests and not channel.total_outbufs_len and channel.request is None:
                    channel.will_close = True  # idle keep-alive: closed at the next poll
            if open_channels == 0 or time.monotonic() >= self._stop_at:
                if open_channels:
                    log.warning("REST: closing %d connection(s) still busy after the grace period", open_channels)
                wasyncore.close_all(self._map, ignore_all=True)
