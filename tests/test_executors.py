"""profiler.executors: executor spellings, one-line errors, and characterization on a Dask cluster.

The cluster tests run an in-process ``distributed.LocalCluster`` of two worker processes (one
thread each) and check that the results equal the serial executor's, that the workload is
serialized once rather than per task, and that a worker killed mid-run leaves the result whole.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import boosting.characterization as characterization
from boosting.characterization import NetworkWorkload, characterize_network, coarse_characterize
from boosting.inference import ErrorSpec
from errormodels.models import get_model
from profiler.executors import (
    CLUSTER_HINT,
    DaskExecutor,
    ExecutorError,
    SerialExecutor,
    check_executor_spec,
    resolve_executor,
)

SPEC = ErrorSpec(get_model("uniform", ber=1e-3), fmt="int8", seed=3)


# ------------------------------------------------------------------------ spellings
def test_local_and_serial_spellings() -> None:
    ex, owned = resolve_executor(None, workers=3)
    assert isinstance(ex, ProcessPoolExecutor) and owned and ex._max_workers == 3
    ex.shutdown()
    ex, _ = resolve_executor("local", workers=1, initializer=os.getpid)
    assert ex._initializer is os.getpid
    ex.shutdown()
    ex, owned = resolve_executor("local", workers=0)
    assert isinstance(ex, SerialExecutor) and owned
    ex, owned = resolve_executor("serial", workers=5)
    assert isinstance(ex, SerialExecutor) and owned
    with ThreadPoolExecutor(1) as pool:
        assert resolve_executor(pool) == (pool, False)
    assert check_executor_spec("dask://10.0.0.7:8786") == "tcp://10.0.0.7:8786"
    assert check_executor_spec("dask://sched-1.lab:8786/") == "tcp://sched-1.lab:8786"
    assert check_executor_spec("local") is None


def test_the_old_names_of_serial_executor_still_work() -> None:
    import boosting.characterize

    assert boosting.characterize.SerialExecutor is SerialExecutor is characterization.SerialExecutor
    assert issubclass(SerialExecutor, Executor)


@pytest.mark.parametrize("spec, message", [
    ("foo", "unknown executor 'foo' (local, serial, dask://HOST:PORT)"),
    ("dask://host", "bad dask executor 'dask://host': expected dask://HOST:PORT"),
    ("dask://:8786", "expected dask://HOST:PORT"),
    ("dask://h:99999", "port 99999 is not in 1..65535"),
    (42, "an executor must be a string, an Executor or a distributed.Client, got int"),
])
def test_bad_spellings_give_one_line(spec: Any, message: str) -> None:
    with pytest.raises(ExecutorError) as err:
        resolve_executor(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_bad_workers() -> None:
    with pytest.raises(ExecutorError, match="workers must be an integer >= 0, got -1"):
        resolve_executor("local", workers=-1)


def test_dask_missing_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ExecutorError) as err:
        resolve_executor("dask://127.0.0.1:8786")
    assert str(err.value) == CLUSTER_HINT and "pip install .[cluster]" in CLUSTER_HINT
    assert resolve_executor("serial")[1]  # the rest works without Dask


def test_unreachable_scheduler_is_one_line_within_the_timeout() -> None:
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ExecutorError) as err:
        resolve_executor(f"dask://127.0.0.1:{port}", connect_timeout_s=1.0)
    assert time.perf_counter() - t0 < 8.0
    assert str(err.value).startswith(f"cannot reach the dask scheduler at tcp://127.0.0.1:{port} within 1 s")
    assert "\n" not in str(err.value)


def test_commands_reject_a_bad_executor_in_one_line(capsys, tmp_path) -> None:
    from boosting.characterize import main
    from pipeline.options import FlowError, FlowOptions

    net = tmp_path / "net.pt"
    net.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main([str(net), "--executor", "foo"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "unknown executor 'foo'" in err[-1]
    with pytest.raises(FlowError, match="option executor: bad dask executor 'dask://x'"):
        FlowOptions.from_mapping({"executor": "dask://x"})
    assert FlowOptions.from_mapping({"executor": "dask://x:1"}).executor == "dask://x:1"
    assert FlowOptions().executor == "local"
    with pytest.raises(ExecutorError, match="unknown executor"):  # before the (missing) file is read
        characterize_network(tmp_path / "missing.pt", SPEC, executor="cluster")


def test_pipeline_flag_reaches_the_options() -> None:
    from pipeline.__main__ import _parser, options_from_args
    from pipeline.options import FlowError

    assert options_from_args(_parser().parse_args(["run", "--executor", "serial"])).executor == "serial"
    assert options_from_args(_parser().parse_args(["run"])).executor == "local"
    with pytest.raises(FlowError, match="unknown executor 'threads'"):
        options_from_args(_parser().parse_args(["run", "--executor", "threads"]))


# -------------------------------------------------------------------------- cluster
@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of two single-thread worker processes, and a client of it.

    The serial runs compared with it use one torch thread too, like the workers (Dask sets
    OMP_NUM_THREADS=1 there): on a busy two-core machine torch's thread pool makes them ~20x slower.
    """
    import torch

    distributed = pytest.importorskip("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=40) as lc, distributed.Client(lc, set_as_default=False) as client:
            yield lc, client
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lenet_file(lenet_digits_state, tmp_path_factory) -> Path:
    """A network file of the session's LeNet (digits, 28x28)."""
    from conftest import lenet_from

    from boosting.checkpoint import save_network

    state, _, _ = lenet_digits_state
    path = tmp_path_factory.mktemp("net") / "lenet.pt"
    return save_network(path, lenet_from(state), network="lenet", meta={"kind": "clean"}, seed=0,
                        build={"num_classes": 10, "in_channels": 1, "image_size": 28},
                        dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False,
                                 "split_seed": 0})


