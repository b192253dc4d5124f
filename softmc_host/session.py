"""A tester session: open a SoftMC tester by URL, run programs, move whole rows.

::

    with TesterSession.open("socket://127.0.0.1:5555") as tester:
        tester.write_row(bank=2, row=100, data=0xAA)
        data = tester.read_row(bank=2, row=100)          # 8192 bytes

A stock SoftMC board with no bridge firmware opens as ``riffa://ID/CHANNEL``
(:mod:`firmware_bridge.riffa`): the same API, without the write-data extension, STATUS and SEED
(:attr:`TesterSession.capabilities`; a call that needs one raises :class:`CapabilityError`;
``docs/stock-softmc.md`` has the matrix per tester kind).

The session asks the firmware for its geometry and clock (HELLO) when it opens,
and resets it on exit, whatever happened inside the ``with`` block, so the
tester is left with all rows closed, the bus idle and auto-refresh off.

Time on the tester passes only as programs run: :meth:`TesterSession.hold` sends
programs of WAITs (real time on SoftMC, virtual time on the emulator, where a host
that sleeps does not age the cells), and :meth:`TesterSession.set_refresh_interval`
sets the auto-refresh interval (SET_TREFI).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TextIO

import numpy as np

from firmware_bridge.connect import LINK_SCHEMES, AnyLink, open_link
from firmware_bridge.link import LinkError
from firmware_bridge.protocol import BURST_BYTES, MsgType, ProtocolError, decode_json, result_bursts
from softmc_host.program import (
    TREFI_TICK_NS,
    Program,
    ProgramError,
    build_row_reads,
    build_row_writes,
    hold_programs,
    idle_state_program,
    refresh_interval_program,
    row_data,
    uniform_bursts,
)
from softmc_host.schemes import SchemeError, has_tester_scheme, pyserial_schemes, tester_opener, tester_schemes, url_scheme
from softmc_host.timing import (
    NOMINAL_REFRESH_WINDOW_MS,
    NOMINAL_TIMING,
    REFRESH_COMMANDS_PER_WINDOW,
    AccessTiming,
    Ddr3Params,
    TimingCycles,
)

__all__ = [
    "TesterSession",
    "TesterError",
    "CapabilityError",
    "FEATURE_WRITE_DATA",
    "FEATURE_NOISE_SEED",
    "FEATURE_STATUS",
    "REFRESH_COMMANDS_PER_WINDOW",
    "NOMINAL_REFRESH_WINDOW_MS",
]

# REFRESH_COMMANDS_PER_WINDOW and NOMINAL_REFRESH_WINDOW_MS are defined in softmc_host.timing
# and re-exported here.


class TesterError(RuntimeError):
    """The tester returned something inconsistent with the program it was sent."""


class CapabilityError(TesterError):
    """A feature this tester lacks was needed (e.g. arbitrary write data on a stock SoftMC board)."""


#: Capability names (:attr:`TesterSession.capabilities`): arbitrary write data (the WBUF extension),
#: restartable emulated read noise, and the STATUS request.
FEATURE_WRITE_DATA = "wbuf"
FEATURE_NOISE_SEED = "noise-seed"
FEATURE_STATUS = "status"
_FEATURE_PURPOSE = {
    FEATURE_WRITE_DATA: "the write-data extension (a stock WR repeats one byte across its burst)",
    FEATURE_NOISE_SEED: "a restartable read-noise stream (an emulated DIMM's)",
    FEATURE_STATUS: "the STATUS request (bridge firmware and the emulated bench)",
}


_INFO_REQUIRED = ("tck_ps", "banks", "rows", "columns")
#: INFO integers the host uses: (lowest, highest, default when absent; None: required).
_INFO_INTS: dict[str, tuple[int, int, int | None]] = {
    "tck_ps": (1, 1_000_000, None),  # 1 ps .. 1 us
    "banks": (1, 64, None),
    "rows": (1, 1 << 24, None),
    "columns": (1, 1 << 16, None),
    "bus_bytes": (1, 64, 8),
    "max_program": (2, 1 << 16, 8192),
}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class TesterSession:
    """Host-side driver of one tester.

    Parameters
    ----------
    link : Link or RiffaLink
        An open link to the firmware (see :meth:`open` to open one by URL): the framed link of
        the bridge firmware and the emulated bench, or a stock SoftMC board over RIFFA
        (:class:`firmware_bridge.riffa.RiffaLink`), on which the session itself closes the rows
        and turns auto-refresh off where the firmware would on RESET.
    timing : AccessTiming
        Default tRCD/tRP/tRAS for row reads and writes (datasheet nominal).
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, link: AnyLink, timing: AccessTiming = NOMINAL_TIMING, params: Ddr3Params = Ddr3Params()) -> None:
        self.link = link
        #: True on a stock SoftMC tester (no bridge firmware): no RESET, STATUS or SEED requests.
        self.stock = bool(getattr(link, "stock", False))
        self.params = params
        try:
            self.info: dict[str, Any] = decode_json(link.request(MsgType.HELLO).payload)
        except ProtocolError as exc:
            raise TesterError(f"tester at {link.name} sent a malformed INFO reply: {exc}") from None
        info = self.info
        where = f"tester at {link.name} sent an INFO reply"
        for key in _INFO_REQUIRED:
            if key not in info:
                raise TesterError(f"{where} without {key!r}")
        values = {}
        for key, (low, high, default) in _INFO_INTS.items():
            value = info.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise TesterError(f"{where} with {key}={_short(value)}: expected an integer {low}..{high}")
            values[key] = value
        features = info.get("features", [])
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise TesterError(f"{where} with features={_short(features)}: expected a list of strings")
        self.tck_ns = values["tck_ps"] / 1000.0
        self.banks = values["banks"]
        self.rows = values["rows"]
        self.columns = values["columns"]
        self.bus_bytes = values["bus_bytes"]
        self.max_program = values["max_program"]
        self.features = set(features)
        self.timing = timing
        self._emulator: Any = None  # what a tester-scheme plug-in started for this session, closed with it
        #: The auto-refresh interval this session last set, in ns (None: off, the tester's reset state).
        self.refresh_interval_ns: float | None = None
        if self.stock:
            self._idle_stock()  # an aborted program of an earlier host may have left rows open

    @property
    def kind(self) -> str:
        """What this tester is: ``"stock-softmc"`` (RIFFA, no bridge firmware), ``"emulated"`` or ``"bridge"``."""
        if self.stock:
            return "stock-softmc"
        return "emulated" if FEATURE_NOISE_SEED in self.features else "bridge"

    @property
    def capabilities(self) -> frozenset[str]:
        """The features this tester has, of :data:`FEATURE_WRITE_DATA`, :data:`FEATURE_NOISE_SEED`, :data:`FEATURE_STATUS`."""
        found = set(self.features) & {FEATURE_WRITE_DATA, FEATURE_NOISE_SEED}
        if not self.stock:
            found.add(FEATURE_STATUS)
        return frozenset(found)

    @property
    def writes_arbitrary_data(self) -> bool:
        """Whether any bytes can be written (the write-data extension), not only a repeated byte per burst."""
        return FEATURE_WRITE_DATA in self.capabilities

    def require(self, feature: str, purpose: str) -> None:
        """Raise :class:`CapabilityError` (one line) unless this tester has ``feature``, needed for ``purpose``."""
        if feature not in self.capabilities:
            lacks = _FEATURE_PURPOSE.get(feature, repr(feature))
            raise CapabilityError(f"{purpose} needs {lacks}, which the {self.kind} tester at {self.link.name} lacks")

    def check_writable(self, data: np.ndarray, rows: Sequence[tuple[int, int]] | None = None, what: str = "data") -> None:
        """Raise :class:`CapabilityError` unless this tester can write ``data`` (``(n, row_bytes)`` uint8).

        A tester without the write-data extension writes only bursts that repeat one byte.
        """
        if self.writes_arbitrary_data:
            return
        bad = np.flatnonzero(~uniform_bursts(np.asarray(data, dtype=np.uint8).reshape(-1, self.row_bytes)))
        if bad.size:
            index, burst = divmod(int(bad[0]), self.bursts_per_row)
            where = f"bank {rows[index][0]} row {rows[index][1]}" if rows is not None and index < len(rows) else f"row {index}"
            raise CapabilityError(
                f"{what} for {where}, burst {burst}, is not one repeated byte: writing it needs "
                f"{_FEATURE_PURPOSE[FEATURE_WRITE_DATA]}, which the {self.kind} tester at {self.link.name} lacks"
            )

    def _idle_stock(self) -> None:
        """Close every row, turn auto-refresh off, bus READ (what RESET does on a bridge firmware)."""
        self.run(idle_state_program(max(1, self._cycles.trp), self.max_program))

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timing: AccessTiming = NOMINAL_TIMING,
        timeout_s: float = 5.0,
        retries: int = 3,
        spy: Callable[[str], None] | TextIO | None = None,
    ) -> "TesterSession":
        """Open a tester by URL and say HELLO.

        ``url`` is anything :func:`firmware_bridge.link.open_transport` opens, or a URL of a
        registered tester scheme (:mod:`softmc_host.schemes`), such as the emulated bench's
        ``emu://PROFILE?seed=N`` or ``replay://MAP.h5``: its plug-in starts the tester (an
        emulated bench in its own process), closed with the session.

        Raises
        ------
        firmware_bridge.link.LinkError
            With a one-line message for a bad or unknown URL, a plug-in that cannot start
            its tester, or a link that cannot be opened.
        """
        endpoint = None
        scheme = url_scheme(url)
        if scheme is not None and has_tester_scheme(scheme):
            try:
                endpoint = tester_opener(scheme)(url)
            except SchemeError as exc:
                raise LinkError(f"cannot open tester link {url!r}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - whatever the plug-in raises, one line
                reason = " ".join(str(exc).split()) or type(exc).__name__
                kind = "emulated bench" if scheme in ("emu", "replay") else f"{scheme}:// tester"
                raise LinkError(f"cannot start {kind} {url!r}: {reason}") from None
            url = endpoint.url
        elif scheme is not None and scheme not in pyserial_schemes() and scheme not in LINK_SCHEMES:
            known = ", ".join(sorted(set(tester_schemes()) | set(pyserial_schemes()) | set(LINK_SCHEMES)))
            raise LinkError(f"cannot open tester link {url!r}: unknown tester URL scheme {scheme!r} (known: {known})")
        try:
            link = open_link(url, timeout_s=timeout_s, retries=retries, spy=spy)
            try:
                session = cls(link, timing=timing)
            except BaseException:
                link.close()
                raise
        except BaseException:
            if endpoint is not None:
                endpoint.close()
            raise
        session._emulator = endpoint
        return session

    # Geometry and timing ---------------------------------------------------------------------

    @property
    def row_bytes(self) -> int:
        """Bytes in one row."""
        return self.columns * self.bus_bytes

    @property
    def bursts_per_row(self) -> int:
        """Bursts in one row."""
        return self.row_bytes // BURST_BYTES

    @property
    def timing(self) -> AccessTiming:
        """Default timing asked for, in ns."""
        return self._timing

    @timing.setter
    def timing(self, value: AccessTiming) -> None:
        self._timing = value
        self._cycles = value.cycles(self.tck_ns)

    @property
    def timing_cycles(self) -> TimingCycles:
        """Default timing in tester cycles; its ``*_ns`` properties are the effective values."""
        return self._cycles

    def _cycles_for(self, timing: AccessTiming | None) -> TimingCycles:
        return self._cycles if timing is None else timing.cycles(self.tck_ns)

    def _check_row(self, bank: int, row: int) -> None:
        if not 0 <= bank < self.banks:
            raise ValueError(f"bank {bank} outside 0..{self.banks - 1}")
        if not 0 <= row < self.rows:
            raise ValueError(f"row {row} outside 0..{self.rows - 1}")

    # Programs --------------------------------------------------------------------------------

    def new_program(self) -> Program:
        """An empty program sized for this tester."""
        return Program(self.max_program)

    def run(self, program: Program) -> bytes:
        """Run a program; return its read bursts, concatenated (``64 * program.n_reads`` bytes).

        Raises
        ------
        firmware_bridge.link.RemoteError
            The firmware rejected the program (the message says which instruction and why).
        TesterError
            The tester returned a different number of bursts than the program reads.
        """
        return self._run_result(program)[4:]

    def _run_result(self, program: Program) -> bytes:
        """Run a program; return its checked RESULT payload (a 4-byte count, then the bursts)."""
        if program.uses_write_extension and FEATURE_WRITE_DATA not in self.features:
            raise CapabilityError(
                f"the program loads write data (WBUF), which needs {_FEATURE_PURPOSE[FEATURE_WRITE_DATA]}; "
                f"the {self.kind} tester at {self.link.name} lacks it"
            )
        if self.stock and getattr(self.link, "needs_reset", False):
            # An exchange did not finish (time-out, Ctrl-C): reset the board, close the rows and turn
            # auto-refresh off before this program, as the session does on open.
            self.reset()
        payload = program.payload()
        reply = self.link.request(
            MsgType.PROGRAM, payload, timeout_s=self.link.timeout_s + 2e-5 * len(program)
        )
        try:
            count = result_bursts(reply.payload)
        except ProtocolError as exc:
            raise TesterError(f"malformed RESULT from {self.link.name}: {exc}") from None
        if count != program.n_reads:
            raise TesterError(f"program issues {program.n_reads} reads but the tester returned {count} bursts")
        return reply.payload

    def run_text(self, text: str) -> bytes:
        """Assemble program text (``softmc_host.asm`` syntax) and run it."""
        from softmc_host.asm import assemble

        program = self.new_program()
        program.add(*assemble(text.splitlines()))
        return self.run(program)

    # Rows ------------------------------------------------------------------------------------

    def write_rows(
        self,
        rows: Sequence[tuple[int, int]],
        data: int | bytes | np.ndarray | Sequence[int | bytes | np.ndarray],
        timing: AccessTiming | None = None,
    ) -> None:
        """Write whole rows, packing as many per program as fit.

        Parameters
        ----------
        rows : sequence of (bank, row)
            Rows to write.
        data : int, bytes, or one per row
            A byte value (repeated) or ``row_bytes`` bytes, the same for all rows,
            or a sequence with one such item per row.
        timing : AccessTiming, optional
            Timing to write with; the session default if omitted.
        """
        rows = [(int(b), int(r)) for b, r in rows]
        for bank, row in rows:
            self._check_row(bank, row)
        row_bytes = self.row_bytes
        if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape == (len(rows), row_bytes):
            array = data  # one row per line, already as the programs want it
        else:
            single = isinstance(data, (int, np.integer, bytes, bytearray)) or (
                isinstance(data, np.ndarray) and data.ndim == 1 and data.size == row_bytes
            )
            per_row = [data] * len(rows) if single else list(data)  # type: ignore[arg-type]
            if len(per_row) != len(rows):
                raise ValueError(f"{len(rows)} rows but {len(per_row)} data items")
            array = np.empty((len(rows), row_bytes), np.uint8)
            try:
                for i, item in enumerate(per_row):  # check every item before anything is written
                    array[i] = row_data(item, row_bytes)  # type: ignore[arg-type]
            except ProgramError as exc:
                raise ValueError(str(exc)) from None
        cycles = self._cycles_for(timing)
        if len(set(rows)) != len(rows):
            raise ValueError("a row is listed twice in one write")
        self.check_writable(array, rows)
        for program in build_row_writes(rows, array, cycles, self.params, max_length=self.max_program):
            self.run(program)

    def write_row(self, bank: int, row: int, data: int | bytes | np.ndarray, timing: AccessTiming | None = None) -> None:
        """Write one whole row (a repeated byte or ``row_bytes`` bytes)."""
        self.write_rows([(bank, row)], data, timing)

    def read_rows(
        self,
        rows: Sequence[tuple[int, int]],
        timing: AccessTiming | None = None,
        per_burst_activate: bool = False,
    ) -> np.ndarray:
        """Read whole rows; return a ``(len(rows), row_bytes)`` uint8 array.

        With ``per_burst_activate`` every burst is read right after its own ACT,
        exactly tRCD later (slower; what a tRCD characterization needs).
        """
        rows = [(int(b), int(r)) for b, r in rows]
        for bank, row in rows:
            self._check_row(bank, row)
        cycles = self._cycles_for(timing)
        programs = build_row_reads(
            rows, cycles, self.params, range(self.bursts_per_row), per_burst_activate, max_length=self.max_program
        )
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        flat = out.reshape(-1)
        done = 0
        for program in programs:
            result = self._run_result(program)
            size = len(result) - 4
            flat[done : done + size] = np.frombuffer(result, dtype=np.uint8, offset=4)
            done += size
        return out

    def read_row(self, bank: int, row: int, timing: AccessTiming | None = None) -> bytes:
        """Read one whole row; return ``row_bytes`` bytes."""
        return self.read_rows([(bank, row)], timing)[0].tobytes()

    # Time and refresh ------------------------------------------------------------------------

    def set_refresh_interval(self, trefi_ns: float | None) -> float | None:
        """Set the tester's auto-refresh interval (one SET_TREFI program); None or 0 turns it off.

        Parameters
        ----------
        trefi_ns : float or None
            Time between two REF commands, in ns (the tester refreshes the next group of
            rows at each, :data:`REFRESH_COMMANDS_PER_WINDOW` per refresh window); rounded to
            the nearest 200 ns tick.

        Returns
        -------
        float or None
            The interval set, in ns (a whole number of 200 ns ticks), or None when off;
            also kept in :attr:`refresh_interval_ns`.

        Raises
        ------
        ValueError
            One line, before anything is sent: a value that is not a finite non-negative
            number, or outside the SET_TREFI field (100 ns .. 2**28 - 1 ticks, about 53.7 s).
        """
        try:
            program, ticks = refresh_interval_program(None if not trefi_ns else trefi_ns, self.max_program)
        except ProgramError as exc:
            raise ValueError(str(exc)) from None
        self.run(program)
        self.refresh_interval_ns = ticks * TREFI_TICK_NS if ticks else None
        return self.refresh_interval_ns

    def hold(self, duration_ns: float) -> float:
        """Let ``duration_ns`` pass on the tester, sending programs of WAITs only.

        The wait is rounded up to whole tester cycles and split into programs as long as
        the tester takes (8192 slots of WAIT 1023 on SoftMC, about 20.9 ms at 2.5 ns
        each).  On SoftMC the WAITs are real time; on the emulator they advance its
        virtual clock, which is what ages the emulated cells.

        Returns
        -------
        float
            The time the WAITs hold, in ns (at least ``duration_ns``; the host's turnaround
            between programs comes on top).

        Raises
        ------
        ValueError
            For a duration that is not a finite non-negative number.
        """
        if isinstance(duration_ns, bool) or not isinstance(duration_ns, (int, float, np.integer, np.floating)):
            raise ValueError(f"a hold is a number of ns, got {type(duration_ns).__name__}")
        value = float(duration_ns)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"a hold must be a finite, non-negative number of ns, got {value!r}")
        cycles = int(np.ceil(value / self.tck_ns - 1e-9)) if value > 0 else 0
        for program in hold_programs(cycles, self.max_program):
            self.run(program)
        return cycles * self.tck_ns

    # Housekeeping ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The firmware's STATUS object (clock, open rows, the last program's tightest timings).

        Raises
        ------
        CapabilityError
            On a stock SoftMC tester, which has no STATUS request.
        """
        self.require(FEATURE_STATUS, "reading the tester's STATUS")
        try:
            return decode_json(self.link.request(MsgType.STATUS).payload)
        except ProtocolError as exc:
            raise TesterError(f"tester at {self.link.name} sent a malformed STATUS reply: {exc}") from None

    def seed_noise(self, seed: int) -> bool:
        """Restart an emulated DIMM's read-noise stream (returns False on testers without it)."""
        if FEATURE_NOISE_SEED not in self.features:
            return False
        self.link.request(MsgType.SEED, (int(seed) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))
        return True

    def reset(self) -> None:
        """Drain stale data and reset the firmware (all rows closed, bus READ, auto-refresh off).

        On a stock SoftMC tester: ``fpga_reset``, a drain, and a program closing the rows,
        turning auto-refresh off and the bus to READ.
        """
        self.link.reset()
        if self.stock:
            self._idle_stock()
        self.refresh_interval_ns = None

    def close(self) -> None:
        """Reset the tester and close the link (and the emulated bench this session started)."""
        try:
            self.reset()
        finally:
            self._close_link()

    def _close_link(self) -> None:
        self.link.close()
        if self._emulator is not None:
            self._emulator.close()
            self._emulator = None

    def __enter__(self) -> "TesterSession":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.reset()
        except LinkError:
            if exc_type is None:
                raise
        finally:
            self._close_link()
