"""Campaigns on a Dask cluster: the same maps as a serial run, and benches pinned to workers as resources.

The cluster is two single-thread worker processes (Nannies) of an in-process scheduler; worker
``a`` offers the benches ``C-seed01`` and ``C-seed03``, worker ``b`` offers ``C-seed02``. The
sweeps are the tiny ones of ``tests/test_campaign.py``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from profiler.campaign import CampaignError, main, run_campaign
from profiler.executors import DaskExecutor
from test_campaign import BENCHES, CONFIG, NAMES, map_arrays, read_csv

distributed = pytest.importorskip("distributed")

OFFERS = {"a": {"C-seed01": 1, "C-seed03": 1}, "b": {"C-seed02": 1}}


@pytest.fixture(scope="module")
def pinned_cluster():
    """A cluster whose two workers offer different benches, a client, and each worker's pid by name."""
    from distributed.deploy.spec import SpecCluster

    workers = {name: {"cls": distributed.Nanny, "options": {"nthreads": 1, "resources": res}}
               for name, res in OFFERS.items()}
    scheduler = {"cls": distributed.Scheduler, "options": {"dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
        pids = {names[addr]: pid for addr, pid in client.run(os.getpid).items()}
        yield client, pids


@pytest.fixture(scope="module")
def serial_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial")
    run_campaign(CONFIG, BENCHES, out, executor=None)
    return out


def _pid(result: Any) -> int:
    host, _, pid = result.host.rpartition(":")
    assert host == socket.gethostname()
    return int(pid)


def test_pinned_benches_run_on_their_workers_and_equal_the_serial_maps(pinned_cluster, serial_maps,
                                                                       tmp_path: Path) -> None:
    client, pids = pinned_cluster
    executor = DaskExecutor(client)
    assert executor.missing_resources({"C-seed01": 1, "C-seed02": 1, "C-seed09": 1}) == ["C-seed09"]
    results = run_campaign(CONFIG, BENCHES, tmp_path, executor=executor, pin=True)
    assert [r.status for r in results] == ["complete"] * 3
    where = {r.name: _pid(r) for r in results}
    assert where == {"C-seed01": pids["a"], "C-seed02": pids["b"], "C-seed03": pids["a"]}
    for name in NAMES:
        assert map_arrays(tmp_path / f"{name}.h5") == map_arrays(serial_maps / f"{name}.h5")
    assert read_csv(tmp_path / "summary.csv") == read_csv(serial_maps / "summary.csv")
    # the rerun skips every complete map without sending a task
    submitted = executor.submitted
    assert {r.status for r in run_campaign(CONFIG, BENCHES, tmp_path, executor=executor, pin=True)} == {"skipped"}
    assert executor.submitted == submitted


def test_unpinned_campaign_on_the_cluster_equals_serial(pinned_cluster, serial_maps, tmp_path: Path) -> None:
    client, pids = pinned_cluster
    results = run_campaign(CONFIG, BENCHES, tmp_path, executor=DaskExecutor(client))
    assert [r.status for r in results] == ["complete"] * 3
    assert {_pid(r) for r in results} <= set(pids.values()) and os.getpid() not in {_pid(r) for r in results}
    for name in NAMES:
        assert map_arrays(tmp_path / f"{name}.h5") == map_arrays(serial_maps / f"{name}.h5")


def test_a_bench_no_worker_offers_fails_before_anything_runs(pinned_cluster, tmp_path: Path) -> None:
    client, _ = pinned_cluster
    executor = DaskExecutor(client)
    with pytest.raises(CampaignError, match=r'no worker offers bench C-seed04: .*--resources "C-seed04=1"'):
        run_campaign(CONFIG, [*BENCHES, "emu://C?seed=4"], tmp_path, executor=executor, pin=True)
    assert executor.submitted == 0 and not list(tmp_path.glob("*.h5"))


def test_pinning_needs_the_dask_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CampaignError, match="needs the Dask executor"):
        run_campaign(CONFIG, BENCHES, tmp_path, executor=None, pin=True)
    assert main(["--bench", "emu://C?seed=1", "--vdd", "1.35", "--banks", "0", "--rows", "sample:2", "-o",
                 str(tmp_path), "--pin", "--jobs", "2"]) == 2
    assert "--pin places benches on Dask workers" in capsys.readouterr().err
    assert main(["--bench", "emu://C?seed=1..2", "--vdd", "1.35", "--banks", "0", "--rows", "sample:2", "-o",
                 str(tmp_path), "--pin", "--executor", "dask://127.0.0.1:1", "--dry-run"]) == 0
    assert "(worker resource C-seed02=1)" in capsys.readouterr().out
