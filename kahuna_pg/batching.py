"""Group concurrent calls that share a key, so that one caller runs them all at once.

The first caller for a key becomes the leader: it takes every call queued for that key at
that moment, runs them as one batch, and hands each waiting caller its own answer. Calls
that arrive meanwhile queue up; when the leader is done, the oldest of them leads the next
batch. A lone call leads at once and runs alone: there is no timer and no added wait, so
batches form only when calls really overlap (the way PostgreSQL's group commit works).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
Req = TypeVar("Req")
Res = TypeVar("Res")


class _Waiter(Generic[Req, Res]):
    """One queued call. Its thread blocks on `_wake`, a lock held from the start and released
    once, when the call is answered or asked to lead: a bare lock costs one wake-up, where an
    Event would add a Condition and a second lock for every call."""

    __slots__ = ("_wake", "answered", "error", "request", "result")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.answered = False
        self.result: Res | None = None
        self.error: BaseException | None = None
        self._wake = threading.Lock()
        self._wake.acquire()

    def wait(self) -> None:
        self._wake.acquire()

    def wake(self) -> None:
        self._wake.release()


class Coalescer(Generic[K, Req, Res]):
    """Runs `run_batch(key, requests)` for groups of concurrent `submit(key, request)` calls.

    `run_batch` must answer one result per request, in order. If it raises, every caller of
    that batch gets the exception.
    """

    def __init__(self, run_batch: Callable[[K, list[Req]], list[Res]], max_batch: int = 1000) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queues: dict[K, list[_Waiter[Req, Res]]] = {}
        self._leading: set[K] = set()  # keys whose batch is running now

    def submit(self, key: K, request: Req) -> Res:
        me: _Waiter[Req, Res] = _Waiter(request)
        with self._lock:
            self._queues.setdefault(key, []).append(me)
            lead = key not in self._leading
            if lead:
                self._leading.add(key)
        if not lead:
            me.wait()
            lead = not me.answered  # woken to lead the next batch instead
        if lead:
            self._lead(key)
        if me.error is not None:
            raise me.error
        return me.result  # type: ignore[return-value]

    def waiting(self, key: K) -> int:
        """How many calls for `key` wait for a batch now, not counting the one running (for monitoring and tests)."""
        with self._lock:
            return len(self._queues.get(key, ()))

    def _lead(self, key: K) -> None:
        with self._lock:
            queue = self._queues[key]
            batch, self._queues[key] = queue[: self._max_batch], queue[self._max_batch :]
        try:
            results = self._run_batch(key, [w.request for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} answered {len(results)} results")
        except BaseException as exc:  # every caller of the batch must hear of it
            for waiter in batch:
                waiter.error = exc
        else:
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        for waiter in batch:
            waiter.answered = True
            waiter.wake()
        with self._lock:
            rest = self._queues[key]
            if rest:
                rest[0].wake()  # the oldest waiter leads the next batch
            else:
                del self._queues[key]
                self._leading.discard(key)
