"""Error physics of the emulated DIMM: which bits flip at a given VDD, timing and temperature.

Every cell has a latent weakness ``z = bank + row + bitline + own``, a sum of
independent Gaussian components whose variance shares come from the vendor
profile; the row component is partly shared by all banks (row stripes).  A cell
fails when the probability of failure it is subject to exceeds its rank among
all cells: for a marginal failure probability ``p`` (from the profile, for the
present VDD, temperature and timing), the latent threshold is
``t = -ndtri(p)`` and a cell with row and bank offset ``a`` and bitline offset
``b`` fails when its own uniform draw ``u`` satisfies
``u < Q((t - a - b) / s_own)``.  The fraction of failing cells over a DIMM
population is therefore exactly ``p``, while the failures cluster in weak banks,
rows and bitlines.

- Each cell's ``u`` is a 32-bit uniform from Philox keyed by (seed, bank, row),
  so the same seed gives the same weak cells on every run, nothing is stored
  per cell, and a row's draws are made once per activation (vectorised).
- A failing cell flips only towards its leak direction: a true cell holding 1
  reads 0, an anti cell holding 0 reads 1; cells holding the other value read
  correctly.  Under reduced tRCD anti cells fail more often (0->1 flips
  dominate, as in EDEN's Fig. 3).
- tRCD applies to each RD (its own ACT-to-RD distance); tRP to the activation
  (the PRE-to-ACT distance before it); tRAS to the *next* activation of a row
  closed too early (charge not restored).  Writes are not disturbed.
- A small read-to-read jitter moves each cell's threshold by a factor
  ``exp(read_noise * g)`` per activation, ``g`` a standard normal draw keyed by
  a counter, so cells near their threshold flicker between reads of a row
  (reads within one activation agree: the data sits in the row buffer).
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from typing import Callable

import numpy as np
from scipy.special import ndtr, ndtri

from emubench.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry, RowAccess
from emubench.profiles import VendorProfile
from firmware_bridge.protocol import BURST_BYTES
from softmc_host.splitmix import splitmix64
from softmc_host.timing import ML605_TCK_NS

__all__ = ["PhysicsDimm", "Environment"]

Environment = Callable[[], "tuple[float, float]"]  # () -> (vdd_v, temp_c)

_N_LEVELS = 16  # bitline offsets are quantised to this many levels
_U_SCALE = float(1 << 32)
_NOISE_SPAN = 4.0  # read jitter is truncated at this many sigma
_ROW_CACHE = 96  # rows whose draws are kept (4 bytes per cell: 256 KiB a row)


def _key(seed: int, profile_id: int, tag: int, extra: int = 0) -> np.ndarray:
    """A 128-bit Philox key: the seed, then the profile, a stream tag and a 40-bit index.

    Returned as uint64 words: a Python list of large integers would pass through
    float64 and lose its low bits, so neighbouring indices would share a stream.
    """
    low = (profile_id & 0xFFFF) << 48 | (tag & 0xFF) << 40 | (extra & ((1 << 40) - 1))
    return np.array([seed & 0xFFFFFFFFFFFFFFFF, low], dtype=np.uint64)


def _normals(key: np.ndarray, n: int) -> np.ndarray:
    return np.random.Generator(np.random.Philox(key=key)).standard_normal(n)


class _PhysicsRow(RowAccess):
    """An open row with its error state: thresholds per read and the candidate weak cells."""

    dimm: "PhysicsDimm"

    def __init__(self, dimm: "PhysicsDimm", bank: int, row: int, trp_cycles: int, data: np.ndarray) -> None:
        super().__init__(dimm, bank, row, trp_cycles, data)
        vdd_v, temp_c = dimm.environment()
        self.vdd_v = vdd_v
        self.temp_c = temp_c
        self.p_base = dimm.base_probability(bank, row, trp_cycles * dimm.tck_ns, vdd_v, temp_c)
        self.group_p_cache: dict[float, np.ndarray] = {}
        self.burst_cache: dict[tuple[float, int], np.ndarray] = {}
        self.activation_id: int | None = None  # numbered when it first needs read jitter


class PhysicsDimm(EmulatedDimm):
    """An emulated DIMM whose reads fail like a real module's (see the module docstring).

    Parameters
    ----------
    profile : VendorProfile
        The vendor's failure behaviour.
    geometry : Geometry
        Banks, rows, columns.
    seed : int
        The DIMM's identity: its weak cells, stripes, bank offsets and voltage offset.
    environment : callable
        Returns ``(vdd_v, temp_c)`` the DIMM sees now (the bench supply and thermal controller).
    tck_ns : float
        Tester clock, to turn cycle counts into nanoseconds.
    """

    def __init__(
        self,
        profile: VendorProfile,
        geometry: Geometry = ML605_GEOMETRY,
        seed: int = 0,
        environment: Environment | None = None,
        tck_ns: float = ML605_TCK_NS,
    ) -> None:
        super().__init__(geometry, seed)
        self.profile = profile
        self.tck_ns = float(tck_ns)
        self.environment: Environment = environment or (lambda: (profile.vdd_nominal_v, profile.temp_ref_c))
        g = geometry
        bits = g.row_bytes * 8
        # Another profile with the same seed is another DIMM: the profile is part of every key.
        self._pid = zlib.crc32(profile.name.encode()) & 0xFFFF
        rng = np.random.Generator(np.random.Philox(key=_key(self.seed, self._pid, 0xD1)))
        self.vdd_offset_v = float(rng.standard_normal() * profile.dimm_sigma_v)
        self.bank_offset = rng.standard_normal(g.banks) * math.sqrt(profile.bank_var)
        # Bitline offsets, quantised to equiprobable levels, per bank.
        levels = ndtri((np.arange(_N_LEVELS) + 0.5) / _N_LEVELS)
        self.level_offset = levels / levels.std() * math.sqrt(profile.bitline_var)
        self.bitline_level = rng.integers(0, _N_LEVELS, (g.banks, bits), dtype=np.uint8)
        # Orientation: True = true cell (charged when holding 1).
        if profile.orientation == "bitline":
            self.bitline_true = rng.integers(0, 2, (g.banks, bits), dtype=np.uint8).astype(bool)
        else:
            self.bitline_true = None
        self._row_block_flip = int(rng.integers(0, 2))
        self._true_bytes: dict[int, np.ndarray] = {}
        self._all_true = np.full(g.row_bytes, 0xFF, np.uint8)
        self._all_anti = np.zeros(g.row_bytes, np.uint8)
        self._row_offsets: dict[int, np.ndarray] = {}
        self._shared_rows: np.ndarray | None = None
        self._draws: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._under_restored: dict[tuple[int, int], float] = {}
        self._activations = 0
        self._group_cache: dict[tuple[int, int, float, float], np.ndarray] = {}
        self._noise_seed = 0
        self._cand_cache: OrderedDict[tuple[int, int, bytes], tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.own_sd = math.sqrt(profile.cell_var)

    def reseed_noise(self, seed: int) -> None:
        """Restart the read-jitter stream from ``seed``: a sweep does it at every point, so a
        resumed sweep reads what an uninterrupted one would have (an emulator-only control)."""
        self._noise_seed = int(seed)
        self._activations = 0

    def power_problem(self) -> str | None:
        vdd_v, _ = self.environment()
        if vdd_v < 0.5:
            return f"the DIMM is not powered (supply output {vdd_v:.2f} V)"
        return None

    # Structure ---------------------------------------------------------------------------

    def row_offset(self, bank: int, row: int) -> float:
        """Latent offset shared by a row's cells: bank, shared row stripe and the bank's own row part."""
        p = self.profile
        if self._shared_rows is None:
            self._shared_rows = _normals(_key(self.seed, self._pid, 0xA0), self.geometry.rows)
        rows = self._row_offsets.get(bank)
        if rows is None:
            rows = self._row_offsets[bank] = _normals(_key(self.seed, self._pid, 0xA1, bank), self.geometry.rows)
        shared = math.sqrt(p.row_shared_frac) * self._shared_rows[row]
        own = math.sqrt(1.0 - p.row_shared_frac) * rows[row]
        return float(self.bank_offset[bank] + math.sqrt(p.row_var) * (shared + own))

    def row_true_cells(self, bank: int, row: int) -> np.ndarray | bool:
        """Orientation of a row's cells: a boolean per bit, or one boolean for the whole row."""
        if self.bitline_true is not None:
            return self.bitline_true[bank]
        block = row // self.profile.orientation_block_rows
        return bool((block + self._row_block_flip) % 2 == 0)

    def true_cell_bytes(self, bank: int, row: int) -> np.ndarray:
        """Orientation of a row's cells packed like its data: bit set = true cell."""
        true_cells = self.row_true_cells(bank, row)
        if isinstance(true_cells, bool):
            return self._all_true if true_cells else self._all_anti
        packed = self._true_bytes.get(bank)
        if packed is None:
            packed = self._true_bytes[bank] = np.packbits(true_cells, bitorder="little")
        return packed

    def cell_draws(self, bank: int, row: int) -> np.ndarray:
        """The row's per-cell uniforms as uint32 (bit order: byte * 8 + bit, LSB first)."""
        key = (bank, row)
        draws = self._draws.get(key)
        if draws is not None:
            self._draws.move_to_end(key)
            return draws
        n = self.geometry.row_bytes * 8
        raw = np.random.Philox(key=_key(self.seed, self._pid, 0xC3, bank << 24 | row)).random_raw(n // 2)
        draws = raw.view(np.uint32)
        self._draws[key] = draws
        if len(self._draws) > _ROW_CACHE:
            self._draws.popitem(last=False)
        return draws

    # Probabilities ----------------------------------------------------------------------

    def effective_vdd_v(self, vdd_v: float, temp_c: float) -> float:
        """The VDD the profile's curve is read at: this DIMM's offset and temperature applied."""
        p = self.profile
        return vdd_v - self.vdd_offset_v - p.temp_coeff_v_per_c * (temp_c - p.temp_ref_c)

    def base_probability(self, bank: int, row: int, trp_ns: float, vdd_v: float, temp_c: float) -> float:
        """Marginal failure probability of an activation before tRCD: voltage, tRP and restoration."""
        p = self.profile
        # At or above the error-free voltage the DIMM meets its specification at any
        # operating temperature; below it, offset and temperature move along the curve.
        p_v = 0.0 if vdd_v >= p.vdd_error_free_v else p.p_voltage(self.effective_vdd_v(vdd_v, temp_c))
        keep = 1.0 - p_v
        keep *= 1.0 - p.p_timing("trp", trp_ns, vdd_v, temp_c)
        tras_prev = self._under_restored.get((bank, row))
        if tras_prev is not None:
            keep *= 1.0 - p.p_timing("tras", tras_prev, vdd_v, temp_c)
        return 1.0 - keep

    def _group_p(self, access: _PhysicsRow, p_rcd: float) -> np.ndarray:
        """Conditional failure probability per (orientation, bitline level) for one RD."""
        cached = access.group_p_cache.get(p_rcd)
        if cached is not None:
            return cached
        shared_key = (access.bank, access.row, access.p_base, p_rcd)
        cached = self._group_cache.get(shared_key)
        if cached is not None:  # the same row at the same setting, activated again
            access.group_p_cache[p_rcd] = cached
            return cached
        prof = self.profile
        bias = np.array([1.0 + prof.rcd_anti_bias, 1.0 - prof.rcd_anti_bias])  # [anti, true]
        p_total = 1.0 - (1.0 - access.p_base) * (1.0 - np.minimum(1.0, p_rcd * bias))
        threshold = -ndtri(np.clip(p_total, 1e-300, 1 - 1e-16))
        a = self.row_offset(access.bank, access.row)
        z = (threshold[:, None] - a - self.level_offset[None, :]) / self.own_sd
        group_p = np.where(p_total[:, None] > 0, ndtr(-z), 0.0)
        access.group_p_cache[p_rcd] = group_p
        if len(self._group_cache) > 4096:
            self._group_cache.clear()
        self._group_cache[shared_key] = group_p
        return group_p

    # Access events ----------------------------------------------------------------------

    def activate(self, bank: int, row: int, trp_cycles: int) -> RowAccess:
        data = self._rows.get((bank, row))
        if data is None:
            data = self.power_up_content(bank, row)
        return _PhysicsRow(self, bank, row, trp_cycles, data)

    def _candidates(self, bank: int, row: int, group_p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cells of a row that can fail at these probabilities (jitter included): sorted bit
        indices, their uniforms and their (orientation, level) groups.  Cached per row and
        setting, so that activating a row once per burst does not redo the whole row."""
        cache_key = (bank, row, group_p.tobytes())
        cached = self._cand_cache.get(cache_key)
        if cached is not None:
            self._cand_cache.move_to_end(cache_key)
            return cached
        limit = np.minimum(group_p * math.exp(_NOISE_SPAN * self.profile.read_noise), 1.0) * _U_SCALE
        true_cells = self.row_true_cells(bank, row)
        level = self.bitline_level[bank]
        if isinstance(true_cells, bool):
            group = level.astype(np.int16) + (_N_LEVELS if true_cells else 0)
        else:
            group = level.astype(np.int16) + _N_LEVELS * true_cells
        draws = self.cell_draws(bank, row)
        idx = np.flatnonzero(draws < limit.reshape(-1)[group])
        result = (idx, draws[idx].astype(np.float64), group[idx])
        self._cand_cache[cache_key] = result
        if len(self._cand_cache) > _ROW_CACHE:
            self._cand_cache.popitem(last=False)
        return result

    def _failing_bits(self, access: _PhysicsRow, p_rcd: float, burst: int) -> np.ndarray:
        """Bit indices (in the row) of the cells failing in one burst of this activation.

        Fixed for the activation: the data a RD returns is latched in the row buffer,
        so reads within one activation agree; each activation draws its own jitter.
        """
        cache_key = (p_rcd, burst)
        cached = access.burst_cache.get(cache_key)
        if cached is not None:
            return cached
        group_p = self._group_p(access, p_rcd)
        empty = np.zeros(0, np.int64)
        if float(group_p.max()) * _U_SCALE * math.exp(_NOISE_SPAN * self.profile.read_noise) < 1.0:
            access.burst_cache[cache_key] = empty
            return empty
        idx, u, group = self._candidates(access.bank, access.row, group_p)
        lo, hi = np.searchsorted(idx, [burst * BURST_BYTES * 8, (burst + 1) * BURST_BYTES * 8])
        if lo == hi:
            access.burst_cache[cache_key] = empty
            return empty
        limit = group_p.reshape(-1)[group[lo:hi]] * _U_SCALE
        if self.profile.read_noise > 0:
            if access.activation_id is None:
                self._activations += 1
                access.activation_id = self._activations
            noise_index = splitmix64(splitmix64(self._noise_seed) ^ (access.activation_id << 8 | burst))
            rng = np.random.Generator(np.random.Philox(key=_key(self.seed, self._pid, 0xE7, noise_index)))
            g = np.clip(rng.standard_normal(hi - lo), -_NOISE_SPAN, _NOISE_SPAN)
            limit = limit * np.exp(self.profile.read_noise * g)
        failing = idx[lo:hi][u[lo:hi] < limit]
        access.burst_cache[cache_key] = failing
        return failing

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        index = self._read_index[column]
        clean = access.data[index]
        if not isinstance(access, _PhysicsRow):
            return clean.tobytes()
        p_rcd = self.profile.p_timing("trcd", trcd_cycles * self.tck_ns, access.vdd_v, access.temp_c)
        if p_rcd == 0.0 and access.p_base == 0.0:
            return clean.tobytes()
        burst = column // self.geometry.burst_length
        failing = self._failing_bits(access, p_rcd, burst)
        if failing.size == 0:
            return clean.tobytes()
        first_byte = burst * BURST_BYTES
        mask_bits = np.zeros(BURST_BYTES * 8, dtype=bool)
        mask_bits[failing - first_byte * 8] = True
        mask = np.packbits(mask_bits, bitorder="little")[index - first_byte]
        # A failing cell flips only if it holds its charged value: 1 in a true cell, 0 in an anti cell.
        susceptible = ~(clean ^ self.true_cell_bytes(access.bank, access.row)[index])
        return (clean ^ (mask & susceptible)).tobytes()

    def precharge(self, access: RowAccess, tras_cycles: int) -> None:
        if not isinstance(access, _PhysicsRow):
            return
        key = (access.bank, access.row)
        tras_ns = tras_cycles * self.tck_ns
        if tras_ns < self.profile.safe_ns("tras", access.vdd_v, access.temp_c):
            self._under_restored[key] = tras_ns
        else:
            self._under_restored.pop(key, None)