CHAR_KW = dict(search="both", seeds=(0, 1), holdout_seeds=(1000,), ber_min=1e-5, ber_max=1e-1, tol=2.0,
               factor=10.0, max_steps=1, samples=60, statistic="mean", max_drop=0.05, calib_samples=128)


def test_characterization_on_the_cluster_equals_serial(cluster, lenet_file) -> None:
    _, client = cluster
    serial = characterize_network(lenet_file, SPEC, executor="serial", **CHAR_KW)
    on_cluster = characterize_network(lenet_file, SPEC, executor=client, **CHAR_KW)
    assert on_cluster == serial
    assert serial["fine"] is not None and len(serial["fine"]["probes"]) > 10
    assert client.status == "running"  # the wrapper leaves a given client open


# A workload counting, in this process, how often it is pickled (the workers import this module).
PICKLES = {"n": 0}


@dataclass
class CountingWorkload:
    inner: NetworkWorkload
    kill_marker: str = ""  # with a path: the first task on a worker process creates it and kills that process
    parent_pid: int = 0

    @property
    def layers(self) -> list[str]:
        return self.inner.layers

    def __getstate__(self) -> dict:
        if os.getpid() == self.parent_pid:
            PICKLES["n"] += 1
        return dict(self.__dict__)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def clean(self) -> tuple[float, int]:
        return self.inner.clean()

    def reference(self, spec: ErrorSpec) -> tuple[float, int]:
        return self.inner.reference(spec)

    def __call__(self, spec: ErrorSpec, seed: int) -> tuple[float, int]:
        if self.kill_marker and os.getpid() != self.parent_pid:
            try:
                fd = os.open(self.kill_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os._exit(1)  # the worker process dies mid-task
        return self.inner(spec, seed)


@pytest.fixture(scope="module")
def workload(lenet_digits_state) -> NetworkWorkload:
    from conftest import lenet_from

    state, _, test = lenet_digits_state
    x, y = test.tensors
    return NetworkWorkload(lenet_from(state), x[:60], y[:60], batch_size=60)


COARSE_KW = dict(max_drop=0.05, ber_min=1e-5, ber_max=1e-1, tol=0.5, seeds=(0, 1, 2), statistic="mean",
                 holdout_seeds=(1000, 1001))


def test_the_workload_is_scattered_once(cluster, workload) -> None:
    _, client = cluster
    work = CountingWorkload(workload, parent_pid=os.getpid())
    serial = coarse_characterize(work, SPEC, executor=SerialExecutor(), **COARSE_KW)
    PICKLES["n"] = 0
    ex = DaskExecutor(client)
    try:
        res = coarse_characterize(work, SPEC, executor=ex, **COARSE_KW)
    finally:
        ex.shutdown()
    assert res == serial
    tasks = 1 + sum(len(p.mask_seeds) for p in res.probes if p.stage != "baseline")  # reference + one per seed
    assert ex.submitted == tasks >= 12
    assert ex.scattered == 1 and PICKLES["n"] <= 2  # one size check, one scatter; not one per task
    PICKLES["n"] = 0
    per_task = DaskExecutor(client, scatter_min_bytes=1 << 40)  # nothing is large enough: sent with every task
    try:
        again = coarse_characterize(work, SPEC, executor=per_task, **COARSE_KW)
    finally:
        per_task.shutdown()
    assert again == serial and per_task.scattered == 0 and PICKLES["n"] >= per_task.submitted


def test_forget_rescatters_a_changed_workload(cluster, workload) -> None:
    import torch

    _, client = cluster
    from conftest import lenet_from

    work = NetworkWorkload(lenet_from(workload.net.state_dict()), workload.x, workload.y, batch_size=60)
    ex = DaskExecutor(client)
    try:
        before = ex.submit(characterization._run_probe, work, None, 0).result()
        with torch.no_grad():
            for p in work.net.parameters():
                p.zero_()
        stale = ex.submit(characterization._run_probe, work, None, 0).result()
        assert ex.forget(work) and not ex.forget(work)
        after = ex.submit(characterization._run_probe, work, None, 0).result()
    finally:
        ex.shutdown()
    assert stale == before  # the workers kept the scattered copy ...
    assert after == work.clean() and after != before  # ... until it was forgotten
    assert ex.scattered == 2


def test_a_killed_worker_has_its_tasks_rerun(cluster, workload, tmp_path) -> None:
    lc, client = cluster
    marker = tmp_path / "killed"
    work = CountingWorkload(workload, kill_marker=str(marker), parent_pid=os.getpid())
    serial = coarse_characterize(CountingWorkload(workload, parent_pid=os.getpid()), SPEC,
                                 executor=SerialExecutor(), **COARSE_KW)
    client.wait_for_workers(2, timeout=60)
    before = set(client.scheduler_info()["workers"])
    ex, owned = resolve_executor(client)
    assert owned and isinstance(ex, DaskExecutor)
    try:
        res = coarse_characterize(work, SPEC, executor=ex, **COARSE_KW)
    finally:
        ex.shutdown()
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a worker process did die
    assert res == serial  # every probe complete and equal
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it ...
    assert set(client.scheduler_info()["workers"]) != before  # ... as a new worker


def _flaky(marker: str) -> str:
    """Raise on the first call (creating ``marker``), return "ok" after."""
    if not os.path.exists(marker):
        Path(marker).write_text("1")
        raise RuntimeError("first attempt fails")
    return "ok"


def test_dask_url_connects_and_retries_rerun_a_failed_task(cluster, tmp_path) -> None:
    lc, _ = cluster
    port = int(lc.scheduler_address.rsplit(":", 1)[1])
    ex, owned = resolve_executor(f"dask://127.0.0.1:{port}", retries=0)
    try:
        assert owned and ex.address == f"tcp://127.0.0.1:{port}"
        with pytest.raises(RuntimeError, match="first attempt fails"):
            ex.submit(_flaky, str(tmp_path / "a")).result()
    finally:
        ex.shutdown()
    assert ex.client.status in ("closed", "closing")  # made here, closed here
    ex, _ = resolve_executor(f"dask://127.0.0.1:{port}", retries=1)
    try:
        assert ex.submit(_flaky, str(tmp_path / "b")).result() == "ok"
    finally:
        ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(_flaky, "x")


# ------------------------------------------------------------- shared workload objects
def _probes_at_once(executor: Executor, work: NetworkWorkload, n: int = 24) -> list[tuple[float, int]]:
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=5)
    futures = [executor.submit(characterization._run_shared, characterization._run_probe, work, spec, s)
               for s in range(n)]
    return [f.result() for f in futures]


