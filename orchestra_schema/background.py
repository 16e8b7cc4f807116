"""Work handed to threads, with its errors brought back to the caller; and child
programs that end with this process and see none of its secrets.

Two small shapes instead of concurrent.futures, which imports logging and
costs a short command (a 30 MB backup) about 5 ms of its start-up.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
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


# ---- child programs (pg_dump, pg_restore, copy workers): they end when this process does

# Where the app's settings put the database's address, password included.
ADDRESS_VARIABLES = ("ORCHESTRA_DB", "EFCORE_CONNECTION", "HANGFIRE_CONNECTION", "PGPASSWORD")
_PR_SET_PDEATHSIG = 1
_children: set = set()


def child_env(secrets=(), **extra: str) -> dict[str, str]:
    """This process's environment for a child, without the variables that hold an
    address or a password (a child's environment is readable in /proc/PID/environ)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ADDRESS_VARIABLES and not any(s and s in v for s in secrets)}
    env.update(extra)
    return env


def memory_file(name: str, text: str) -> int:
    """An anonymous 0600 file in memory holding text: no path on any file system, gone
    with the last descriptor, however the process ends. Its descriptor goes to a
    child through pass_fds, which opens it as /dev/fd/N."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    os.fchmod(fd, 0o600)  # memfd starts 0777, and libpq ignores a passfile others may read
    return fd


def fd_path(fd: int) -> str:
    return f"/dev/fd/{fd}"


def _die_with_parent():
    """preexec_fn: the kernel kills the child when this process dies, SIGKILL included."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # died before the prctl: no signal will come
            os._exit(1)
    return arm


def _on_sigterm(signum, frame) -> None:
    """Stop the children, then die of SIGTERM as before (exit status 143)."""
    for proc in list(_children):
        with contextlib.suppress(OSError):
            proc.terminate()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def child(args: list[str], **popen):
    """subprocess.Popen(args) that never outlives this process: killed by the kernel
    when this process dies (PR_SET_PDEATHSIG), terminated on SIGTERM, and killed when
    the block is left by an error (KeyboardInterrupt too)."""
    import subprocess
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main and previous in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    proc = subprocess.Popen(args, preexec_fn=_die_with_parent(), **popen)
    _children.add(proc)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(Exception):
            proc.communicate()
        _children.discard(proc)
        if main and not _children and previous in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_child(args: list[str], **popen):
    """Like subprocess.run(args, capture_output=True, text=True), through child()."""
    import subprocess
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    with child(args, stdin=subprocess.DEVNULL, text=True, **popen) as proc:
        out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
