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

How it is computed (none of it changes what is read).  A run of read bursts of
an open row is one call (:meth:`PhysicsDimm.read_bursts`): the setting is looked
up once per distinct tRCD below :meth:`PhysicsDimm.trcd_flat_cycles` (past it
every tRCD reads alike) and the row as read at that setting is worked out once
and gathered.  When rows are read in sequence (a bank read), the weak cells of
the next rows are drawn together in one vectorised pass, the same cells and
uniforms to the bit as row by row, and their reads at the same setting are
prepared ahead: the jitter with the activation numbers the rows will get, the
failures with the data they hold now.  A prepared read is used only if the
setting, the jitter stream, the activation number and the candidates' bytes are
still those; otherwise the row is worked out when it is read.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections import OrderedDict
from typing import Callable

import numpy as np
from scipy.special import erfc, ndtr, ndtri

from emubench.dimm import ML605_GEOMETRY, EmulatedDimm, Geometry, RowAccess, _own
from emubench.profiles import VendorProfile
from firmware_bridge.protocol import BURST_BYTES
from softmc_host.splitmix import mix64_array, splitmix64
from softmc_host.timing import ML605_TCK_NS

__all__ = ["PhysicsDimm", "Environment", "WeakCells", "MECH_VOLTAGE", "MECH_TIMING", "MECH_RETENTION"]

Environment = Callable[[], "tuple[float, float]"]  # () -> (vdd_v, temp_c)

_N_LEVELS = 16  # bitline offsets are quantised to this many levels
_NOISE_SPAN = 4.0  # read jitter is truncated at this many sigma
_STRATA = ((0, 7), (8, 15))  # bitline levels drawn together
_ROW_CACHE = 1024  # rows whose weak-cell lists are kept
_READAHEAD_ROWS = 256  # most rows one readahead block draws
_READAHEAD_CACHE = 1024  # rows whose readahead candidates are kept
_READAHEAD_CELLS = 1 << 18  # most weak cells one readahead block draws
_READAHEAD_ROW_CELLS = 32768  # rows drawing more weak cells than this are drawn alone
_DRAW_ALONE = object()  # a readahead entry for a row whose cells are drawn one row at a time
_NEGLIGIBLE = 1e-9  # expected failing cells per row below which a row is not examined
MECH_VOLTAGE, MECH_TIMING, MECH_RETENTION = 0x56, 0x54, 0x52
_NO_FLAT = 1 << 62  # tRCD cycles that never come: every tRCD is a setting of its own
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
_S11, _S27, _S30, _S31 = (np.uint64(k) for k in (11, 27, 30, 31))


