"""boosting.data.iter_batches: batches by tensor indexing, the same as a DataLoader with the order as sampler."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from boosting.data import DatasetError, iter_batches


class Items(Dataset):
    """A map-style dataset that is not a TensorDataset (per-item __getitem__)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


@pytest.fixture
def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(23, 1, 4, 4, generator=g), torch.randint(0, 10, (23,), generator=g))


def _loader_batches(ds, batch_size: int, order) -> list:
    return list(DataLoader(ds, batch_size=batch_size, sampler=list(order)))


def _equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(len(p) == len(q) and all(torch.equal(u, v) for u, v in zip(p, q))
                                    for p, q in zip(a, b))


def test_same_batches_as_a_dataloader_in_a_seeded_permutation(data: TensorDataset) -> None:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(5))
    batches = iter_batches(data, 5, order)
    got = list(batches)
    assert _equal(got, _loader_batches(data, 5, order.tolist()))
    assert len(batches) == 5 and [len(b[1]) for b in got] == [5, 5, 5, 5, 3]
    assert _equal(list(batches), got)  # iterable again, the same batches
    assert torch.equal(got[0][0], data.tensors[0][order[:5]])


def test_subsets_and_other_datasets(data: TensorDataset) -> None:
    inner = Subset(data, list(range(3, 20)))
    outer = Subset(inner, [16, 0, 5, 2, 9, 11, -1])
    order = [6, 2, 0, 4, 1, 3, 5]
    assert _equal(list(iter_batches(outer, 3, order)), _loader_batches(outer, 3, order))
    assert _equal(list(iter_batches(inner, 4)), _loader_batches(inner, 4, range(len(inner))))
    items = Items(*data.tensors)
    ref = list(iter_batches(data, 4, torch.arange(22, -1, -1)))
    assert _equal(list(iter_batches(items, 4, torch.arange(22, -1, -1))), [tuple(b) for b in ref])


def test_batches_are_copies_and_the_size_is_checked(data: TensorDataset) -> None:
    x0 = data.tensors[0].clone()
    for xb, _ in iter_batches(data, 8):
        xb.zero_()
    assert torch.equal(data.tensors[0], x0)
    with pytest.raises(DatasetError, match="batch_size"):
        iter_batches(data, 0)