def test_threads_sharing_a_workload_get_the_serial_results(workload) -> None:
    """Concurrent tasks on one workload object (a thread pool, a Dask worker's threads) each evaluate their own
    copy of the network: the injector attached during one evaluation is never seen by another."""
    import torch

    before = {k: v.clone() for k, v in workload.net.state_dict().items()}
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=5)
    want = [characterization._run_probe(workload, spec, s) for s in range(24)]
    with ThreadPoolExecutor(4) as pool:
        assert _probes_at_once(pool, workload) == want
        assert characterization._shares_arguments(pool)
        serial = coarse_characterize(workload, SPEC, executor=SerialExecutor(), **COARSE_KW)
        assert coarse_characterize(workload, SPEC, executor=pool, **COARSE_KW) == serial
    assert not characterization._shares_arguments(SerialExecutor())
    # the shared object was only read: no parametrization left on it, the same weights
    assert not any(hasattr(m, "parametrizations") for m in workload.net.modules())
    after = workload.net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_own_copy_is_one_per_thread_and_follows_a_change(workload) -> None:
    import torch

    from conftest import lenet_from

    work = NetworkWorkload(lenet_from(workload.net.state_dict()), workload.x, workload.y, batch_size=60)
    own = characterization._own_copy(work)
    assert own is not work and own.net is not work.net and own.x is work.x  # the network only is copied
    assert characterization._own_copy(work) is own  # once per workload and thread
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(characterization._own_copy, work).result() is not own
    with torch.no_grad():
        for p in work.net.parameters():
            p.zero_()
    work.changed()  # changed in place, as the retraining hook does: a new copy
    fresh = characterization._own_copy(work)
    assert fresh is not own and all(torch.count_nonzero(p) == 0 for p in fresh.net.parameters())


