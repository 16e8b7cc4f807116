"""Work handed to threads, with its errors brought back to the caller.

Two small shapes instead of concurrent.futures, which imports logging and
costs a short command (a 30 MB backup) about 5 ms of its start-up.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any, Callable


def yield_cpu() -> None:
    """Lower the calling thread's CPU priority: on two cores the application's commits come first."""
    with contextlib.suppress(AttributeError, OSError):  # per-thread niceness is Linux's
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class Task:
    """fn(*args) in a thread of its own, started now; result() waits for it."""

    def __init__(self, fn: Callable[..., Any], *args, nice: bool = False):
        self._result: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            if nice:
                yield_cpu()
            try:
                self._result = fn(*args)
            except BaseException as err:  # brought back to whoever waits for it
                self._error = err

        self._thread = threading.Thread(target=run, name=getattr(fn, "__name__", "task"),
                                        daemon=True)
        self._thread.start()

    def join(self) -> None:
        """Wait for it, leaving any error where it is."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class Lane:
    """One thread running the calls put to it, in order.

    put() waits while a call is already queued, so at most two are in flight
    (bounded memory); after a call fails the rest are skipped, and the error is
    raised by the next put() or by close().
    """

    def __init__(self) -> None:
        self._calls: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="lane", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            if self._error is None:
                try:
                    call[0](*call[1])
                except BaseException as err:
                    self._error = err

    def put(self, fn: Callable[..., Any], *args) -> None:
        self._raise()
        self._calls.put((fn, args))

    def close(self) -> None:
        """Wait for every call put; raise the first error."""
        self._finish()
        self._raise()

    def _finish(self) -> None:
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "Lane":
        return self

    def __exit__(self, kind, *exc) -> None:
        if kind is None:
            self.close()
        else:
            self._finish()  # the error already under way is the one to report
