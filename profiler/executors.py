"""Where many independent evaluations run: local processes, this process, or a Dask cluster.

Characterization probes (:mod:`boosting.characterization`) and profiler campaigns submit
independent tasks to a :class:`concurrent.futures.Executor`. :func:`resolve_executor` turns the
``--executor`` spelling of the commands (or a Python object) into one:

* ``None`` or ``"local"``: a ``ProcessPoolExecutor(max_workers=workers)`` with the ``spawn``
  start method (forking a process whose torch thread pools run can deadlock), or
  :class:`SerialExecutor` when ``workers == 0``;
* ``"serial"``: :class:`SerialExecutor` (every task at submission, in the calling thread);
* ``"dask://HOST:PORT"``: a :class:`DaskExecutor` on a new ``distributed.Client`` connected to
  the scheduler ``tcp://HOST:PORT`` (started with ``dask scheduler``; workers with ``dask worker
  tcp://HOST:PORT``); needs the ``cluster`` extra (``pip install .[cluster]``);
* an ``Executor`` instance: used as given (the caller keeps it);
* a ``distributed.Client`` instance: wrapped in a :class:`DaskExecutor` (the client stays open).

The cluster executor
--------------------
:class:`DaskExecutor` submits each task with ``client.submit(fn, *args, pure=False)``. An
argument whose pickle is at least ``scatter_min_bytes`` (64 KiB by default: a workload's network
and data) is scattered to every worker once (``client.scatter(..., broadcast=True)``) and then
passed to tasks as that remote value; the executor remembers it by object identity, so a shared
argument must not change while it is in use, or :meth:`DaskExecutor.forget` must be called after
changing it (the characterization's retraining hook does). Small arguments travel with each task.
A scattered value is one object in each worker process, seen by every task of that worker (and
by all its threads at once with ``--nthreads`` > 1): a task must not change it. The
characterization's tasks evaluate a private copy of the network for that reason
(``boosting.characterization._run_shared``).

A worker that dies (its process killed, its machine lost) has the tasks it was running or holding
rescheduled by the Dask scheduler on the remaining workers; the scattered values have replicas on
every worker, so a new or surviving worker gets them from a peer. A task is given up (its future
raises ``distributed.KilledWorker``) once it was on ``distributed.scheduler.allowed-failures``
workers that died (Dask's default: 3). ``retries`` re-runs a task that *raised* (off by default:
the tasks of this toolkit are deterministic, so an exception would repeat).
"""

from __future__ import annotations

import multiprocessing
import pickle
import re
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable, Optional

__all__ = [
    "ExecutorError",
    "EXECUTOR_KINDS",
    "CLUSTER_HINT",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SCATTER_MIN_BYTES",
    "SerialExecutor",
    "DaskExecutor",
    "check_executor_spec",
    "resolve_executor",
    "forget_shared",
]

EXECUTOR_KINDS = ("local", "serial", "dask://HOST:PORT")
"""The spellings of ``--executor``."""

CLUSTER_HINT = "the dask executor needs dask[distributed]: pip install .[cluster]"
"""The one-line error of ``dask://`` without Dask installed."""

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""How long :func:`resolve_executor` waits for a Dask scheduler, in seconds."""

DEFAULT_SCATTER_MIN_BYTES = 64 * 1024
"""Arguments whose pickle is at least this size are scattered once instead of sent per task."""

_DASK_URL = re.compile(r"^dask://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})/?$")


class ExecutorError(ValueError):
    """A bad executor spelling, a missing optional dependency, or an unreachable scheduler (one line)."""


# ------------------------------------------------------------------------- serial
class SerialExecutor(Executor):
    """An executor running each task at submission, in the calling thread.

    Attributes
    ----------
    submitted : int
        Tasks submitted so far.
    """

    def __init__(self) -> None:
        self.submitted = 0
        self._shutdown = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` now; return a finished future with its result or exception."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            self.submitted += 1
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future, like other executors
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse further tasks."""
        with self._lock:
            self._shutdown = True


# --------------------------------------------------------------------------- dask
def _import_distributed() -> Any:
    """The ``distributed`` module, or a one-line :class:`ExecutorError` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise ExecutorError(CLUSTER_HINT) from None
    return distributed


def _pickled_size_bytes(obj: Any) -> int:
    """Size of ``obj``'s pickle in bytes (protocol 5, out-of-band buffers counted); -1 if it cannot be pickled."""
    buffers: list[Any] = []
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except Exception:  # noqa: BLE001 - unpicklable here: let Dask's own serializer (cloudpickle) try
        return -1
    return len(data) + sum(memoryview(b.raw()).nbytes for b in buffers)


_SMALL_TYPES = (type(None), bool, int, float, complex, str, bytes)


