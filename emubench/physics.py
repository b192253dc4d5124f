"""Error physics of the emulated DIMM: which bits flip at a given VDD, timing, temperature, data and age.

Each cell has two latent weaknesses, one for the voltage-latency mechanism and
one for the timing-margin mechanism (see :mod:`emubench.profiles`)::

    z = bank + row + subarray + distance + bitline + chip + coupling + own

The structural parts (bank, row stripes shared across banks, subarray,
distance from the sense amplifiers, bitline level, chip) are the same for both
mechanisms, so a cell weak in one tends to be weak in the other; the *own*
parts are independent, so the two sets of failing cells overlap without being
one set.  ``coupling`` is ``coupling_per_aggressor`` times the number of
adjacent bitlines (the neighbouring bits of the same byte: same chip and
column) holding the other value.  For a marginal probability ``p`` of a
mechanism the latent threshold is ``t = -ndtri(p)``, and a cell with structural
offset ``s`` and coupling ``c`` fails when its own uniform ``u`` satisfies
``u < Q((t - s - c) / s_own)``; over the vendor's population the failing share
is ``p`` under solid data.

- **Only the weakest cells are drawn.**  For each row and mechanism the cells'
  uniforms are generated in ascending order (exponential spacings: the order
  statistics of the row's uniforms) and placed at positions given by a keyed
  bijection of the row's bits, extended lazily as far as a setting needs.  A
  row at a setting where nothing can fail costs one comparison; a failing row
  costs in proportion to its candidate cells, not to its 65 536 bits.
- A failing cell flips only towards its leak direction (true cell holding 1 reads
  0, anti cell holding 0 reads 1).  Under reduced tRCD anti cells fail more often
  (0->1 flips dominate, EDEN Fig. 3).
- tRCD applies to each RD (its own ACT-to-RD distance); tRP to the activation;
  tRAS to the *next* activation of a row closed too early; the voltage-latency
  mechanism sees ``min(tRCD, tRP)``.  Writes are not disturbed.
- **Retention.**  Each cell also has a log-normal retention time; when a row is
  activated after going unrestored (no ACT, no REF reaching it) for longer than a
  charged cell's retention time, that cell's charge is lost and the sense
  amplifiers restore the wrong value: the error is written into the row.
- Read-to-read jitter scales each candidate's failure probability by
  ``exp(read_noise * g)`` per activation (reads within one activation agree: the
  data sits in the row buffer).
"""

from __future__ import annotations

import itertools
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

__all__ = ["PhysicsDimm", "Environment", "WeakCells", "MECH_VOLTAGE", "MECH_TIMING", "MECH_RETENTION"]

Environment = Callable[[], "tuple[float, float]"]  # () -> (vdd_v, temp_c)

_N_LEVELS = 16  # bitline offsets are quantised to this many levels
_NOISE_SPAN = 4.0  # read jitter is truncated at this many sigma
_STRATA = ((0, 7), (8, 15))  # bitline levels drawn together
_ROW_CACHE = 1024  # rows whose weak-cell lists are kept
_NEGLIGIBLE = 1e-9  # expected failing cells per row below which a row is not examined
MECH_VOLTAGE, MECH_TIMING, MECH_RETENTION = 0x56, 0x54, 0x52
_MASK64 = (1 << 64) - 1


def _key(seed: int, profile_id: int, tag: int, extra: int = 0) -> np.ndarray:
    """A 128-bit Philox key: the seed, then the profile, a stream tag and a 40-bit index."""
    low = (profile_id & 0xFFFF) << 48 | (tag & 0xFF) << 40 | (extra & ((1 << 40) - 1))
    return np.array([seed & _MASK64, low], dtype=np.uint64)


def _hash_uniform_scalar(base: int, index: int) -> float:
    """One element of :func:`_hash_uniform`, in plain Python (the same value)."""
    z = (index * 0x9E3779B97F4A7C15 + base) & _MASK64
    z ^= z >> 30
    z = z * 0xBF58476D1CE4E5B9 & _MASK64
    z ^= z >> 27
    z = z * 0x94D049BB133111EB & _MASK64
    z ^= z >> 31
    return ((z >> 11) + 0.5) * (1.0 / (1 << 53))


