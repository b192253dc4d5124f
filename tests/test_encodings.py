"""Sparse weight encodings: round trips, metadata faults as a hardware decoder sees them, IdxSync, costs, the design search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from errormodels.encodings import (
    CostModel,
    EncodingError,
    Stream,
    decode,
    encode,
    fault,
    storage_cost,
    stored_bits,
)
from errormodels.models import MLC, get_model


def _sparse_codes(shape, density, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(-127, 128, size=shape)
    c[c == 0] = 1
    c[rng.random(shape) >= density] = 0
    return c


def _flip(enc, stream, bit):
    """``enc`` with stream bit ``bit`` flipped (what one faulty cell of an SLC does)."""
    s = enc.streams[stream]
    data = s.data.copy()
    data[bit // 8] ^= np.uint8(1 << (bit % 8))
    return enc.replace_streams({**enc.streams, stream: Stream(data, s.field_bits, s.n_fields)})


def _reference_bitmask(mask, values, n):
    """A decoder written as the hardware walks: each set mask bit takes the next value."""
    out, ptr = np.zeros(n, dtype=np.int64), 0
    for i in range(n):
        if mask[i]:
            out[i] = values[ptr] if ptr < len(values) else 0
            ptr += 1
    return out


@pytest.mark.parametrize("encoding,sync", [("dense", 0), ("bitmask", 0), ("bitmask", 7), ("csr", 0)])
@pytest.mark.parametrize("shape,density", [((6, 3, 5, 5), 0.2), ((40,), 0.5), ((5, 9), 0.0), ((4, 4), 1.0)])
def test_round_trip(encoding, sync, shape, density) -> None:
    codes = _sparse_codes(shape, density)
    codes.flat[0] = -128 if density else 0  # the extreme code survives
    enc = encode(codes, encoding, sync_block=sync)
    assert np.array_equal(decode(enc), codes)


def test_a_mask_fault_shifts_every_later_value_and_idxsync_bounds_it() -> None:
    codes = _sparse_codes((8, 50), 0.3, seed=1)
    flat = codes.reshape(-1)
    p = int(np.flatnonzero(flat == 0)[3])  # an early zero: 0 -> 1 takes the next value early
    bare = _flip(encode(codes, "bitmask"), "mask", p)
    got = decode(bare).reshape(-1)
    mask = flat != 0
    mask[p] = True
    assert np.array_equal(got, _reference_bitmask(mask, flat[flat != 0], flat.size))
    changed = np.flatnonzero(got != flat)
    assert changed.min() == p and changed.size > 0.5 * np.count_nonzero(flat[p:])  # everything after p moves

    synced = _flip(encode(codes, "bitmask", sync_block=50), "mask", p)
    got_s = decode(synced).reshape(-1)
    changed_s = np.flatnonzero(got_s != flat)
    block = p // 50
    assert changed_s.min() == p and changed_s.max() < (block + 1) * 50  # the damage ends at its block
    # within the block the hardware's shift is the same as without IdxSync
    lo, hi = p, (block + 1) * 50
    assert np.array_equal(got_s[lo:hi], got[lo:hi])


def test_a_one_to_zero_mask_fault_skips_a_value() -> None:
    codes = _sparse_codes((200,), 0.4, seed=2)
    nz = np.flatnonzero(codes)
    p = int(nz[2])
    got = decode(_flip(encode(codes, "bitmask"), "mask", p))
    assert got[p] == 0 and got[nz[3]] == codes[nz[2]] and got[nz[4]] == codes[nz[3]]


def test_an_idxsync_offset_fault_misaligns_only_its_block() -> None:
    codes = _sparse_codes((10, 30), 0.5, seed=3)
    enc = encode(codes, "bitmask", sync_block=30)
    ob = enc.streams["offsets"].field_bits
    got = decode(_flip(enc, "offsets", 4 * ob)).reshape(-1)  # bit 0 of block 4's offset
    changed = np.flatnonzero(got != codes.reshape(-1))
    assert changed.size and changed.min() >= 4 * 30 and changed.max() < 5 * 30


def test_csr_column_and_pointer_faults_stay_local() -> None:
    codes = _sparse_codes((6, 16), 0.4, seed=4)
    enc = encode(codes, "csr")
    cb = enc.streams["cols"].field_bits
    k = 5  # the sixth stored value: its column gains bit 0
    got = decode(_flip(enc, "cols", k * cb))
    diff = np.argwhere(got != codes)
    rows_touched = set(diff[:, 0])
    assert len(rows_touched) == 1 and 1 <= len(diff) <= 2  # one value moved within its row

    pb = enc.streams["rowptr"].field_bits
    ends = enc.streams["rowptr"].fields()
    got = decode(_flip(enc, "rowptr", 2 * pb))  # the end of row 2 moves by one
    diff_rows = set(np.argwhere(got != codes)[:, 0])
    assert diff_rows <= {2, 3} and diff_rows
    assert np.array_equal(got[:2], codes[:2]) and np.array_equal(got[4:], codes[4:])
    assert ends[2] != 0


def test_out_of_range_indices_read_as_zero() -> None:
    codes = np.zeros((3, 5), dtype=np.int64)  # 5 columns in 3 bits: columns 5..7 do not exist
    codes[0, 1], codes[1, 4], codes[2, 0] = 3, 9, -7
    enc = encode(codes, "csr")
    got = decode(_flip(enc, "cols", 1 * enc.streams["cols"].field_bits))  # the second value's column 4 -> 5
    expected = codes.copy()
    expected[1, 4] = 0
    assert np.array_equal(got, expected)
    bm = encode(codes, "bitmask", sync_block=5)
    ob = bm.streams["offsets"].field_bits
    got = decode(_flip(bm, "offsets", 2 * ob))  # block 2 starts at value 2 -> 3: past the 3 values
    expected = codes.copy()
    expected[2, 0] = 0
    assert np.array_equal(got, expected)


def test_secded_streams_correct_one_fault_per_word() -> None:
    codes = _sparse_codes((16, 40), 0.3, seed=6)
    enc = encode(codes, "bitmask")
    model = get_model("uniform", ber=2e-4)
    bare_wrong, prot_wrong, corrected = 0, 0, 0
    for seed in range(12):
        read, _ = fault(enc, model, seed=seed, protection="none")
        bare_wrong += int((decode(read) != codes).sum())
        read, st = fault(enc, model, seed=seed, protection="secded")
        prot_wrong += int((decode(read) != codes).sum())
        corrected += st.corrected
    assert bare_wrong > 0 and corrected > 0 and prot_wrong < bare_wrong / 10


def test_faults_are_seeded_and_hit_cells() -> None:
    codes = _sparse_codes((64, 64), 0.25, seed=7)
    enc = encode(codes, "csr")
    model = MLC.from_sigma(0.045, 3)
    a, sa = fault(enc, model, seed=3)
    b, _ = fault(enc, model, seed=3)
    c, _ = fault(enc, model, seed=4)
    assert all(np.array_equal(a.streams[k].data, b.streams[k].data) for k in enc.streams)
    assert any(not np.array_equal(a.streams[k].data, c.streams[k].data) for k in enc.streams)
    assert sa.raw_bits_flipped > 0 and set(sa.per_stream) == {"values", "cols", "rowptr"}


def test_stored_bits_and_costs() -> None:
    codes = _sparse_codes((10, 64), 0.25, seed=8)
    n, nnz = codes.size, int(np.count_nonzero(codes))
    dense = encode(codes, "dense")
    assert stored_bits(dense) == {"values": 8 * n}
    assert stored_bits(dense, "secded") == {"values": 72 * (n // 8)}
    assert storage_cost(dense, "none", 1).cells_per_weight == 8.0
    assert storage_cost(dense, "none", 3).cells == -(-8 * n // 3)
    bm = encode(codes, "bitmask", sync_block=64)
    bits = stored_bits(bm)
    assert bits["mask"] == n and bits["values"] == 8 * nnz and bits["offsets"] == 10 * (nnz.bit_length())
    assert stored_bits(bm, "meta")["values"] == 8 * nnz and stored_bits(bm, "meta")["mask"] == 72 * -(-n // 64)
    csr = encode(codes, "csr")
    assert stored_bits(csr) == {"values": 8 * nnz, "cols": 6 * nnz, "rowptr": 10 * nnz.bit_length()}
    slc, mlc3 = storage_cost(dense, "none", 1), storage_cost(dense, "none", 3)
    assert mlc3.cells < slc.cells and mlc3.latency > slc.latency / 3  # denser, each read slower
    assert storage_cost(dense, "secded", 1).energy > slc.energy


def test_bad_input_is_one_line() -> None:
    with pytest.raises(EncodingError, match="unknown encoding 'coo'"):
        encode(np.zeros(4, dtype=np.int64), "coo")
    with pytest.raises(EncodingError, match="codes must lie in"):
        encode(np.array([300]), "dense")
    with pytest.raises(EncodingError, match="sync_block .* bitmask"):
        encode(np.zeros(4, dtype=np.int64), "csr", sync_block=4)
    with pytest.raises(EncodingError, match="unknown protection 'parity'"):
        stored_bits(encode(np.zeros(4, dtype=np.int64)), "parity")
    with pytest.raises(EncodingError, match="unknown cost model parameter.*bogus"):
        CostModel.from_dict({"bogus": 1})
    with pytest.raises(EncodingError, match="sense_step must be a finite number"):
        CostModel.from_dict({"sense_step": -1})


# ------------------------------------------------------------------ the network level and the command
def test_stored_weights_restore_and_zero_faults_are_clean(lenet_digits_state) -> None:
    from boosting.data import iter_batches
    from boosting.storage import StoragePlan, StoredWeights, clean_int8_accuracy, evaluate_stored, envm_memory, prune_
    from conftest import lenet_from

    state, _, test = lenet_digits_state
    net = lenet_from(state)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = iter_batches(test, 512)
    clean = clean_int8_accuracy(net, loader)
    plans = {"classifier.1": StoragePlan("bitmask", "none", 2, idxsync=True)}
    quiet = evaluate_stored(net, loader, plans, envm_memory(0.01), seeds=(0, 1))  # sigma 0.01: no fault at MLC2
    assert quiet.mean == clean and quiet.weights_changed == 0
    noisy = evaluate_stored(net, loader, {"classifier.1": StoragePlan("bitmask", "none", 3)}, envm_memory(0.06),
                            seeds=(0, 1))
    assert noisy.weights_changed > 100 and noisy.mean < clean
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with StoredWeights(net, {}, envm_memory(0.01)) as sw:  # inside: the clean int8 weights
        w = dict(net.named_modules())["classifier.1"].weight
        assert not torch.equal(w, before["classifier.1.weight"])
        assert torch.allclose(w, before["classifier.1.weight"], atol=sw.scales["classifier.1"] / 2 + 1e-7)
    assert torch.equal(dict(net.named_modules())["classifier.1"].weight, before["classifier.1.weight"])
    masks = prune_(net, 0.75)
    w = dict(net.named_modules())["classifier.1"].weight
    assert abs(float((w == 0).float().mean()) - 0.75) < 0.01 and bool((masks["classifier.1"] == (w != 0)).all())


def test_the_design_command(lenet_digits_state, tmp_path, capsys) -> None:
    from boosting.design import main
    from conftest import save_lenet_file

    state, _, _ = lenet_digits_state
    net = save_lenet_file(state, tmp_path / "lenet.pt")
    out = tmp_path / "design.json"
    argv = ["--network-file", str(net), "--sigma", "0.045", "--bits-per-cell", "1,3",
            "--encodings", "dense,bitmask+idxsync", "--protections", "none,secded", "--prune", "0.6",
            "--finetune-epochs", "1", "--seeds", "0", "--backoff-seeds", "2", "--holdout-seeds", "2", "--max-drop", "0.03", "--no-plot",
            "-q", "-o", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc["layers"]) == {"features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"}
    assert doc["passed"] and doc["search_accuracy"]["mean"] >= doc["goal"]
    assert 0.1 < doc["totals"]["cells_per_weight"] < 8.0 and doc["totals"]["density_vs_slc_dense"] > 1.0
    assert len(doc["uniform"]) == 8 and (tmp_path / "design.csv").is_file()
    slc_dense = next(r for r in doc["uniform"] if r["plan"] == "SLC dense/none")
    assert slc_dense["cells_per_weight"] == 8.0 and slc_dense["weights_changed"] == 0
    assert "total cells" in capsys.readouterr().out
    for bad, message in ((["--sigma", "-1"], "sigma must be in (0, 10)"),
                         (["--encodings", "dense,coo"], "unknown encoding 'coo'")):
        with pytest.raises(SystemExit) as exc:
            main([*argv, *bad])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert main([*argv, "--cost-model", str(tmp_path / "missing.json")]) == 2
    assert "cannot read cost model" in capsys.readouterr().err


def test_misalignment_faults_count_only_a_plain_bitmask() -> None:
    from boosting.storage import StoragePlan, misalignment_faults

    codes = _sparse_codes((32, 100), 0.3, seed=9)
    ber = 1e-4
    plain = StoragePlan("bitmask", "none", 2)
    assert misalignment_faults(plain.encode(codes), "none", ber) == pytest.approx(ber * codes.size)
    meta = misalignment_faults(plain.encode(codes), "meta", ber)
    words = -(-codes.size // 64)
    assert meta == pytest.approx(words * (1 - (1 - ber) ** 72 - 72 * ber * (1 - ber) ** 71)) and meta < 1e-2 * ber * codes.size
    for other in (StoragePlan("bitmask", "none", 2, idxsync=True), StoragePlan("csr"), StoragePlan("dense")):
        assert misalignment_faults(other.encode(codes), "none", ber) == 0.0