class DaskExecutor(Executor):
    """A :class:`concurrent.futures.Executor` on a ``distributed.Client``; large arguments scattered once.

    Parameters
    ----------
    client : distributed.Client
        A connected client.
    retries : int
        Times a task that raised is re-run (Dask's ``retries=``; a task whose worker died is
        rescheduled anyway, see the module docstring).
    scatter_min_bytes : int
        Arguments (positional or keyword) whose pickle is at least this size are scattered to all
        workers once and reused by identity; 0 scatters every argument that is not a plain
        scalar or string.
    close_client : bool
        Close the client on :meth:`shutdown` (True when :func:`resolve_executor` made it).

    Attributes
    ----------
    submitted : int
        Tasks submitted so far.
    scattered : int
        Values scattered so far (one per shared object, again after :meth:`forget`).
    """

    def __init__(self, client: Any, *, retries: int = 0, scatter_min_bytes: int = DEFAULT_SCATTER_MIN_BYTES,
                 close_client: bool = False) -> None:
        if not (isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0):
            raise ExecutorError(f"retries must be an integer >= 0, got {retries!r}")
        if not (isinstance(scatter_min_bytes, int) and scatter_min_bytes >= 0):
            raise ExecutorError(f"scatter_min_bytes must be an integer >= 0, got {scatter_min_bytes!r}")
        self.client = client
        self.retries = retries
        self.scatter_min_bytes = scatter_min_bytes
        self.close_client = close_client
        self.submitted = 0
        self.scattered = 0
        self._shared: dict[int, tuple[Any, Any]] = {}  # id(obj) -> (obj, remote future); obj kept so ids stay unique
        self._small: dict[int, Any] = {}  # id(obj) -> obj known to be below the threshold
        self._pending: set[Any] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return str(self.client.scheduler.address)

    def _remote(self, obj: Any) -> Any:
        """``obj`` itself (sent with the task) or the future of its scattered copy."""
        if isinstance(obj, _SMALL_TYPES):
            return obj
        key = id(obj)
        hit = self._shared.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        small = self._small.get(key)
        if small is not None and small is obj:
            return obj
        size = _pickled_size_bytes(obj)
        if 0 <= size < self.scatter_min_bytes:
            if len(self._small) > 4096:
                self._small.clear()
            self._small[key] = obj
            return obj
        # [obj]: scatter would split a bare list or dict into one value per item
        (future,) = self.client.scatter([obj], broadcast=True, hash=False)
        self._shared[key] = (obj, future)
        self.scattered += 1
        return future

    def forget(self, obj: Any) -> bool:
        """Drop the scattered copy of ``obj`` (after changing it); the next task scatters it again.

        Returns
        -------
        bool
            Whether ``obj`` had been scattered.
        """
        with self._lock:
            self._small.pop(id(obj), None)
            hit = self._shared.get(id(obj))
            if hit is None or hit[0] is not obj:
                return False
            del self._shared[id(obj)]
        hit[1].release()
        return True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the cluster; a :class:`concurrent.futures.Future` of its result."""
        return self._submit(fn, args, kwargs, None)

    def submit_on(self, resources: Optional[dict[str, float]], fn: Callable[..., Any], /, *args: Any,
                  **kwargs: Any) -> Future:
        """Like :meth:`submit`, on a worker that offers ``resources`` (Dask worker resources).

        A worker started with ``dask worker ... --resources "NAME=1"`` runs at most one task
        needing ``{"NAME": 1}`` at a time, and no other worker runs it: the way a bench (a tester
        wired to one machine) is pinned to its worker. A task whose resources no worker offers
        waits until one joins (:meth:`missing_resources` checks first).

        Parameters
        ----------
        resources : dict of str to float, optional
            ``{name: amount}``; None or empty: any worker.
        fn, *args, **kwargs
            As in :meth:`submit`.
        """
        return self._submit(fn, args, kwargs, dict(resources) if resources else None)

    def worker_resources(self) -> dict[str, dict[str, float]]:
        """The resources each connected worker offers: ``{worker address: {name: amount}}``."""
        workers = self.client.scheduler_info().get("workers", {})
        return {addr: dict(info.get("resources") or {}) for addr, info in workers.items()}

    def missing_resources(self, wanted: dict[str, float]) -> list[str]:
        """Names of ``wanted`` that no connected worker offers in the amount asked (sorted)."""
        offered = self.worker_resources().values()
        return sorted(name for name, amount in wanted.items()
                      if not any(float(r.get(name, 0)) >= float(amount) for r in offered))

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                resources: Optional[dict[str, float]]) -> Future:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            remote_args = [self._remote(a) for a in args]
            remote_kwargs = {k: self._remote(v) for k, v in kwargs.items()}
            self.submitted += 1
            task = self.client.submit(_call, fn, remote_args, remote_kwargs, pure=False, retries=self.retries,
                                      resources=resources)
            self._pending.add(task)
        out: Future = Future()
        out.set_running_or_notify_cancel()

        def done(task_future: Any) -> None:
            with self._lock:
                self._pending.discard(task_future)
            try:
                if task_future.status == "cancelled":
                    out.set_exception(RuntimeError("the task was cancelled (the executor shut down)"))
                else:
                    out.set_result(task_future.result())
            except BaseException as exc:  # noqa: BLE001 - delivered through the future
                out.set_exception(exc)

        task.add_done_callback(done)
        return out

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse further tasks; wait for (or cancel) the submitted ones; release the scattered values."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            pending = list(self._pending)
            shared = [f for _, f in self._shared.values()]
            self._shared.clear()
            self._small.clear()
        if pending:
            if cancel_futures or not wait:
                self.client.cancel(pending)
            else:
                _import_distributed().wait(pending)
        for f in shared:
            f.release()
        if self.close_client:
            self.client.close()


def _call(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The task a :class:`DaskExecutor` runs (Dask has already replaced scattered futures by their values)."""
    return fn(*args, **kwargs)