def test_a_dask_worker_with_several_threads_gives_the_serial_results(workload) -> None:
    distributed = pytest.importorskip("distributed")
    spec = ErrorSpec(get_model("uniform", ber=1e-2), fmt="int8", seed=5)
    want = [characterization._run_probe(workload, spec, s) for s in range(24)]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=True, dashboard_address=":0",
                                  silence_logs=40) as lc, distributed.Client(lc, set_as_default=False) as client:
        ex = DaskExecutor(client)
        try:
            assert _probes_at_once(ex, workload) == want
            serial = coarse_characterize(workload, SPEC, executor=SerialExecutor(), **COARSE_KW)
            assert coarse_characterize(workload, SPEC, executor=ex, **COARSE_KW) == serial
        finally:
            ex.shutdown()


# ------------------------------------------------------------------ the workload file of a local pool
def test_a_local_pool_loads_the_workload_from_one_file(workload, monkeypatch) -> None:
    """A process pool's tasks name a file written once per workload version, removed when the search ends."""
    import multiprocessing

    import torch

    written: list[str] = []
    write = characterization._WorkloadFile.write.__func__

    def spy(cls, work, fingerprint):
        ref = write(cls, work, fingerprint)
        written.append(ref.path)
        return ref

    monkeypatch.setattr(characterization._WorkloadFile, "write", classmethod(spy))
    serial = coarse_characterize(workload, SPEC, executor=SerialExecutor(), **COARSE_KW)
    assert written == []  # the serial executor passes the object itself
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert coarse_characterize(workload, SPEC, executor=pool, **COARSE_KW) == serial
        assert len(written) == 1 and not os.path.exists(written[0])  # one file, removed at the end

        # retraining between probes changes the workload in place: a new file for each version
        from conftest import lenet_from

        work = NetworkWorkload(lenet_from(workload.net.state_dict()), workload.x, workload.y, batch_size=60)
        versions = []

        def retrain(spec: ErrorSpec) -> None:
            with torch.no_grad():
                next(work.net.parameters()).mul_(0.999)
            versions.append(spec)

        written.clear()
        done = coarse_characterize(work, SPEC, executor=pool, retrain=retrain, **COARSE_KW)
        assert len(written) == len(versions) + 1 == len(done.probes)  # the reference, then one per retraining
        assert not any(os.path.exists(p) for p in written)


def test_a_worker_loads_a_workload_file_once(workload, tmp_path) -> None:
    ref = characterization._WorkloadFile.write(workload, workload.fingerprint())
    try:
        first = characterization._run_from_file(characterization._run_probe, ref, None, 0)
    finally:
        ref.remove()
    assert not os.path.exists(ref.path)
    # the loaded workload is kept for the later tasks (the file is not read again) ...
    assert characterization._run_from_file(characterization._run_probe, ref, None, 0) == first == workload.clean()
    # ... and another version is read from its own file
    other = characterization._WorkloadFile(ref.fingerprint + "0", str(tmp_path / "missing.pkl"))
    with pytest.raises(FileNotFoundError):
        characterization._run_from_file(characterization._run_probe, other, None, 0)