_SQRT2 = math.sqrt(2.0)
_EMPTY_U = np.zeros(0)
_EMPTY_POS = np.zeros(0, np.int64)


def _aggressor_table() -> np.ndarray:
    """Neighbours holding the other value, per (byte value, bit): the adjacent bits of the byte
    (the same chip and column, adjacent bitlines); the end bits have one neighbour."""
    value = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1
    left = np.concatenate([value[:, :1], value[:, :-1]], axis=1)
    right = np.concatenate([value[:, 1:], value[:, -1:]], axis=1)
    return ((left != value).astype(np.int8) + (right != value)).astype(np.float64)


_AGGRESSORS = _aggressor_table()


def _normals(key: np.ndarray, n: int) -> np.ndarray:
    return np.random.Generator(np.random.Philox(key=key)).standard_normal(n)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _hash_uniform(base: int, index: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) from SplitMix64's finaliser of ``base + index * golden`` (vectorised).

    A counter-based stream: element ``i`` depends only on ``base`` and ``i``, so a
    sequence can be extended or read at any index without a generator object.
    """
    z = index.astype(np.uint64) * _GOLDEN  # arrays wrap modulo 2**64 silently
    z += np.uint64(base & _MASK64)
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / (1 << 53))


class WeakCells:
    """The weakest cells of one row for one mechanism, in ascending order of their uniform.

    The ``k``-th smallest of ``n`` independent uniforms is ``1 - exp(-X_k)`` with
    ``X_k = sum_{j<=k} E_j / (n - j + 1)`` and ``E_j`` standard exponentials (the
    Renyi representation), so the sequence can be generated from the smallest
    upwards and extended on demand; its positions are the images of ``0, 1, ...``
    under a keyed bijection of ``[0, n)``.  The exponentials come from a
    counter-based hash of the row's key, so the same key always gives the same cells.

    Parameters
    ----------
    key : int
        64-bit key of the DIMM, row and mechanism.
    n : int
        Cells in the row.
    """

    __slots__ = ("n", "u", "pos", "_key", "_x", "_perm", "_bits", "_first")

    def __init__(self, key: int, n: int) -> None:
        self.n = int(n)
        self.u = _EMPTY_U
        self.pos = _EMPTY_POS
        self._key = splitmix64(key)
        self._x = 0.0
        self._bits = max(1, (self.n - 1).bit_length())
        self._perm: list | None = None
        # The smallest uniform, from the same stream in plain Python: a row with no cell
        # below a setting's bound is answered without touching NumPy.
        e_first = -math.log(_hash_uniform_scalar(self._key, 0))
        self._first = -math.expm1(-e_first / self.n)

    def _rounds(self) -> list:
        if self._perm is None:
            mask = (1 << self._bits) - 1
            state = self._key
            self._perm = []
            for _ in range(2):
                state = splitmix64(state)
                self._perm.append((np.uint64(state & mask | 1), np.uint64((state >> 32) & mask)))
        return self._perm

    def _permute(self, k: np.ndarray) -> np.ndarray:
        mask = np.uint64((1 << self._bits) - 1)
        shift = np.uint64(max(1, self._bits // 2))
        rounds = self._rounds()
        x = k.astype(np.uint64)
        for mul, add in rounds:
            x *= mul
            x += add
            x &= mask
            x ^= x >> shift
        if (1 << self._bits) == self.n:
            return x.astype(np.int64)
        while True:  # cycle-walk into [0, n)
            outside = np.flatnonzero(x >= self.n)
            if outside.size == 0:
                return x.astype(np.int64)
            y = x[outside]
            for mul, add in rounds:
                y = (y * mul + add) & mask
                y ^= y >> shift
            x[outside] = y

    def up_to(self, bound: float) -> tuple[np.ndarray, np.ndarray]:
        """Uniforms (ascending) and bit positions of the cells whose uniform is below ``bound``."""
        if bound <= self._first:
            return _EMPTY_U, _EMPTY_POS
        while (self.u.size == 0 or self.u[-1] < bound) and self.u.size < self.n:
            have = self.u.size
            want = min(self.n, max(have * 2, int(1.25 * self.n * min(bound, 1.0)) + 32))
            index = np.arange(have, want)
            e = -np.log(_hash_uniform(self._key, index))
            x = self._x + np.cumsum(e / (self.n - index))
            self._x = float(x[-1])
            u, pos = -np.expm1(-x), self._permute(index)
            if have:
                u, pos = np.concatenate([self.u, u]), np.concatenate([self.pos, pos])
            self.u, self.pos = u, pos
        k = int(np.searchsorted(self.u, bound))
        return self.u[:k], self.pos[:k]


class _Setting:
    """Thresholds of one (VDD, temperature, tRCD, tRP, under-restored tRAS) combination."""

    __slots__ = ("ident", "thr_v", "thr_t", "thr_t_min", "active")

    def __init__(self, ident: int, thr_v: float, thr_t: np.ndarray) -> None:
        self.ident = ident
        self.thr_v = thr_v
        self.thr_t = thr_t  # [anti, true] x chip
        self.thr_t_min = float(thr_t.min())
        self.active = math.isfinite(thr_v) or math.isfinite(self.thr_t_min)


class _PhysicsRow(RowAccess):
    """An open row with its conditions and the failures computed for it so far."""

    dimm: "PhysicsDimm"

    def __init__(self, dimm: "PhysicsDimm", bank: int, row: int, trp_cycles: int, data: np.ndarray, stored: bool) -> None:
        super().__init__(dimm, bank, row, trp_cycles, data, stored)
        vdd_v, temp_c = dimm.environment()
        # Rounded so that a slowly settling thermal controller does not make every activation a new setting.
        self.vdd_v, self.temp_c = round(vdd_v, 5), round(temp_c, 2)
        self.tras_prev_ns = dimm.under_restored.get((bank, row))
        self.views: dict[int, np.ndarray] = {}  # setting ident -> the row as read at that setting
        self.candidates: tuple | None = None  # (bound key, arrays) for this activation
        self.activation_id: int | None = None


class PhysicsDimm(EmulatedDimm):
    """An emulated DIMM whose reads fail like a real module's (see the module docstring).

    Parameters
    ----------
    profile : VendorProfile
        The vendor's failure behaviour.
    geometry : Geometry
        Banks, rows, columns.
    seed : int
        The DIMM's identity: its weak cells, offsets, stripes and chips.
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
        self.profile = p = profile
        self.tck_ns = float(tck_ns)
        self.environment: Environment = environment or (lambda: (p.vdd_nominal_v, p.temp_ref_c))
        g = geometry
        self.n_bits = g.row_bytes * 8
        self.n_chips = g.bus_bytes
        # Another profile with the same seed is another DIMM: the profile is part of every key.
        self._pid = zlib.crc32(p.name.encode()) & 0xFFFF
        self._row_key = splitmix64(splitmix64(self.seed & _MASK64) ^ self._pid << 40)
        rng = np.random.Generator(np.random.Philox(key=_key(self.seed, self._pid, 0xD1)))
        # DIMM level: voltage shift (also of the floor), timing onset shift, retention shift.
        self.vdd_offset_v = float(rng.standard_normal() * p.dimm_sigma_v)
        self.timing_offset_ns = float(rng.standard_normal() * p.dimm_sigma_ns)
        self.retention_offset_decades = float(rng.standard_normal() * p.retention_dimm_sigma_decades)
        # Chip level: a latent offset and a timing onset offset per x8 chip (byte lane).
        self.chip_latent = rng.standard_normal(self.n_chips) * math.sqrt(p.chip_var)
        self.chip_timing_ns = rng.standard_normal(self.n_chips) * p.chip_sigma_ns
        # Bank level and the bitline levels of every bank.
        self.bank_offset = rng.standard_normal(g.banks) * math.sqrt(p.bank_var)
        levels = ndtri((np.arange(_N_LEVELS) + 0.5) / _N_LEVELS)
        self.level_offset = levels / levels.std() * math.sqrt(p.bitline_var)
        # Equiprobable levels, exactly n_bits / 16 bitlines each (in random places) per bank.
        ranks = np.argsort(rng.random((g.banks, self.n_bits)), axis=1)
        self.bitline_level = np.empty((g.banks, self.n_bits), np.uint8)
        np.put_along_axis(
            self.bitline_level, ranks, (np.arange(self.n_bits) * _N_LEVELS // self.n_bits).astype(np.uint8)[None, :], 1
        )
        if p.orientation == "bitline":
            self.bitline_true = rng.integers(0, 2, (g.banks, self.n_bits), dtype=np.uint8).astype(bool)
        else:
            self.bitline_true = None
        self._row_block_flip = int(rng.integers(0, 2))
        self.own_sd = math.sqrt(p.cell_var)
        self._bit_chip = (np.arange(self.n_bits) >> 3) % self.n_chips
        self._true_bytes: dict[int, np.ndarray] = {}
        self._all_true = np.full(g.row_bytes, 0xFF, np.uint8)
        self._all_anti = np.zeros(g.row_bytes, np.uint8)
        self._row_offsets: dict[int, np.ndarray] = {}
        self._col_offsets: dict[int, np.ndarray] = {}
        self._col_max: dict[int, float] = {}
        self._weak: OrderedDict[tuple[int, int, int], WeakCells] = OrderedDict()
        self._settings: dict[tuple, _Setting] = {}
        self._setting_ids: dict[tuple, int] = {}
        self._next_ident = itertools.count()
        self.under_restored: dict[tuple[int, int], float] = {}
        self._activations = 0
        self._noise_seed = 0
        self._max_offset = 2.0 * p.coupling_per_aggressor
        self._headroom = math.exp(_NOISE_SPAN * max(p.read_noise_voltage, p.read_noise_timing))
        self._strata: dict[int, list[tuple[np.ndarray, float]]] = {}

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

    def row_offsets(self, bank: int) -> np.ndarray:
        """Latent offset shared by each row's cells in ``bank``: bank, row stripes, subarray, distance."""
        rows = self._row_offsets.get(bank)
        if rows is not None:
            return rows
        p, g = self.profile, self.geometry
        shared = _normals(_key(self.seed, self._pid, 0xA0), g.rows)
        own = _normals(_key(self.seed, self._pid, 0xA1, bank), g.rows)
        row_part = math.sqrt(p.row_var) * (math.sqrt(p.row_shared_frac) * shared + math.sqrt(1 - p.row_shared_frac) * own)
        n_sub = -(-g.rows // p.subarray_rows)
        sub = _normals(_key(self.seed, self._pid, 0xA2, bank), n_sub) * math.sqrt(p.subarray_var)
        index = np.arange(g.rows)
        # Distance from the sense amplifiers: the same in every subarray, bank and DIMM of the
        # design (DIVA), uniform over the subarray's rows, scaled to unit variance.
        frac = (index % p.subarray_rows) / max(1, p.subarray_rows - 1)
        distance = (frac - 0.5) * math.sqrt(12.0) * math.sqrt(p.distance_var)
        rows = self.bank_offset[bank] + row_part + sub[index // p.subarray_rows] + distance
        self._row_offsets[bank] = rows
        return rows

    def row_offset(self, bank: int, row: int) -> float:
        """Latent offset shared by the cells of one row."""
        return float(self.row_offsets(bank)[row])

    def column_offsets(self, bank: int) -> np.ndarray:
        """Latent offset of every bit position of ``bank``: its bitline level plus its chip."""
        cols = self._col_offsets.get(bank)
        if cols is None:
            cols = self.level_offset[self.bitline_level[bank]] + self.chip_latent[self._bit_chip]
            self._col_offsets[bank] = cols
            self._col_max[bank] = float(cols.max())
        return cols

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

    def weak_cells(self, bank: int, row: int, mechanism: int, n: int | None = None) -> WeakCells:
        """The weakest of ``n`` cells (default: the whole row) for one mechanism and stratum
        (``mechanism`` carries the stratum above its low byte); cached for the last rows used."""
        key = (bank, row, mechanism)
        weak = self._weak.get(key)
        if weak is not None:
            self._weak.move_to_end(key)
            return weak
        weak = WeakCells(self._row_key ^ (mechanism << 48 | bank << 32 | row), self.n_bits if n is None else n)
        self._weak[key] = weak
        if len(self._weak) > _ROW_CACHE:
            self._weak.popitem(last=False)
        return weak

    # Probabilities ----------------------------------------------------------------------

    def equivalent_vdd_v(self, vdd_v: float, latency_ns: float, temp_c: float) -> float:
        """The VDD the voltage curve is read at for this DIMM (offset, floor, latency, temperature)."""
        p = self.profile
        shifted = vdd_v - self.vdd_offset_v
        return p.equivalent_vdd_v(shifted, latency_ns, temp_c, p.vdd_floor_v)

    def voltage_probability(self, vdd_v: float, latency_ns: float, temp_c: float) -> float:
        """Marginal failure probability of the voltage-latency mechanism on this DIMM (solid data)."""
        return self.profile.p_voltage(self.equivalent_vdd_v(vdd_v, latency_ns, temp_c))

    def timing_probability(self, which: str, t_ns: float, vdd_v: float, temp_c: float) -> np.ndarray:
        """Marginal failure probability of the timing-margin mechanism per chip."""
        p = self.profile
        return np.array(
            [p.p_timing(which, t_ns, vdd_v, temp_c, self.timing_offset_ns + off) for off in self.chip_timing_ns]
        )

    def _setting(self, vdd_v: float, temp_c: float, trcd_cycles: int, trp_cycles: int, tras_prev: float | None) -> _Setting:
        key = (vdd_v, temp_c, trcd_cycles, trp_cycles, tras_prev)
        setting = self._settings.get(key)
        if setting is not None:
            return setting
        p, tck = self.profile, self.tck_ns
        trcd_ns, trp_ns = trcd_cycles * tck, trp_cycles * tck
        p_v = self.voltage_probability(vdd_v, min(trcd_ns, trp_ns), temp_c)
        keep = 1.0 - self.timing_probability("trp", trp_ns, vdd_v, temp_c)
        if tras_prev is not None:
            keep = keep * (1.0 - self.timing_probability("tras", tras_prev, vdd_v, temp_c))
        p_rcd = self.timing_probability("trcd", trcd_ns, vdd_v, temp_c)
        bias = np.array([1.0 + p.rcd_anti_bias, 1.0 - p.rcd_anti_bias])[:, None]  # [anti, true]
        p_t = 1.0 - keep[None, :] * (1.0 - np.minimum(1.0, p_rcd[None, :] * bias))
        thr_v = float(-ndtri(p_v)) if p_v > 0 else math.inf
        thr_t = np.where(p_t > 0, -ndtri(np.clip(p_t, 1e-300, 1 - 1e-16)), math.inf)
        values = (round(thr_v, 12), tuple(np.round(thr_t, 12).ravel()))
        ident = self._setting_ids.get(values)
        if ident is None:  # idents are never reused, so an open row's cached views stay valid
            ident = self._setting_ids[values] = next(self._next_ident)
        setting = _Setting(ident, thr_v, thr_t)
        if len(self._settings) > 65536:
            self._settings.clear()
            self._setting_ids.clear()
        self._settings[key] = setting
        return setting

    # Access events ----------------------------------------------------------------------

    def activate(self, bank: int, row: int, trp_cycles: int) -> RowAccess:
        data = self._rows.get((bank, row))
        stored = data is not None
        if data is None:
            data = self.power_up_content(bank, row)
        access = _PhysicsRow(self, bank, row, trp_cycles, data, stored)
        self._retention(access)
        return access

    def _retention(self, access: _PhysicsRow) -> None:
        """Charge lost while the row went unrestored is written into it; the row is restored now."""
        p = self.profile
        if not math.isfinite(p.retention_log10_s):
            return
        clock = self.refresh_clock
        unrestored_s = clock.unrestored_ns(access.bank, access.row, self.now_ns) * 1e-9
        clock.restore(access.bank, access.row, self.now_ns)
        p_ret = p.p_retention(unrestored_s, access.temp_c, self.retention_offset_decades)
        if p_ret * self.n_bits < _NEGLIGIBLE:
            return
        _, pos = self.weak_cells(access.bank, access.row, MECH_RETENTION).up_to(p_ret)
        if pos.size == 0:
            return
        byte, bit = pos >> 3, (pos & 7).astype(np.uint8)
        value = (access.data[byte] >> bit) & 1
        true_cells = self.row_true_cells(access.bank, access.row)
        charged_value = true_cells[pos] if not isinstance(true_cells, bool) else np.full(pos.size, true_cells)
        lost = value == charged_value.astype(np.uint8)
        if not lost.any():
            return
        if not access.stored:
            self._store_access(access)
        np.bitwise_xor.at(access.data, byte[lost], (np.uint8(1) << bit[lost]).astype(np.uint8))

    def strata(self, bank: int) -> list[tuple[np.ndarray, float]]:
        """The bank's bits grouped by bitline level (:data:`_STRATA` groups): (bit positions,
        the group's largest column offset).  Weak cells are drawn per group, so that a
        setting's bound is tight for the many cells on strong bitlines."""
        groups = self._strata.get(bank)
        if groups is None:
            cols = self.column_offsets(bank)
            level = self.bitline_level[bank]
            groups = []
            for first, last in _STRATA:
                bits = np.flatnonzero((level >= first) & (level <= last))
                groups.append((bits, float(cols[bits].max()) if bits.size else -math.inf))
            self._strata[bank] = groups
        return groups

    def _weak_in(self, bank: int, row: int, mech: int, thr: float, a: float, headroom: float) -> list:
        """(uniforms, positions) of the row's candidates of one mechanism, stratum by stratum."""
        out = []
        if not math.isfinite(thr):
            return out
        for k, (bits, top) in enumerate(self.strata(bank)):
            bound = 0.5 * math.erfc((thr - a - top - self._max_offset) / (self.own_sd * _SQRT2)) * headroom
            if bound * bits.size < _NEGLIGIBLE:
                continue
            u, local = self.weak_cells(bank, row, mech + (k << 8), bits.size).up_to(min(bound, 1.0))
            if u.size:
                out.append((u, bits[local], bound))
        return out

    def _candidates(self, access: _PhysicsRow, setting: _Setting) -> tuple | None:
        """Cells of the open row that can fail at ``setting`` (jitter headroom included).

        Returns (positions, uniforms, latent offsets, mechanism is voltage, chip,
        orientation index, jitter) or None.  Computed once per activation for the
        harshest setting seen so far; a later read at a milder setting reuses it.
        """
        p = self.profile
        bank, row = access.bank, access.row
        cached = access.candidates
        if cached is not None and cached[0] <= setting.thr_v and cached[1] <= setting.thr_t_min:
            return cached[2]
        a = self.row_offset(bank, row)
        headroom = self._headroom
        parts_v = self._weak_in(bank, row, MECH_VOLTAGE, setting.thr_v, a, headroom)
        parts_t = self._weak_in(bank, row, MECH_TIMING, setting.thr_t_min, a, headroom)
        if not parts_v and not parts_t:
            access.candidates = (setting.thr_v, setting.thr_t_min, None)
            return None
        parts = parts_v + parts_t
        if len(parts) == 1:
            u, pos = parts[0][0], parts[0][1]
        else:
            u = np.concatenate([x[0] for x in parts])
            pos = np.concatenate([x[1] for x in parts])
        n_v = sum(x[0].size for x in parts_v)
        is_v = np.arange(u.size) < n_v
        # Structural offset and data coupling per candidate (the data as it is in the row now).
        offset = a + self._col_offsets[bank][pos]
        if p.coupling_per_aggressor:
            offset += p.coupling_per_aggressor * _AGGRESSORS[access.data[pos >> 3], pos & 7]
        true_cells = self.row_true_cells(bank, row)
        orient = true_cells[pos].astype(np.intp) if not isinstance(true_cells, bool) else int(true_cells)
        if access.activation_id is None:
            self._activations += 1
            access.activation_id = self._activations
        result = (pos, u, offset, is_v, self._bit_chip[pos], orient)
        access.candidates = (setting.thr_v, setting.thr_t_min, result)
        return result

    def failing_bits(self, access: _PhysicsRow, setting: _Setting) -> np.ndarray:
        """Bit positions of the open row's cells that fail at ``setting``, this activation."""
        cand = self._candidates(access, setting)
        if cand is None:
            return np.zeros(0, np.int64)
        pos, u, offset, is_v, chip, orient = cand
        p = self.profile
        if isinstance(orient, int) and not is_v.any():
            thr = setting.thr_t[orient, chip]
        else:
            thr = np.where(is_v, setting.thr_v, setting.thr_t[orient, chip])
        limit = ndtr((offset - thr) / self.own_sd)
        fails = u < limit
        # Read jitter, drawn only for the cells close enough to their threshold to feel it.
        near = np.flatnonzero((u < limit * self._headroom) & (u * self._headroom > limit))
        if near.size and (p.read_noise_voltage or p.read_noise_timing):
            base = splitmix64(splitmix64(self._noise_seed) ^ access.activation_id) ^ self._row_key ^ (
                access.bank << 32 | access.row
            )
            g = np.clip(ndtri(_hash_uniform(base, pos[near])), -_NOISE_SPAN, _NOISE_SPAN)
            noise = np.where(is_v[near], p.read_noise_voltage, p.read_noise_timing)
            fails[near] = u[near] < limit[near] * np.exp(noise * g)
        return pos[fails]

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        index = self._read_index[column]
        if not isinstance(access, _PhysicsRow):
            return access.data[index].tobytes()
        setting = self._setting(access.vdd_v, access.temp_c, trcd_cycles, access.trp_cycles, access.tras_prev_ns)
        if not setting.active:
            return access.data[index].tobytes()
        view = access.views.get(setting.ident)
        if view is None:
            failing = self.failing_bits(access, setting)
            view = access.data
            if failing.size:
                byte, bit = failing >> 3, (failing & 7).astype(np.uint8)
                # A failing cell flips only if it holds its charged value: 1 in a true cell, 0 in an anti cell.
                charged = ~(access.data[byte] ^ self.true_cell_bytes(access.bank, access.row)[byte])
                flip = (charged >> bit) & 1
                if flip.any():
                    view = access.data.copy()
                    np.bitwise_xor.at(view, byte[flip == 1], (np.uint8(1) << bit[flip == 1]).astype(np.uint8))
            access.views[setting.ident] = view
        return view[index].tobytes()

    def write_burst(self, access: RowAccess, column: int, burst: bytes, trcd_cycles: int) -> None:
        super().write_burst(access, column, burst, trcd_cycles)
        if isinstance(access, _PhysicsRow):  # the data changed: reads see the new bytes and coupling
            access.views.clear()
            access.candidates = None

    def precharge(self, access: RowAccess, tras_cycles: int) -> None:
        if not isinstance(access, _PhysicsRow):
            return
        key = (access.bank, access.row)
        tras_ns = tras_cycles * self.tck_ns
        safe = self.profile.safe_ns("tras", access.vdd_v, access.temp_c) + self.timing_offset_ns + float(
            self.chip_timing_ns.max()
        )
        if tras_ns < safe:
            self.under_restored[key] = tras_ns
        else:
            self.under_restored.pop(key, None)

    # Analysis (for calibration and tests: what the model predicts, without reading) ---------

    def expected_line_fraction(
        self, vdd_v: float, latency_ns: float = 10.0, temp_c: float = 20.0, banks: tuple[int, ...] | None = None
    ) -> float:
        """Expected fraction of 64-byte lines with an error under all-ones data (voltage mechanism).

        Averages over this DIMM's rows (its bank, row, subarray and distance offsets),
        with the line's 512 bits' own, bitline and chip parts treated as independent:
        the quantity Voltron's data report, predicted at full resolution.
        """
        p_v = self.voltage_probability(vdd_v, latency_ns, temp_c)
        if p_v <= 0:
            return 0.0
        thr = float(-ndtri(p_v))
        banks = tuple(range(self.geometry.banks)) if banks is None else banks
        row_a = np.concatenate([self.row_offsets(b) for b in banks])
        # Non-shared structure (bitline, chip) plus own variance, per cell.
        other_sd = math.sqrt(self.own_sd**2 + self.profile.bitline_var + self.profile.chip_var)
        p_cell = ndtr((row_a - thr) / other_sd)
        if self.bitline_true is None:  # row-block orientation: only the true rows hold charged ones
            rows = np.tile(np.arange(self.geometry.rows), len(banks))
            true_rows = (rows // self.profile.orientation_block_rows + self._row_block_flip) % 2 == 0
            n = np.where(true_rows, 8 * BURST_BYTES, 0)
        else:
            n = np.full(row_a.size, 4 * BURST_BYTES)
        p_line = -np.expm1(n * np.log1p(-np.minimum(p_cell, 1 - 1e-16)))
        return float(p_line.mean())
