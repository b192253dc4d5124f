"""Shared fixtures: a LeNet trained once per test session on scikit-learn's digits (seeded); clean logging."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from boosting.data import load_dataset
from boosting.networks import get_network


def train_lenet_on_digits(train, epochs: int = 2, seed: int = 0) -> torch.nn.Module:
    """LeNet trained ``epochs`` epochs with Adam (lr 3e-3, batches of 32, seeded order)."""
    net = get_network("lenet", seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    x, y = train.tensors
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 32):
            idx = order[i : i + 32]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="session")
def lenet_digits_state() -> tuple:
    """(state_dict of a LeNet trained 2 epochs on digits, train split, test split), all at 28x28.

    Tests build their own network from the state, so none can disturb another's.
    """
    train = load_dataset("digits", split="train", image_size=28)
    test = load_dataset("digits", split="test", image_size=28)
    net = train_lenet_on_digits(train)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, train, test


def lenet_from(state: dict) -> torch.nn.Module:
    """A fresh LeNet holding ``state``, in eval mode."""
    net = get_network("lenet", seed=0)
    net.load_state_dict(state)
    return net.eval()


def save_lenet_file(state: dict, path: Path) -> Path:
    """A network file of a LeNet holding ``state`` (digits, 28x28, split seed 0)."""
    from boosting.checkpoint import save_network

    return save_network(path, lenet_from(state), network="lenet", meta={"kind": "clean"}, seed=0,
                        build={"num_classes": 10, "in_channels": 1, "image_size": 28},
                        dataset={"name": "digits", "root": None, "image_size": 28, "normalize": False,
                                 "split_seed": 0})


@pytest.fixture(autouse=True)
def _restore_logging():
    """Undo a command's :func:`softmc_host.cli.configure_logging` after each test.

    A command run in-process attaches a handler to the root logger writing to the ``sys.stderr``
    of that moment (pytest's capture of the test); left in place it would write to a closed
    stream in later tests.
    """
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_eden_cli", False):
            root.removeHandler(handler)
    root.setLevel(level)


def load_script(relative: str, name: str) -> ModuleType:
    """A script of the repository (``benchmarks/scaling.py``, ...) loaded as module ``name``."""
    path = Path(__file__).resolve().parents[1] / relative
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--tester-url URL``: run the opt-in hardware tests against a real tester (e.g. ``riffa://0/0``)."""
    parser.addoption("--tester-url", default=None,
                     help="tester URL of a real board for the opt-in hardware tests (e.g. riffa://0/0); "
                          "without it they are skipped")


@contextlib.contextmanager
def receives_interrupted_after(link, calls: int):
    """Within the block, the RIFFA ``link``'s ``fpga_recv`` raises KeyboardInterrupt after ``calls`` calls.

    What Ctrl-C in the middle of a program's READ data does to the host.
    """
    real = link.library.fpga_recv
    count = [0]

    def interrupted(*args):
        count[0] += 1
        if count[0] > calls:
            raise KeyboardInterrupt
        return real(*args)

    link.library.fpga_recv = interrupted
    try:
        yield
    finally:
        link.library.fpga_recv = real