def _hash_uniform(base: int | np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) from SplitMix64's finaliser of ``base + index * golden`` (vectorised;
    ``base`` a Python integer or a uint64 array broadcast against ``index``).

    A counter-based stream: element ``i`` depends only on ``base`` and ``i``, so a
    sequence can be extended or read at any index without a generator object.
    """
    z = index.astype(np.uint64) * _GOLDEN  # arrays wrap modulo 2**64 silently
    if isinstance(base, np.ndarray):
        z = z + base  # (broadcast: one base per row of a grid)
    else:
        z += np.uint64(base & _MASK64)
    t = np.empty_like(z)  # one scratch array for the shifts, instead of a new one per step
    np.right_shift(z, _S30, out=t)
    z ^= t
    z *= _MIX1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _MIX2
    np.right_shift(z, _S31, out=t)
    z ^= t
    z >>= _S11
    u = z.astype(np.float64)
    u += 0.5
    u *= 1.0 / (1 << 53)
    return u


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


class _Slice:
    """One row's part of the candidate arrays of a block (the rows' candidates, row by row)."""

    __slots__ = ("arrays", "start", "end")

    def __init__(self, arrays: tuple, start: int, end: int) -> None:
        self.arrays, self.start, self.end = arrays, start, end

    def get(self) -> tuple:
        """(positions, uniforms, offsets, is voltage, chip, orientation, byte, bit, mask) of the row."""
        sl = slice(self.start, self.end)
        return tuple(None if a is None else a[sl] for a in self.arrays)


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
        self._infos: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}
        self._weak: OrderedDict[tuple[int, int, int], WeakCells] = OrderedDict()
        self._weak_rows: dict[tuple[int, int], int] = {}  # (bank, row) -> its voltage/timing draws in _weak
        self._readahead: OrderedDict[tuple[int, int], tuple] = OrderedDict()  # (bank, row) -> (thr_v, thr_t_min, base)
        self._sequence = (-1, -1, 0)  # bank and row of the last candidates drawn, and the run of consecutive rows
        self._prepared: OrderedDict[tuple[int, int], tuple] = OrderedDict()  # (bank, row) -> a read _prepare made
        self._power_up: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # power-up content made ahead
        self._assembled: tuple | None = None  # the arrays of the last _assemble, row by row
        self._block_arrays: tuple = ([], None)  # the rows and arrays of the last readahead block
        self._readahead_rows = _READAHEAD_CACHE  # rows the readahead caches keep (two blocks)
        self._settings: dict[tuple, _Setting] = {}
        self._trcd_flat: dict[tuple, int] = {}
        self._retention_quick: dict[float, float] = {}  # temperature -> unrestored s examined from
        self._tras_safe: dict[tuple[float, float], float] = {}  # (VDD, temperature) -> tRAS onset in ns
        self._setting_ids: dict[tuple, int] = {}
        self._next_ident = itertools.count()
        self.under_restored: dict[tuple[int, int], float] = {}
        self._activations = 0
        self._noise_seed = 0
        self._max_offset = 2.0 * p.coupling_per_aggressor
        # The coupling shift per (byte value, bit): coupling_per_aggressor times the aggressors.
        self._coupling = p.coupling_per_aggressor * _AGGRESSORS if p.coupling_per_aggressor else None
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

    def _cell_info(self, bank: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Per bit of ``bank``, one small number: the index of its (bitline level, chip) pair,
        plus ``flag`` if it is a true cell (bitline orientation); each pair's column offset
        (the same number :meth:`column_offsets` gives its bits); and ``flag``.  A lookup in a
        table this small stays in the cache, unlike one in the per-bit tables."""
        found = self._infos.get(bank)
        if found is None:
            pairs = _N_LEVELS * self.n_chips
            flag = 1 << max(0, (pairs - 1).bit_length())
            info = self.bitline_level[bank].astype(np.int64) * self.n_chips + self._bit_chip
            if self.bitline_true is not None:
                info += self.bitline_true[bank] * flag
            levels, chips = np.divmod(np.arange(pairs), self.n_chips)
            dtype = np.uint8 if 2 * flag <= 256 else np.uint16 if 2 * flag <= 65536 else np.int64
            found = self._infos[bank] = (info.astype(dtype), self.level_offset[levels] + self.chip_latent[chips], flag)
        return found

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
        if mechanism & 0xFF != MECH_RETENTION:
            self._weak_rows[(bank, row)] = self._weak_rows.get((bank, row), 0) + 1
        if len(self._weak) > _ROW_CACHE:
            (old_bank, old_row, old_mechanism), _ = self._weak.popitem(last=False)
            if old_mechanism & 0xFF != MECH_RETENTION:
                left = self._weak_rows.pop((old_bank, old_row)) - 1
                if left:
                    self._weak_rows[(old_bank, old_row)] = left
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
        ahead = self._power_up.pop((bank, row), None) if self._power_up else None
        if data is None:
            data = ahead if ahead is not None else self.power_up_content(bank, row)
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
        quick = self._retention_quick.get(access.temp_c)
        if quick is None:
            # Below this time unrestored, p_retention * n_bits stays under _NEGLIGIBLE (it rises
            # with the time): the row is skipped without the normal tail; a margin of 1e-6 keeps
            # rounding on the side of working it out.
            z = float(ndtri(_NEGLIGIBLE / self.n_bits))
            log10_s = z * p.retention_sigma_decades + p.retention_log10_s_at(access.temp_c) + self.retention_offset_decades
            quick = 10.0**log10_s * (1.0 - 1e-6)
            if len(self._retention_quick) > 4096:
                self._retention_quick.clear()
            self._retention_quick[access.temp_c] = quick
        if unrestored_s < quick:
            return
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

        Returns (positions, uniforms, latent offsets, mechanism is voltage (None: all are),
        chip, orientation (1 = true cell), byte, holds its charged value, bit mask in the
        byte) or None when the row has no weak cell near the setting.  Computed once per
        activation for the harshest setting seen so far; a later read at a milder setting
        reuses it.  Only the data-dependent part (the coupling of each candidate to its
        neighbours' values, whether it holds its charged value) is worked out here; the rest
        comes from :meth:`_candidate_base`.
        """
        cached = access.candidates
        if cached is not None and cached[0] <= setting.thr_v and cached[1] <= setting.thr_t_min:
            return cached[2]
        base = self._candidate_base(access, setting)
        if base is None:
            access.candidates = (setting.thr_v, setting.thr_t_min, None)
            return None
        pos, u, offset, is_v, chip, orient, byte, bit, mask = base
        held = access.data[byte]  # the data as it is in the row now
        if self._coupling is not None:
            offset = offset + self._coupling[held, bit]
        # A failing cell flips only if it holds its charged value: 1 in a true cell, 0 in an anti cell.
        charged = ((held >> bit) & 1) == orient
        if access.activation_id is None:
            self._activations += 1
            access.activation_id = self._activations
        result = (pos, u, offset, is_v, chip, orient, byte, charged, mask)
        access.candidates = (setting.thr_v, setting.thr_t_min, result)
        return result

    def _candidate_base(self, access: _PhysicsRow, setting: _Setting) -> tuple | None:
        """The data-independent part of the open row's candidates at ``setting``, or None.

        A row read right after its predecessor (a sequential read of a bank) gets its
        candidates from a readahead block: the weak cells of the next rows are drawn for
        the same thresholds in one vectorised pass (:meth:`_candidate_block`), the same
        cells a row-by-row draw gives, and the reads of those rows at the same setting are
        prepared (:meth:`_prepare`); a block grows as the run goes on.  Other rows draw
        theirs one by one (:meth:`weak_cells`, extending the cached draws).
        """
        bank, row, thr_v, thr_t_min = access.bank, access.row, setting.thr_v, setting.thr_t_min
        key = (bank, row)
        seq = self._sequence
        run = seq[2] + 1 if seq[0] == bank and row == seq[1] + 1 else 1
        self._sequence = (bank, row, run)
        hit = self._readahead.get(key)
        # Drawn for these thresholds; or for harsher ones once this activation has its candidates
        # (a superset of the cells that can fail, as a milder read of the open row reuses).
        if hit is not None and (
            (hit[0] == thr_v and hit[1] == thr_t_min)
            or (access.activation_id is not None and hit[0] <= thr_v and hit[1] <= thr_t_min)
        ):
            if hit[2] is not _DRAW_ALONE:
                return None if hit[2] is None else hit[2].get()
        elif run >= 2:
            count = min(_READAHEAD_ROWS, 4 * run, self.geometry.rows - row)
            rows = [r for r in range(row, row + count) if not self._has_cached_draw(bank, r)]
            entries = self._candidate_block(bank, rows, thr_v, thr_t_min) if rows and rows[0] == row else {}
            if entries:
                cache = self._readahead
                for r in range(row, max(entries) + 1):  # rows with cached draws among them: drawn alone
                    cache[(bank, r)] = (thr_v, thr_t_min, entries.get(r, _DRAW_ALONE))
                    cache.move_to_end((bank, r))
                # Rows of this block and the previous one at most: a block's arrays (held by its
                # rows' entries) are as large as its weak cells, which a harsh setting makes many.
                self._readahead_rows = limit = min(_READAHEAD_CACHE, 2 * (max(entries) + 1 - row))
                while len(cache) > limit:
                    cache.popitem(last=False)
                self._prepare(access, setting, entries)
                if entries[row] is not _DRAW_ALONE:
                    return None if entries[row] is None else entries[row].get()
        a = self.row_offset(bank, row)
        parts = self._weak_in(bank, row, MECH_VOLTAGE, thr_v, a, self._headroom)
        n_voltage = len(parts)
        parts += self._weak_in(bank, row, MECH_TIMING, thr_t_min, a, self._headroom)
        if not parts:
            return None
        flat = [(np.zeros(x[0].size, np.intp), x[0], x[1], k < n_voltage) for k, x in enumerate(parts)]
        return self._assemble(bank, [row], flat, thr_v, thr_t_min, prune=True)[row].get()

    def _prepare(self, access: _PhysicsRow, setting: _Setting, entries: dict) -> None:
        """Work out, for the rows of a readahead block after the open one, their reads at ``setting``.

        Each row's activation number is predicted (the rows activated in order, one number per
        row with candidates, as :meth:`_candidates` hands them out) and its data taken as it is
        now (a never-written row's power-up content is made now and kept for its activation).
        The jitter, failures and flips are then the same elementwise arithmetic as
        :meth:`_failing` and :meth:`_view`, over all the rows at once.  A prepared read is used
        only if, when the row is read, the setting, the jitter stream, the activation number
        and the bytes of the candidates are what they were predicted to be (:meth:`_view`).
        """
        bank, row = access.bank, access.row
        following = sorted(r for r in entries if r > row)
        if not following:
            return
        number = self._activations + (1 if access.activation_id is None and entries[row] is not None else 0)
        prepared = self._prepared
        rows, numbers, bases = [], [], []
        for r in following:
            entry = entries[r]
            if entry is None:
                prepared[(bank, r)] = (setting.ident, self._noise_seed, 0, None, None, None, None)
                continue
            number += 1  # a row drawn alone has candidates too (it is heavy, or its draw is long)
            if entry is _DRAW_ALONE:
                continue
            rows.append(r)
            numbers.append(number)
        block_rows, arrays = self._block_arrays
        if rows and arrays is not None:
            stream = splitmix64(self._noise_seed)
            for r, n in zip(rows, numbers):
                bases.append(splitmix64(stream ^ n) ^ self._row_key ^ (bank << 32 | r))
            # The elements of these rows (in block order, row by row), and which of them each is.
            at = {r: i for i, r in enumerate(block_rows)}
            where = np.array([at[r] for r in rows], np.intp)
            which = np.full(len(block_rows), -1, np.intp)
            which[where] = np.arange(len(rows))
            keep = np.flatnonzero(which[arrays[0]] >= 0)
            member = which[arrays[0][keep]]
            pos, u, offset, is_v, chip, orient, byte, bit, mask = (
                None if x is None else x[keep] for x in arrays[1:]
            )
            sizes = np.bincount(member, minlength=len(rows)).tolist()
            datas = []
            for r in rows:
                data = self._rows.get((bank, r))
                if data is None:
                    data = self._power_up.get((bank, r))
                    if data is None:
                        data = self._power_up[(bank, r)] = self.power_up_content(bank, r)
                datas.append(data)
            row_bytes = self.geometry.row_bytes
            held = np.stack(datas).reshape(-1)[member * row_bytes + byte]
            if self._coupling is not None:
                offset = offset + self._coupling[held, bit]
            charged = ((held >> bit) & 1) == orient
            thr = setting.thr_v if is_v is None else np.where(is_v, setting.thr_v, setting.thr_t[orient, chip])
            limit = ndtr((offset - thr) / self.own_sd)
            fails = u < limit
            near = np.flatnonzero((u < limit * self._headroom) & (u * self._headroom > limit))
            p = self.profile
            if near.size and (p.read_noise_voltage or p.read_noise_timing):
                base = np.array(bases, np.uint64)[member[near]]
                g = np.minimum(np.maximum(ndtri(_hash_uniform(base, pos[near])), -_NOISE_SPAN), _NOISE_SPAN)
                noise = p.read_noise_voltage if is_v is None else np.where(is_v[near], p.read_noise_voltage,
                                                                           p.read_noise_timing)
                fails[near] = u[near] < limit[near] * np.exp(noise * g)
            flip = np.flatnonzero(fails & charged)
            flip_byte, flip_mask = byte[flip], mask[flip]
            ends = np.cumsum(sizes)
            flip_ends = np.searchsorted(flip, ends).tolist()
            start = flip_start = 0
            for r, n, end, flip_end in zip(rows, numbers, ends.tolist(), flip_ends):
                prepared[(bank, r)] = (setting.ident, self._noise_seed, n, byte[start:end],
                                       held[start:end].tobytes(), flip_byte[flip_start:flip_end],
                                       flip_mask[flip_start:flip_end])
                start, flip_start = end, flip_end
        for cache in (prepared, self._power_up):
            while len(cache) > self._readahead_rows:
                cache.popitem(last=False)

    def _prepared_view(self, access: _PhysicsRow, setting: _Setting) -> np.ndarray | None:
        """The view :meth:`_prepare` worked out for this read, if it still holds (else None)."""
        pre = self._prepared.pop((access.bank, access.row), None)
        if pre is None or pre[0] != setting.ident or pre[1] != self._noise_seed or access.activation_id is not None:
            return None
        ident, seed, number, byte, held, flip_byte, flip_mask = pre
        if number and (number != self._activations + 1 or access.data[byte].tobytes() != held):
            return None
        seq = self._sequence  # the run of sequential rows goes on, as if the row had drawn its cells
        run = seq[2] + 1 if seq[0] == access.bank and access.row == seq[1] + 1 else 1
        self._sequence = (access.bank, access.row, run)
        if number == 0:  # no candidates
            access.candidates = (setting.thr_v, setting.thr_t_min, None)
            return access.data
        self._activations = number
        access.activation_id = number
        if flip_byte.size == 0:
            return access.data
        view = access.data.copy()
        np.bitwise_xor.at(view, flip_byte, flip_mask)
        return view

    def _has_cached_draw(self, bank: int, row: int) -> bool:
        """Whether a row has voltage or timing weak cells drawn and cached already (they are
        extended, not redrawn)."""
        return (bank, row) in self._weak_rows

    def _candidate_block(self, bank: int, rows: list[int], thr_v: float, thr_t_min: float) -> dict:
        """:meth:`_candidate_base` of the first of several rows of a bank and as many of the
        next as :data:`_READAHEAD_CELLS` weak cells allow: row -> base, None, or
        :data:`_DRAW_ALONE` for a row whose first draw needs more than one step (it is drawn
        one row at a time when read).
        """
        a = self.row_offsets(bank)[rows]
        spread, headroom = self.own_sd * _SQRT2, self._headroom
        mechanisms = [(m, thr, v) for m, thr, v in ((MECH_VOLTAGE, thr_v, True), (MECH_TIMING, thr_t_min, False))
                      if math.isfinite(thr)]
        # How many cells each row would draw (an estimate, to size the block); then, for the
        # rows the block takes, the bounds exactly as _weak_in computes them.
        drawn_cells = np.zeros(len(rows))
        for _, thr, _ in mechanisms:
            for bits, top in self.strata(bank):
                n = bits.size
                bound = np.minimum(0.5 * erfc((thr - a - top - self._max_offset) / spread) * headroom, 1.0)
                drawn_cells += np.minimum(n, 1.25 * n * bound + 32)
        # As many rows as the cell budget allows (at least the first); rows with many weak cells
        # near the setting are drawn one at a time (their cost is in the cells, not the calls).
        count = max(1, int(np.searchsorted(np.cumsum(drawn_cells), _READAHEAD_CELLS, side="right")))
        rows, a = rows[:count], a[:count]
        parts = []
        for mech, thr, is_voltage in mechanisms:
            for k, (bits, top) in enumerate(self.strata(bank)):
                n = bits.size
                bound = np.array([0.5 * math.erfc((thr - x - top - self._max_offset) / spread) * headroom
                                  for x in a.tolist()])
                parts.append((mech + (k << 8), bits, is_voltage, np.flatnonzero(bound * n >= _NEGLIGIBLE),
                              np.minimum(bound, 1.0)))
        heavy = drawn_cells[:count] > _READAHEAD_ROW_CELLS
        alone = {rows[i] for i in np.flatnonzero(heavy).tolist()}
        flat = []
        for mechanism, bits, is_voltage, drawn, clipped in parts:
            drawn = drawn[~heavy[drawn]]
            index, u, local, fallback = self._draw_block(bank, rows, drawn, clipped[drawn], mechanism, bits.size)
            alone.update(fallback)
            if index.size:
                flat.append((index, u, bits[local], is_voltage))
        entries = self._assemble(bank, rows, flat, thr_v, thr_t_min, prune=True)
        for r in alone:
            entries[r] = _DRAW_ALONE
        self._block_arrays = (rows, self._assembled)
        return entries

    def _draw_block(
        self, bank: int, rows: list[int], sel: np.ndarray, bound: np.ndarray, mechanism: int, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """The first draw of :meth:`WeakCells.up_to` for rows ``rows[sel]`` of one stratum, vectorised.

        ``bound`` is each row's bound (at most 1).  Returns, for the candidates of all rows (row
        by row, ascending uniforms): the index of the row in ``rows``, the uniform and the
        position in the stratum; and the rows whose draw does not reach their bound in one
        step (left to the row-by-row path).  Every step is the same arithmetic as a
        :class:`WeakCells` of the row, element by element (the running sum of each row is
        accumulated on its own, in order), so the cells and their uniforms are the same to the bit.
        """
        empty = (_EMPTY_POS, _EMPTY_U, _EMPTY_POS, [])
        if sel.size == 0:
            return empty
        row_ids = np.array(rows, np.uint64)[sel]
        raw = row_ids ^ np.uint64((self._row_key ^ (mechanism << 48 | bank << 32)) & _MASK64)
        key = mix64_array(raw + _GOLDEN)  # WeakCells' key: splitmix64 of the raw key
        # The smallest uniform of each row (WeakCells._first); near a tie, in plain Python as there.
        first = -np.expm1(np.log(_hash_uniform(key, np.zeros(1, np.uint64))) / n)
        for i in np.flatnonzero(np.abs(bound - first) <= 1e-9 * first).tolist():
            first[i] = WeakCells(int(raw[i]), n)._first
        go = np.flatnonzero(bound > first)
        if go.size == 0:
            return empty
        sel, bound, key = sel[go], bound[go], key[go]
        want = np.minimum(n, (1.25 * n * bound).astype(np.int64) + 32)
        fallback: list[int] = []
        members, uniforms, indices = [], [], []
        # Rows of similar draw length together (half octaves), so that padding the
        # (rows, length) grid to its longest row costs little.
        order = np.argsort(want, kind="stable")
        mantissa, octave = np.frexp(want[order].astype(np.float64))
        step = octave * 2 + (mantissa * 4).astype(np.int64)
        for group in np.split(order, np.flatnonzero(np.diff(step)) + 1):
            w, b = want[group], bound[group]
            length = int(w.max())
            index = np.arange(length)
            grid = _hash_uniform(key[group][:, None], index[None, :].astype(np.uint64))
            np.log(grid, out=grid)
            np.negative(grid, out=grid)
            grid /= n - index
            grid = np.cumsum(grid, axis=1)
            np.negative(grid, out=grid)
            np.expm1(grid, out=grid)
            np.negative(grid, out=grid)  # the uniforms, ascending along each row
            rows_in = np.arange(group.size)
            short = (grid[rows_in, w - 1] < b) & (w < n)  # up_to would draw again
            if short.any():
                fallback.extend(rows[i] for i in sel[group[short]].tolist())
            # Each row's candidates are a prefix of its draw: the uniforms below its bound.
            count = np.where(short, 0, np.minimum((grid < b[:, None]).sum(axis=1), w))
            total = int(count.sum())
            if total == 0:
                continue
            member = np.repeat(rows_in, count)
            j = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
            members.append(group[member])
            uniforms.append(grid.reshape(-1)[member * length + j])
            indices.append(j)
        if not members:
            return empty
        member = np.concatenate(members)
        local = self._permute_block(key, member, np.concatenate(indices), n)
        return sel[member], np.concatenate(uniforms), local, fallback

    @staticmethod
    def _permute_block(key: np.ndarray, member: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
        """:meth:`WeakCells._permute` of ``index[i]`` under the row key ``key[member[i]]``, elementwise."""
        bits = max(1, (n - 1).bit_length())
        mask = np.uint64((1 << bits) - 1)
        shift = np.uint64(max(1, bits // 2))
        rounds = []
        state = key
        for _ in range(2):  # WeakCells._rounds, one row per element of ``key``
            state = mix64_array(state + _GOLDEN)
            rounds.append((((state & mask) | np.uint64(1))[member], ((state >> np.uint64(32)) & mask)[member]))
        x = index.astype(np.uint64)
        for mul, add in rounds:
            x *= mul
            x += add
            x &= mask
            x ^= x >> shift
        if (1 << bits) != n:
            while True:  # cycle-walk into [0, n)
                outside = np.flatnonzero(x >= n)
                if outside.size == 0:
                    break
                y = x[outside]
                for mul, add in rounds:
                    y = (y * mul[outside] + add[outside]) & mask
                    y ^= y >> shift
                x[outside] = y
        return x.astype(np.int64)

    def _assemble(
        self, bank: int, rows: list[int], flat: list, thr_v: float, thr_t_min: float, prune: bool = False
    ) -> dict:
        """Per row, the data-independent candidate arrays from the draws of its mechanisms and strata.

        ``flat`` holds, per (mechanism, stratum) in the row-by-row order (voltage strata, then
        timing strata): the index in ``rows`` of each candidate, its uniform, bit position and
        whether it is a voltage draw.  A row that had candidates gets an entry (a
        :class:`_Slice` of the arrays, maybe empty), one that had none gets None.  With ``prune``, candidates that cannot fail nor feel
        jitter at these thresholds or any milder ones, whatever the data, are dropped: their
        uniform is above the largest limit the strongest coupling gives, with the jitter
        headroom (worth its pass over the cells when most of them are far from failing).
        """
        entries: dict[int, _Slice | None] = dict.fromkeys(rows)
        self._assembled = None
        if not flat:
            return entries

        def joined(k: int) -> np.ndarray:
            return flat[0][k] if len(flat) == 1 else np.concatenate([x[k] for x in flat])

        member, u, pos = joined(0), joined(1), joined(2)
        is_v = None if all(x[3] for x in flat) else np.concatenate([np.full(x[0].size, x[3]) for x in flat])
        had = np.bincount(member, minlength=len(rows)) > 0
        a = self.row_offsets(bank)[rows]
        info_table, pair_offset, flag = self._cell_info(bank)
        info = info_table[pos]
        pair = info & (flag - 1) if self.bitline_true is not None else info
        if prune:
            # The largest limit of a cell, whatever its neighbours hold, depends on its row and
            # its (bitline level, chip) pair only: bounded once per row and pair, looked up per
            # cell.  The bound is the normal tail's phi(z) / |z| (above the normal
            # distribution function for z <= -1), or 1.
            thresholds = np.array([thr_v] if is_v is None else [thr_v, thr_t_min])
            z = (a[None, :, None] + pair_offset[None, None, :] + self._max_offset - thresholds[:, None, None]) / self.own_sd
            tail = np.exp(-0.5 * z * z) / (np.sqrt(2.0 * np.pi) * np.maximum(-z, 1.0))
            largest = np.where(z <= -1.0, tail * (1.0 + 1e-6), 1.0) * self._headroom
            lookup = member * pair_offset.size + pair
            if is_v is not None:
                lookup += np.where(is_v, 0, len(rows) * pair_offset.size)
            keep = np.flatnonzero(u < largest.reshape(-1)[lookup])
            member, u, pos, info, pair = member[keep], u[keep], pos[keep], info[keep], pair[keep]
            if is_v is not None:
                is_v = is_v[keep]
        if len(rows) > 1:
            order = np.argsort(member, kind="stable")  # row by row, the parts in their order
            member, u, pos, info, pair = member[order], u[order], pos[order], info[order], pair[order]
            if is_v is not None:
                is_v = is_v[order]
        offset = a[member] + pair_offset[pair]  # = row offset + column_offsets(bank)[pos], to the bit
        chip = pair % self.n_chips
        if self.bitline_true is not None:
            orient = (info >= flag).view(np.uint8)
        else:
            orient = np.array([int(self.row_true_cells(bank, r)) for r in rows], np.uint8)[member]
        byte, bit = pos >> 3, (pos & 7).astype(np.uint8)
        mask = np.left_shift(np.uint8(1), bit)
        # The arrays of all rows, row by row, for _prepare (the entries are slices of them).
        self._assembled = (member, pos, u, offset, is_v, chip, orient, byte, bit, mask)
        arrays = (pos, u, offset, is_v, chip, orient, byte, bit, mask)
        ends = np.cumsum(np.bincount(member, minlength=len(rows))).tolist()
        start = 0
        for i, r in enumerate(rows):
            end = ends[i]
            if had[i]:
                entries[r] = _Slice(arrays, start, end)
            start = end
        return entries

    def _failing(self, access: _PhysicsRow, setting: _Setting) -> tuple | None:
        """The candidates (see :meth:`_candidates`) and which of them fail this activation."""
        cand = self._candidates(access, setting)
        if cand is None:
            return None
        pos, u, offset, is_v, chip, orient = cand[:6]
        p = self.profile
        if is_v is None:
            thr = setting.thr_v
        elif not is_v.any():
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
            g = np.minimum(np.maximum(ndtri(_hash_uniform(base, pos[near])), -_NOISE_SPAN), _NOISE_SPAN)  # clip
            noise = p.read_noise_voltage if is_v is None else np.where(is_v[near], p.read_noise_voltage, p.read_noise_timing)
            fails[near] = u[near] < limit[near] * np.exp(noise * g)
        return cand, fails

    def failing_bits(self, access: _PhysicsRow, setting: _Setting) -> np.ndarray:
        """Bit positions of the open row's cells that fail at ``setting``, this activation."""
        found = self._failing(access, setting)
        if found is None:
            return np.zeros(0, np.int64)
        return found[0][0][found[1]]

    def _view(self, access: _PhysicsRow, setting: _Setting) -> np.ndarray:
        """The open row as read at ``setting``: its data with the failing charged cells flipped
        (computed once per activation and setting, until the row is written)."""
        if not setting.active:
            return access.data
        view = access.views.get(setting.ident)
        if view is None and self._prepared:
            view = self._prepared_view(access, setting)
            if view is not None:
                access.views[setting.ident] = view
        if view is None:
            found = self._failing(access, setting)
            view = access.data
            if found is not None:
                cand, fails = found
                flip = np.flatnonzero(fails & cand[7])  # failing cells that hold their charged value
                if flip.size:
                    view = access.data.copy()
                    np.bitwise_xor.at(view, cand[6][flip], cand[8][flip])
            access.views[setting.ident] = view
        return view

    def read_burst(self, access: RowAccess, column: int, trcd_cycles: int) -> bytes:
        index = self._read_index[column]
        if not isinstance(access, _PhysicsRow):
            return access.data[index].tobytes()
        setting = self._setting(access.vdd_v, access.temp_c, trcd_cycles, access.trp_cycles, access.tras_prev_ns)
        return self._view(access, setting)[index].tobytes()

    def read_bursts(
        self, access: RowAccess, columns: np.ndarray, trcd_cycles: np.ndarray, now_ns: np.ndarray
    ) -> np.ndarray:
        """Several read bursts of one open row (see :meth:`EmulatedDimm.read_bursts`).

        The same bytes as :meth:`read_burst` burst by burst, computed once per distinct setting:
        a burst's tRCD matters only while it is below :meth:`trcd_flat_cycles`, so a row read at
        nominal timing is one setting, one view and one gather.
        """
        if not _own(self, "read_burst", PhysicsDimm.read_burst):
            return self._read_bursts_each(access, columns, trcd_cycles, now_ns)
        n = len(columns)
        if n == 0:
            return np.zeros(0, np.uint8)
        self.now_ns = float(now_ns[-1])
        if not isinstance(access, _PhysicsRow):
            return self._gather(access.data, columns)
        vdd_v, temp_c, trp, tras_prev = access.vdd_v, access.temp_c, access.trp_cycles, access.tras_prev_ns
        flat = self.trcd_flat_cycles(vdd_v, temp_c, trp)
        first = int(trcd_cycles[0])
        if n == 1 or (first >= flat and int(trcd_cycles.min()) >= flat):
            # One setting for the whole run (every tRCD at or past the flat point reads alike).
            return self._gather(self._view(access, self._setting(vdd_v, temp_c, first, trp, tras_prev)), columns)
        index = self._read_matrix[columns]
        effective = np.minimum(trcd_cycles, flat)
        values, first_at, inverse = np.unique(effective, return_index=True, return_inverse=True)
        views: list[np.ndarray] = []
        which = np.empty(values.size, np.intp)
        for k in np.argsort(first_at, kind="stable").tolist():  # settings in program order
            view = self._view(access, self._setting(vdd_v, temp_c, int(values[k]), trp, tras_prev))
            for j, seen in enumerate(views):
                if seen is view:
                    which[k] = j
                    break
            else:
                which[k] = len(views)
                views.append(view)
        if len(views) == 1:
            return views[0][index].reshape(-1)
        return np.stack(views)[which[inverse.reshape(-1)][:, None], index].reshape(-1)

    def trcd_flat_cycles(self, vdd_v: float, temp_c: float, trp_cycles: int) -> int:
        """The tRCD (cycles) from which longer tRCDs read alike at this VDD, temperature and tRP.

        At and past it the voltage mechanism's probability no longer changes (it sees
        ``min(tRCD, tRP)``, and is 0 from some latency on wherever the VDD is high enough), and
        the tRCD margin of every chip is at or past the margin curve's zero, so the setting no
        longer depends on tRCD.  Cached per (VDD, temperature, tRP).
        """
        key = (vdd_v, temp_c, trp_cycles)
        flat = self._trcd_flat.get(key)
        if flat is None:
            if len(self._trcd_flat) > 65536:
                self._trcd_flat.clear()
            flat = self._trcd_flat[key] = max(
                self._trcd_voltage_flat_cycles(vdd_v, temp_c, int(trp_cycles)), self._trcd_clean_cycles(vdd_v, temp_c)
            )
        return flat

    def _trcd_voltage_flat_cycles(self, vdd_v: float, temp_c: float, trp_cycles: int) -> int:
        """The fewest tRCD cycles from which the voltage mechanism reads alike at this tRP.

        The mechanism sees ``min(tRCD, tRP)``, so ``tRP`` always qualifies.  Its probability
        does not rise with a longer latency (on a voltage curve that does not rise with VDD),
        so once it is 0 it stays 0: the first tRCD where it is 0, found by bisection, also
        qualifies, and when it is the same at 1 cycle as at tRP, every tRCD does.  A row read
        at a VDD where the first bursts fail and the later ones cannot is then a few settings,
        not one per burst.
        """
        trp_cycles = max(0, int(trp_cycles))
        ys = tuple(getattr(getattr(self.profile, "vdd_curve", None), "log10_p", (0.0, 1.0)))
        if trp_cycles <= 1 or any(b > a for a, b in zip(ys, ys[1:])):
            return trp_cycles  # a curve that rises somewhere: no shortcut is safe

        def p_at(cycles: int) -> float:
            return self.voltage_probability(vdd_v, min(cycles, trp_cycles) * self.tck_ns, temp_c)

        at_trp = p_at(trp_cycles)
        if p_at(1) == at_trp:
            return 1  # the latency does not matter here (e.g. at or below the VDD floor)
        if at_trp > 0:
            return trp_cycles
        low, high = 1, trp_cycles  # p_at(low) > 0, p_at(high) == 0
        while high - low > 1:
            mid = (low + high) // 2
            if p_at(mid) > 0:
                low = mid
            else:
                high = mid
        return high

    def _trcd_clean_cycles(self, vdd_v: float, temp_c: float) -> int:
        """The fewest tRCD cycles from which no chip's tRCD margin can fail (``p_timing`` is 0)."""
        p, tck = self.profile, self.tck_ns
        zero_at = float(getattr(p.margin_curve, "zero_at", math.inf))
        if not math.isfinite(zero_at):
            return _NO_FLAT
        safe = p.safe_ns("trcd", vdd_v, temp_c)
        offsets = [self.timing_offset_ns + off for off in self.chip_timing_ns]  # as timing_probability adds them
        scale = p.margin_scale

        def clean(cycles: int) -> bool:  # the margin exactly as p_timing computes it, at or past the zero
            t_ns = cycles * tck
            return all((t_ns - safe - off) / scale >= zero_at for off in offsets)

        cycles = max(0, math.ceil((safe + max(offsets) + zero_at * scale) / tck))
        while cycles > 0 and clean(cycles - 1):
            cycles -= 1
        while not clean(cycles):
            cycles += 1
        if self.timing_probability("trcd", cycles * tck, vdd_v, temp_c).any():  # a curve that is not 0 past zero_at
            return _NO_FLAT
        return cycles

    def write_burst(self, access: RowAccess, column: int, burst: bytes, trcd_cycles: int) -> None:
        super().write_burst(access, column, burst, trcd_cycles)
        if isinstance(access, _PhysicsRow):  # the data changed: reads see the new bytes and coupling
            access.views.clear()
            access.candidates = None

    def write_bursts(
        self, access: RowAccess, columns: np.ndarray, bursts: np.ndarray, trcd_cycles: np.ndarray,
        now_ns: np.ndarray,
    ) -> None:
        """Several write bursts into one open row, in one scatter (see :meth:`EmulatedDimm.write_bursts`)."""
        if not _own(self, "write_burst", PhysicsDimm.write_burst):
            self._write_bursts_each(access, columns, bursts, trcd_cycles, now_ns)
            return
        self._scatter_bursts(access, columns, bursts, now_ns)
        if len(columns) and isinstance(access, _PhysicsRow):
            access.views.clear()
            access.candidates = None

    def precharge(self, access: RowAccess, tras_cycles: int) -> None:
        if not isinstance(access, _PhysicsRow):
            return
        key = (access.bank, access.row)
        tras_ns = tras_cycles * self.tck_ns
        condition = (access.vdd_v, access.temp_c)
        safe = self._tras_safe.get(condition)
        if safe is None:
            safe = self.profile.safe_ns("tras", access.vdd_v, access.temp_c) + self.timing_offset_ns + float(
                self.chip_timing_ns.max()
            )
            if len(self._tras_safe) > 65536:
                self._tras_safe.clear()
            self._tras_safe[condition] = safe
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