def forget_shared(executor: Executor, obj: Any) -> None:
    """Tell ``executor`` that ``obj`` changed: a :class:`DaskExecutor` drops its scattered copy; others ignore it."""
    forget = getattr(executor, "forget", None)
    if callable(forget):
        forget(obj)


# -------------------------------------------------------------------------- specs
def check_executor_spec(spec: Any) -> Optional[str]:
    """Validate an executor spelling without connecting; the scheduler address (``tcp://...``) of a ``dask://``.

    Parameters
    ----------
    spec : str or None
        ``None``, ``"local"``, ``"serial"`` or ``"dask://HOST:PORT"``.

    Returns
    -------
    str or None
        ``tcp://HOST:PORT`` for a Dask spec, else None.

    Raises
    ------
    ExecutorError
        An unknown spelling, a malformed ``dask://`` address.
    """
    if spec is None or spec in ("local", "serial"):
        return None
    if not isinstance(spec, str):
        raise ExecutorError(f"an executor must be a string, an Executor or a distributed.Client, got "
                            f"{type(spec).__name__}")
    if spec.startswith("dask://"):
        m = _DASK_URL.match(spec)
        if m is None:
            raise ExecutorError(f"bad dask executor {spec!r}: expected dask://HOST:PORT")
        port = int(m.group("port"))
        if not 1 <= port <= 65535:
            raise ExecutorError(f"bad dask executor {spec!r}: port {port} is not in 1..65535")
        return f"tcp://{m.group('host')}:{port}"
    raise ExecutorError(f"unknown executor {spec!r} ({', '.join(EXECUTOR_KINDS)})")


def _is_client(obj: Any) -> bool:
    """Whether ``obj`` is a ``distributed.Client`` (without importing Dask when it is not loaded)."""
    import sys

    distributed = sys.modules.get("distributed")
    return distributed is not None and isinstance(obj, distributed.Client)


def resolve_executor(spec: Any, *, workers: int = 2, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                     retries: int = 0, scatter_min_bytes: int = DEFAULT_SCATTER_MIN_BYTES,
                     initializer: Optional[Callable[[], Any]] = None) -> tuple[Executor, bool]:
    """The executor an ``--executor`` spelling or a Python object names, and whether the caller owns it.

    Parameters
    ----------
    spec : None, str, Executor or distributed.Client
        ``None``/``"local"``, ``"serial"``, ``"dask://HOST:PORT"``, an executor (used as is) or a
        client (wrapped in a :class:`DaskExecutor`; the client stays open).
    workers : int
        Processes of the local executor (0: :class:`SerialExecutor`); ignored otherwise.
    connect_timeout_s : float
        How long to wait for a ``dask://`` scheduler, in seconds.
    retries : int
        Re-runs of a task that raised, for the Dask executor.
    scatter_min_bytes : int
        Threshold of :class:`DaskExecutor`'s scattering.
    initializer : callable, optional
        Called at the start of every local worker process (``ProcessPoolExecutor(initializer=)``);
        ignored by the other executors.

    Returns
    -------
    executor : concurrent.futures.Executor
    owned : bool
        True when the caller must ``shutdown()`` the executor (everything made here, a client's
        wrapper included); False for an executor given as is.

    Raises
    ------
    ExecutorError
        A bad spelling or ``workers``, Dask missing for ``dask://``, an unreachable scheduler.
    """
    if isinstance(spec, Executor):
        return spec, False
    if _is_client(spec):
        return DaskExecutor(spec, retries=retries, scatter_min_bytes=scatter_min_bytes), True
    address = check_executor_spec(spec)
    if spec is None or spec == "local":
        if not (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0):
            raise ExecutorError(f"workers must be an integer >= 0, got {workers!r}")
        if workers == 0:
            return SerialExecutor(), True
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=initializer), True
    if spec == "serial":
        return SerialExecutor(), True
    if not (isinstance(connect_timeout_s, (int, float)) and connect_timeout_s > 0):
        raise ExecutorError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
    distributed = _import_distributed()
    try:
        client = distributed.Client(address, timeout=float(connect_timeout_s), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(f"cannot reach the dask scheduler at {address} within {connect_timeout_s:g} s "
                            f"({type(exc).__name__})") from None
    return DaskExecutor(client, retries=retries, scatter_min_bytes=scatter_min_bytes, close_client=True), True
