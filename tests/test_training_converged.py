"""Converged baselines: the validation split, early stopping with the best epoch restored, LR schedules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from boosting.checkpoint import CheckpointError, load_network, save_network
from boosting.data import DatasetError, from_tensors, load_dataset, split_validation
from boosting.inference import evaluate
from boosting.networks import NETWORKS, register_network
from boosting.training import TrainError, train_clean

if "test-linear" not in NETWORKS:
    @register_network("test-linear", in_channels=1, image_size=8)
    def _linear(*, num_classes: int, in_channels: int, image_size: int) -> torch.nn.Module:
        """A single linear layer (fast enough to train many epochs in a test)."""
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size ** 2, num_classes))


def _toy(n: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]
    return from_tensors(torch.rand(n, 1, 4, 4, generator=g), y)


# ------------------------------------------------------------------ validation split
def test_split_validation_is_stratified_seeded_and_disjoint() -> None:
    data = _toy()
    train, val = split_validation(data, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180
    xs = torch.cat([train.tensors[0], val.tensors[0]])
    assert sorted(map(tuple, xs.flatten(1).tolist())) == sorted(map(tuple, data.tensors[0].flatten(1).tolist()))
    rows_val = {tuple(r) for r in val.tensors[0].flatten(1).tolist()}
    assert not rows_val & {tuple(r) for r in train.tensors[0].flatten(1).tolist()}  # disjoint
    assert np.bincount(val.tensors[1].numpy(), minlength=10).tolist() == [2] * 10  # every class its share
    again = split_validation(data, 0.1, seed=3)[1]
    assert torch.equal(again.tensors[0], val.tensors[0])
    other = split_validation(data, 0.1, seed=4)[1]
    assert not torch.equal(other.tensors[0], val.tensors[0])
    assert split_validation(data, 0.0, seed=0) == (data, None)
    sub_train, sub_val = split_validation(Subset(data, range(100)), 0.2, seed=0)  # generic datasets: Subsets
    assert isinstance(sub_val, Subset) and len(sub_val) == 20 and not set(sub_val.indices) & set(sub_train.indices)
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(DatasetError, match="fraction"):
            split_validation(data, bad, seed=0)


def test_network_file_loads_val_split(tmp_path: Path) -> None:
    from boosting.networks import get_network

    ds = {"name": "digits", "root": None, "image_size": 12, "normalize": False, "split_seed": 1}
    build = {"num_classes": 10, "in_channels": 1, "image_size": 12}
    net = get_network("lenet", seed=0, **build)
    plain = load_network(save_network(tmp_path / "a.pt", net, network="lenet", build=build, seed=0, dataset=ds))
    full = load_dataset("digits", split="train", seed=1, image_size=12)
    assert torch.equal(plain.load_split("train").tensors[0], full.tensors[0])
    with pytest.raises(CheckpointError, match="no validation split"):
        plain.load_split("val")
    nf = load_network(save_network(tmp_path / "b.pt", net, network="lenet", build=build, seed=0,
                                   dataset={**ds, "val_fraction": 0.1, "val_seed": 5}))
    tr, va = nf.load_split("train"), nf.load_split("val")
    want_tr, want_va = split_validation(full, 0.1, 5)
    assert torch.equal(tr.tensors[0], want_tr.tensors[0]) and torch.equal(va.tensors[0], want_va.tensors[0])
    assert len(tr) + len(va) == len(full) and len(nf.load_split("test")) == 360
    with pytest.raises(CheckpointError, match="split"):
        nf.load_split("dev")
    save_network(tmp_path / "c.pt", net, network="lenet", build=build, seed=0, dataset={**ds, "val_fraction": 1.5})
    with pytest.raises(CheckpointError, match="val_fraction"):
        load_network(tmp_path / "c.pt")


# ------------------------------------------------------------------- early stopping
def test_early_stopping_restores_the_best_epoch(tmp_path: Path) -> None:
    out = tmp_path / "net.pt"
    # a large lr makes Adam noisy, so the best epoch comes early and is left behind
    train_clean("test-linear", "digits", epochs=30, lr=0.3, patience=2, split_seed=2, out=out, plot=False)
    nf = load_network(out)
    meta = nf.meta
    hist = meta["history"]
    best, stopped = meta["best_epoch"], meta["stopped_epoch"]
    assert stopped == hist[-1]["epoch"] and stopped - best == 2 and stopped < 29
    key = [(h["val_acc"], -h["val_loss"]) for h in hist]
    assert key[best] == max(key)  # best validation accuracy, ties by the lower loss
    assert meta["val_accuracy"] == hist[best]["val_acc"] and len(meta["val_history"]) == len(hist)
    assert nf.dataset["val_fraction"] == 0.1 and nf.dataset["val_seed"] == 2
    # the written weights are the best epoch's: its validation and test accuracies come back
    val = nf.load_split("val")
    assert evaluate(nf.net, DataLoader(val, batch_size=256), None).mean == pytest.approx(hist[best]["val_acc"])
    test = nf.load_split("test")
    assert evaluate(nf.net, DataLoader(test, batch_size=256), None).mean == meta["clean_test_accuracy"] \
        == hist[best]["test_acc"]
    doc = json.loads((tmp_path / "net.train.json").read_text())
    assert doc["best_epoch"] == best and doc["stopped_epoch"] == stopped
    with open(tmp_path / "net.train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"val_acc", "val_loss", "lr", "best"} <= set(rows[0]) and [r["best"] for r in rows].count("1") == 1


def test_no_validation_trains_every_epoch_and_schedules(tmp_path: Path) -> None:
    out = train_clean("lenet", "digits", epochs=3, val_fraction=0.0, lr_schedule="cosine", image_size=16,
                      out=tmp_path / "a.pt", plot=False)
    nf = load_network(out)
    assert nf.meta["best_epoch"] == nf.meta["stopped_epoch"] == 2 and nf.meta["val_accuracy"] is None
    assert "val_fraction" not in nf.dataset
    lrs = [h["lr"] for h in nf.meta["history"]]
    assert lrs[0] == pytest.approx(3e-3) and lrs[0] > lrs[1] > lrs[2]  # cosine decay
    with pytest.raises(TrainError, match="lr_schedule"):
        train_clean("lenet", epochs=1, lr_schedule="step", out=tmp_path / "b.pt")
    with pytest.raises(TrainError, match="val_fraction"):
        train_clean("lenet", epochs=1, val_fraction=1.0, out=tmp_path / "b.pt")
    with pytest.raises(TrainError, match="patience"):
        train_clean("lenet", epochs=1, patience=0, out=tmp_path / "b.pt")


def test_cli_convergence_flags(tmp_path: Path) -> None:
    from boosting import train as train_mod

    out = tmp_path / "n.pt"
    rc = train_mod.main(["train", "--network", "lenet", "--image-size", "16", "--epochs", "2", "--val-fraction", "0.2",
                         "--patience", "1", "--lr-schedule", "none", "--no-plot", "-q", "-o", str(out)])
    assert rc == 0
    nf = load_network(out)
    s = nf.meta["settings"]
    assert (s["val_fraction"], s["patience"], s["lr_schedule"], s["epochs"]) == (0.2, 1, None, 2)
    assert nf.dataset["val_fraction"] == 0.2 and len(nf.load_split("val")) == 288
