"""The stock SoftMC transport: RIFFA 2.1 over PCIe, through libriffa's C API (``riffa://ID/CHANNEL``).

The public SoftMC release (ML605 board, one DDR3 SO-DIMM) has no framed protocol: the host
sends a program's 64-bit instruction slots with ``fpga_send`` (lengths in 32-bit words, the
instruction in the low word of each slot), END starts the program, and every READ comes
back as its own receive transaction of 16 words (64 bytes), taken with ``fpga_recv``.  The
host must know how many READs a program issues and take exactly that many bursts; read data
left over from an aborted program would be taken as the next program's, so this transport
calls ``fpga_reset`` when it opens and again before the first program after an exchange that
did not finish, and then drains whatever the board still sends.

:class:`RiffaLink` offers the interface of :class:`firmware_bridge.link.Link` that
:class:`softmc_host.session.TesterSession` uses (``request``, ``reset``, ``drain``,
``close``, ``name``, ``timeout_s``, ``stats``), translating the framed requests:

- HELLO: answered here, from the URL (the stock firmware cannot say what it drives): the
  ML605 release's geometry and clock unless ``banks``, ``rows``, ``columns``, ``bus_bytes``,
  ``tck_ps`` say otherwise, and no features (no write-data extension, no noise seed);
- PROGRAM: the slots go to the board as they are; a program that carries write-data blocks,
  or does not end with END, is refused before anything is sent;
- RESET: ``fpga_reset`` and a drain (the host driver then closes the rows itself);
- STATUS and SEED: refused with :class:`UnsupportedRequest` (bridge firmware / emulator only).

URL::

    riffa://ID/CHANNEL?lib=PATH&timeout_ms=MS&banks=8&rows=32768&columns=1024&bus_bytes=8&tck_ps=2500

``ID`` is the board's RIFFA id (``fpga_list`` numbers them from 0), ``CHANNEL`` the RIFFA
channel SoftMC listens on (0 in the release; default 0).  The library is ``lib``, else
``$EDEN_RIFFA_LIB``, else ``libriffa`` as the system finds it (``ctypes.util.find_library``,
then ``/usr/local/lib/libriffa.so``, where RIFFA's installer puts it).  ``lib`` may also name a
registered library provider (:func:`register_library`, or an entry point of the group
:data:`LIBRARY_GROUP`): the emulated bench registers ``emu``, a Python stand-in of libriffa
behind the same ctypes interface that forwards to the emulated firmware.

See ``docs/stock-softmc.md`` for the set-up on a lab machine and what a stock tester lacks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import re
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, TextIO

import numpy as np

from firmware_bridge.framing import Frame
from firmware_bridge.link import LinkError, LinkStats, LinkTimeoutError, check_timeout_s, spy_writer
from firmware_bridge.protocol import BURST_BYTES, MAX_PROGRAM_SLOTS, MsgType, ProtocolError, encode_json

__all__ = [
    "RIFFA_MAX_FPGAS",
    "RIFFA_MAX_CHANNELS",
    "WORDS_PER_BURST",
    "LIBRARY_ENV",
    "LIBRARY_GROUP",
    "ML605_INFO",
    "FpgaInfoList",
    "RiffaError",
    "UnsupportedRequest",
    "RiffaLibrary",
    "RiffaUrl",
    "RiffaLink",
    "parse_riffa_url",
    "load_library",
    "register_library",
    "unregister_library",
    "count_reads",
]

log = logging.getLogger(__name__)

#: Boards libriffa lists at most (``RIFFA_MAX_NUM_FPGAS`` of ``riffa.h``).
RIFFA_MAX_FPGAS = 5
#: Channels a RIFFA 2.1 design has at most.
RIFFA_MAX_CHANNELS = 12
#: 32-bit words in one READ's receive transaction (one 64-byte burst).
WORDS_PER_BURST = BURST_BYTES // 4
#: Environment variable naming the library when the URL does not.
LIBRARY_ENV = "EDEN_RIFFA_LIB"
#: Environment variable naming the directory of the per-board lock files (default: the temporary directory).
LOCK_DIR_ENV = "EDEN_RIFFA_LOCK_DIR"
#: The device node RIFFA's Linux driver creates.
DEVICE_NODE = "/dev/riffa"
#: Entry-point group of library providers (``name = module:factory``; ``factory()`` returns the library).
LIBRARY_GROUP = "eden_dram_toolkit.riffa_libraries"
#: Where RIFFA 2.1's Linux installer puts the library.
_INSTALLED_PATHS = ("/usr/local/lib/libriffa.so", "/usr/lib/libriffa.so")

#: What the ML605 release drives (the defaults of the HELLO answer; ``docs/softmc-isa.md``).
ML605_INFO: dict[str, int] = {
    "tck_ps": 2500,
    "banks": 8,
    "rows": 32768,
    "columns": 1024,
    "bus_bytes": 8,
    "max_program": MAX_PROGRAM_SLOTS,
}
_INFO_RANGES = {
    "tck_ps": (1, 1_000_000),
    "banks": (1, 64),
    "rows": (1, 1 << 24),
    "columns": (1, 1 << 16),
    "bus_bytes": (1, 64),
    "max_program": (2, 1 << 16),
}
#: Time-out of one ``fpga_send``/``fpga_recv`` when the URL does not set ``timeout_ms`` (from the link's).
_QUIET_MS = 20  # a drain stops once the board has sent nothing for this long


class RiffaError(LinkError):
    """libriffa or the board could not be reached, or a transfer failed."""


class UnsupportedRequest(RiffaError):
    """A request the stock SoftMC firmware has no counterpart for (STATUS, SEED)."""


class FpgaInfoList(ctypes.Structure):
    """``struct fpga_info_list`` of ``riffa.h``: the boards ``fpga_list`` finds."""

    _fields_ = [
        ("num_fpgas", ctypes.c_int),
        ("id", ctypes.c_int * RIFFA_MAX_FPGAS),
        ("num_chnls", ctypes.c_int * RIFFA_MAX_FPGAS),
        ("name", (ctypes.c_char * 16) * RIFFA_MAX_FPGAS),
        ("vendor_id", ctypes.c_int * RIFFA_MAX_FPGAS),
        ("device_id", ctypes.c_int * RIFFA_MAX_FPGAS),
    ]


#: The C signatures of the six functions used: name -> (restype, argtypes).
SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "fpga_list": (ctypes.c_int, (ctypes.POINTER(FpgaInfoList),)),
    "fpga_open": (ctypes.c_void_p, (ctypes.c_int,)),
    "fpga_close": (None, (ctypes.c_void_p,)),
    # fpga, chnl, data, len (words), destoff, last, timeout (ms; 0 blocks)
    "fpga_send": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                 ctypes.c_int, ctypes.c_longlong)),
    # fpga, chnl, data, len (words), timeout (ms; 0 blocks)
    "fpga_recv": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong)),
    "fpga_reset": (None, (ctypes.c_void_p,)),
}


# Library providers ------------------------------------------------------------------------------

_PROVIDERS: dict[str, Callable[[], Any]] = {}
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")


def register_library(name: str, factory: Callable[[], Any]) -> None:
    """Make ``lib=NAME`` load the library ``factory()`` returns (an object with libriffa's functions).

    The functions must be ctypes function pointers with libriffa's signatures
    (:data:`SIGNATURES`), so that the transport calls them exactly as it calls the C library.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"a RIFFA library provider name is a short identifier, got {name!r}")
    if not callable(factory):
        raise ValueError(f"the provider of {name!r} must be callable")
    _PROVIDERS[name.lower()] = factory


def unregister_library(name: str) -> None:
    """Forget a provider registered at run time (entry points are looked up again on next use)."""
    _PROVIDERS.pop(name.lower(), None)


def _provider(name: str) -> Callable[[], Any] | None:
    key = name.lower()
    if key in _PROVIDERS:
        return _PROVIDERS[key]
    try:
        points = [p for p in metadata.entry_points(group=LIBRARY_GROUP) if p.name.lower() == key]
    except Exception:  # noqa: BLE001 - broken metadata of an unrelated package: no provider
        return None
    if not points:
        return None
    try:
        factory = points[0].load()
    except Exception as exc:  # noqa: BLE001 - one line, whatever the plug-in raises
        raise RiffaError(f"RIFFA library provider {name!r} ({points[0].value}) does not load: {exc}") from None
    _PROVIDERS[key] = factory
    return factory


class RiffaLibrary:
    """libriffa's six functions, with their C signatures set, and where they came from.

    Parameters
    ----------
    handle : object
        The loaded library (a :class:`ctypes.CDLL`, or a provider's stand-in).
    source : str
        Where it was loaded from (shown in error messages).
    """

    def __init__(self, handle: Any, source: str, *, system: bool = True) -> None:
        self.source = source
        #: A library that drives boards of this machine (locked per board across processes, and
        #: diagnosed through the driver's device node); False for a provider's stand-in.
        self.system = system
        missing = [name for name in SIGNATURES if not hasattr(handle, name)]
        if missing:
            raise RiffaError(f"{source} is not libriffa: it lacks {', '.join(missing)}")
        for name, (restype, argtypes) in SIGNATURES.items():
            function = getattr(handle, name)
            try:
                function.restype = restype
                function.argtypes = argtypes
            except (AttributeError, TypeError):
                raise RiffaError(f"{source}: {name} is not a C function") from None
            setattr(self, name, function)
        self.handle = handle

    def boards(self) -> list[tuple[int, int, str]]:
        """The boards ``fpga_list`` finds: ``(id, channels, name)`` each.

        Raises
        ------
        RiffaError
            If ``fpga_list`` fails (the RIFFA driver is not loaded).
        """
        info = FpgaInfoList()
        status = self.fpga_list(ctypes.byref(info))
        if status != 0:
            raise RiffaError(f"fpga_list of {self.source} failed ({status}): {self.driver_hint()}")
        count = max(0, min(int(info.num_fpgas), RIFFA_MAX_FPGAS))
        return [
            (int(info.id[i]), int(info.num_chnls[i]), bytes(info.name[i]).split(b"\0")[0].decode("ascii", "replace"))
            for i in range(count)
        ]

    def driver_hint(self) -> str:
        """Why the driver may not answer: its device node missing or not accessible to this user."""
        if not self.system:
            return f"{self.source} answered with an error"
        if not os.path.exists(DEVICE_NODE):
            return f"no {DEVICE_NODE}: is the RIFFA driver loaded (lsmod | grep riffa)?"
        if not os.access(DEVICE_NODE, os.R_OK | os.W_OK):
            return (f"{DEVICE_NODE} is not readable and writable by this user "
                    "(a udev rule or membership of its group gives access)")
        return f"{DEVICE_NODE} is there and accessible: see the kernel log (dmesg | grep -i riffa)"


def load_library(spec: str | None = None) -> RiffaLibrary:
    """Load libriffa: a path, a registered provider's name, or (None) the installed library.

    Raises
    ------
    RiffaError
        One line: the library is not found, does not load, or lacks libriffa's functions.
    """
    spec = spec if spec else os.environ.get(LIBRARY_ENV) or None
    if spec is not None and _NAME_RE.fullmatch(spec):
        factory = _provider(spec)
        if factory is not None:
            try:
                handle = factory()
            except RiffaError:
                raise
            except Exception as exc:  # noqa: BLE001 - one line, whatever the provider raises
                raise RiffaError(f"RIFFA library provider {spec!r} failed: {exc}") from None
            return RiffaLibrary(handle, f"RIFFA library {spec!r}", system=False)
    if spec is None:
        candidates = [p for p in (ctypes.util.find_library("riffa"), *_INSTALLED_PATHS) if p]
    else:
        found = ctypes.util.find_library(spec) if _NAME_RE.fullmatch(spec) else None
        candidates = [spec] + ([found] if found else [])
    reasons = []
    for path in candidates:
        try:
            return RiffaLibrary(ctypes.CDLL(path), path)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            reasons.append(" ".join(str(exc).split()) or path)
    if not reasons:
        reasons = ["ctypes.util.find_library('riffa') finds nothing, no " + " or ".join(_INSTALLED_PATHS)]
    providers = sorted(set(_PROVIDERS) | _entry_point_names())
    raise RiffaError(
        f"libriffa not found ({'; '.join(reasons)}): install the RIFFA 2.1 driver and library, or name it "
        f"with ?lib=PATH or ${LIBRARY_ENV}" + (f" (library providers: {', '.join(providers)})" if providers else "")
    )


def _entry_point_names() -> set[str]:
    try:
        return {p.name.lower() for p in metadata.entry_points(group=LIBRARY_GROUP)}
    except Exception:  # noqa: BLE001
        return set()


# URLs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RiffaUrl:
    """A parsed ``riffa://`` URL."""

    fpga_id: int
    channel: int = 0
    lib: str | None = None
    timeout_ms: int | None = None
    info: tuple[tuple[str, int], ...] = tuple(ML605_INFO.items())

    def info_dict(self) -> dict[str, int]:
        """The geometry and clock the HELLO answer gives."""
        return dict(self.info)


def _int_field(url: str, key: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        raise RiffaError(f"riffa:// option {key}={text[:20]!r} in {url[:120]!r} is not an integer {low}..{high}")
    return int(text)


def parse_riffa_url(url: str) -> RiffaUrl:
    """Parse ``riffa://ID/CHANNEL?options`` (module docstring).

    Raises
    ------
    RiffaError
        One line naming the bad part.
    """
    if not isinstance(url, str) or not url.lower().startswith("riffa://"):
        raise RiffaError(f"not a RIFFA tester URL (riffa://ID/CHANNEL): {str(url)[:120]!r}")
    rest, _, query = url[len("riffa://"):].partition("?")
    parts = rest.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not 1 <= len(parts) <= 2 or not parts[0]:
        raise RiffaError(f"malformed RIFFA URL {url[:120]!r}: expected riffa://ID/CHANNEL (e.g. riffa://0/0)")
    fpga_id = _int_field(url, "ID", parts[0], 0, RIFFA_MAX_FPGAS - 1)
    channel = _int_field(url, "CHANNEL", parts[1], 0, RIFFA_MAX_CHANNELS - 1) if len(parts) == 2 else 0
    try:
        options = urllib.parse.parse_qs(query, strict_parsing=bool(query), keep_blank_values=False)
    except ValueError:
        raise RiffaError(f"malformed riffa:// query in {url[:120]!r} (expected key=value&...)") from None
    lib = None
    timeout_ms = None
    info = dict(ML605_INFO)
    for key, values in options.items():
        value = values[-1]
        if key == "lib":
            lib = value
        elif key == "timeout_ms":
            timeout_ms = _int_field(url, key, value, 1, 3_600_000)
        elif key in _INFO_RANGES and key != "max_program":
            info[key] = _int_field(url, key, value, *_INFO_RANGES[key])
        else:
            known = "lib, timeout_ms, " + ", ".join(k for k in _INFO_RANGES if k != "max_program")
            raise RiffaError(f"unknown riffa:// option {key[:40]!r} in {url[:120]!r} ({known})")
    if (info["columns"] * info["bus_bytes"]) % BURST_BYTES:
        raise RiffaError(f"riffa:// geometry in {url[:120]!r}: a row of columns x bus_bytes is not whole 64-byte bursts")
    return RiffaUrl(fpga_id, channel, lib, timeout_ms, tuple(info.items()))


# Programs -------------------------------------------------------------------------------------------

#: Bits [24:19] of a RD (CKE, unused, CS_n, RAS_n, CAS_n, WE_n), with bit 31 marking a DDR command.
_RD_MASK = np.uint32(0x81F80000)
_RD_BITS = np.uint32(0x80000000 | (0x25 << 19))


def count_reads(words: np.ndarray) -> int:
    """The READs among SoftMC instruction words (bit 31 set, bits [24:19] = 0x25): the bursts to receive."""
    words = np.asarray(words, dtype=np.uint32)
    return int(np.count_nonzero((words & _RD_MASK) == _RD_BITS))


# Board locks ------------------------------------------------------------------------------------------

def _lock_board(fpga_id: int, name: str) -> int | None:
    """Take the board's lock file (``eden-riffa-ID.lock``) for this process; return its descriptor.

    libriffa lets any number of programs open a board, and one's ``fpga_reset`` breaks another's
    program: a second host on the same board is refused here instead.
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return None
    directory = os.environ.get(LOCK_DIR_ENV) or tempfile.gettempdir()
    path = os.path.join(directory, f"eden-riffa-{fpga_id}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RiffaError(f"cannot open the board lock {path} for {name}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise RiffaError(f"RIFFA board {fpga_id} is in use by another program (pid {holder} holds {path}); "
                         "two hosts on one board reset each other's programs") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


# The link ---------------------------------------------------------------------------------------------

class RiffaLink:
    """A stock SoftMC tester over RIFFA, with the request interface of :class:`~firmware_bridge.link.Link`.

    Parameters
    ----------
    library : RiffaLibrary
        The loaded libriffa.
    url : RiffaUrl
        Board, channel and the geometry HELLO answers with.
    timeout_s : float
        Time-out of each transfer, in seconds (``timeout_ms`` of the URL wins).
    spy : callable or text file, optional
        Receives one line per program sent and per result taken.
    name : str
        Shown in error messages (the URL).

    Raises
    ------
    RiffaError
        One line: no board with this id, the channel beyond the board's, or ``fpga_open`` failed.
    """

    stock = True  #: the host driver closes rows itself after a reset (the firmware has no RESET)

    def __init__(
        self,
        library: RiffaLibrary,
        url: RiffaUrl,
        *,
        timeout_s: float = 5.0,
        spy: Callable[[str], None] | TextIO | None = None,
        name: str = "riffa://0/0",
    ) -> None:
        check_timeout_s(timeout_s)
        self.library = library
        self.url = url
        self.name = name
        self.timeout_s = url.timeout_ms / 1000.0 if url.timeout_ms is not None else float(timeout_s)
        self.retries = 0  # a PCIe transfer is not retransmitted: a failure resets the board
        self.stats = LinkStats()
        self.stats.extra.update(resets=0, drained_bursts=0, recv_calls=0)
        self._spy = spy_writer(spy)
        boards = library.boards()
        found = {board_id: channels for board_id, channels, _ in boards}
        if url.fpga_id not in found:
            listed = ", ".join(f"{i} ({n!r}, {c} channels)" for i, c, n in boards) or "none"
            raise RiffaError(f"no RIFFA board {url.fpga_id} for {name} (fpga_list finds: {listed})")
        if url.channel >= found[url.fpga_id]:
            raise RiffaError(f"{name}: board {url.fpga_id} has channels 0..{found[url.fpga_id] - 1}, not {url.channel}")
        self._lock_fd = _lock_board(url.fpga_id, name) if library.system else None
        try:
            handle = library.fpga_open(url.fpga_id)
            if not handle:
                raise RiffaError(f"fpga_open({url.fpga_id}) failed for {name}: {library.driver_hint()}")
        except BaseException:
            _unlock(self._lock_fd)
            raise
        self._fpga = ctypes.c_void_p(handle)
        self._seq = 0
        self._dirty = True  # reset before the first program: an earlier host may have left data behind
        self._closed = False
        try:
            self._reset_board()
        except BaseException:
            self.library.fpga_close(self._fpga)
            _unlock(self._lock_fd)
            raise

    @classmethod
    def open(
        cls,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 0,
        spy: Callable[[str], None] | TextIO | None = None,
    ) -> "RiffaLink":
        """Open a board by ``riffa://`` URL (``retries`` is accepted for the link interface and unused).

        Raises
        ------
        RiffaError
            One line: a bad URL, a missing library, a missing board.
        """
        parsed = parse_riffa_url(url)
        library = load_library(parsed.lib)
        return cls(library, parsed, timeout_s=timeout_s, spy=spy, name=url)

    # Housekeeping -------------------------------------------------------------------------------------

    def _log(self, line: str) -> None:
        if self._spy is not None:
            self._spy(f"{time.monotonic():.6f} {line}")

    def _check_open(self) -> None:
        if self._closed:
            raise RiffaError(f"{self.name} is closed")

    def _timeout_ms(self, timeout_s: float | None = None) -> int:
        wait_s = self.timeout_s if timeout_s is None else float(timeout_s)
        return max(1, int(math.ceil(wait_s * 1000.0)))

    @property
    def needs_reset(self) -> bool:
        """Whether an exchange did not finish: the next program is preceded by a reset of the board."""
        return self._dirty

    def _reset_board(self) -> None:
        """``fpga_reset``; a lone END, which ends a program half-sent before the reset if the board kept
        it; then a drain of whatever the board still sends."""
        self.library.fpga_reset(self._fpga)
        self.stats.extra["resets"] += 1
        end = (ctypes.c_uint32 * 2)()
        sent = self.library.fpga_send(self._fpga, self.url.channel, end, 2, 0, 1, self._timeout_ms())
        if sent != 2:
            raise RiffaError(f"{self.name}: the board took {sent} of 2 words after fpga_reset (board gone or hung)")
        dropped = self.drain()
        if dropped:
            log.warning("%s: dropped %d stale bytes of read data after fpga_reset", self.name, dropped)
        self._dirty = False
        self._log(f"RESET fpga_reset, {dropped} stale bytes drained")

    def drain(self, quiet_s: float = _QUIET_MS / 1000.0, max_s: float = 2.0) -> int:
        """Take and drop receive transactions until the board sends nothing for ``quiet_s``; return the bytes.

        Raises
        ------
        RiffaError
            If the board is still sending after ``max_s`` seconds.
        """
        self._check_open()
        buffer = (ctypes.c_uint32 * (2 * WORDS_PER_BURST))()
        quiet_ms = max(1, int(round(quiet_s * 1000.0)))
        dropped = 0
        end = time.monotonic() + max_s
        try:
            while True:
                got = self.library.fpga_recv(self._fpga, self.url.channel, buffer, 2 * WORDS_PER_BURST, quiet_ms)
                if got <= 0:
                    return dropped
                dropped += 4 * int(got)
                if time.monotonic() >= end:
                    raise RiffaError(f"{self.name}: the board is still sending after {max_s:g} s of draining "
                                     f"({dropped} bytes dropped); power-cycle it or reload its bitstream")
        finally:
            self.stats.extra["drained_bursts"] += dropped // BURST_BYTES
            self.stats.bytes_received += dropped

    def reset(self) -> None:
        """Reset the board's transfers (``fpga_reset``) and drop stale read data."""
        self._check_open()
        self._reset_board()

    def close(self) -> None:
        """Close the board (``fpga_close``) and release its lock; later calls fail."""
        if not self._closed:
            self._closed = True
            try:
                self.library.fpga_close(self._fpga)
            finally:
                _unlock(self._lock_fd)

    def __enter__(self) -> "RiffaLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Requests -----------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What HELLO answers: the URL's geometry and clock, no features."""
        return {
            "firmware": "SoftMC (stock)",
            "version": "RIFFA 2.1",
            "transport": "riffa",
            "stock": True,
            "fpga_id": self.url.fpga_id,
            "channel": self.url.channel,
            "features": [],
            **self.url.info_dict(),
        }

    def request(self, msg_type: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Frame:
        """Carry out one framed request on the stock firmware and return the reply a bridge would send.

        Raises
        ------
        UnsupportedRequest
            For STATUS, SEED and any other request the stock firmware has no counterpart for.
        RiffaError
            A program the stock firmware cannot run (write-data blocks, no END, too long), or a
            failed send.
        firmware_bridge.link.LinkTimeoutError
            The board sent fewer bursts than the program reads (the board is reset before the
            next program).
        """
        self._check_open()
        self._seq = self._seq % 0xFFFF + 1
        self.stats.requests += 1
        kind = int(msg_type)
        if kind == MsgType.HELLO:
            return Frame(MsgType.INFO, self._seq, encode_json(self.info()))
        if kind == MsgType.RESET:
            self.reset()
            return Frame(MsgType.ACK, self._seq, b"")
        if kind == MsgType.PROGRAM:
            return Frame(MsgType.RESULT, self._seq, self._run(payload, timeout_s))
        try:
            what = MsgType(kind).name
        except ValueError:
            what = f"request type 0x{kind:02X}"
        raise UnsupportedRequest(
            f"stock SoftMC tester at {self.name} has no {what} request (bridge firmware and the emulated bench only)"
        )

    def _run(self, payload: bytes, timeout_s: float | None) -> bytes:
        """Send one PROGRAM payload's slots and take its bursts; return a RESULT payload."""
        if len(payload) < 8:
            raise ProtocolError(f"PROGRAM payload of {len(payload)} bytes is shorter than its 8-byte counts")
        n_slots = int.from_bytes(payload[0:4], "little")
        n_blocks = int.from_bytes(payload[4:8], "little")
        if n_blocks:
            raise RiffaError(
                f"stock SoftMC tester at {self.name} lacks the write-data extension: the program carries "
                f"{n_blocks} write-data blocks (a stock WR repeats one byte across its burst)"
            )
        if len(payload) != 8 + 8 * n_slots:
            raise ProtocolError(f"PROGRAM payload is {len(payload)} bytes but {n_slots} slots need {8 + 8 * n_slots}")
        limit = self.url.info_dict()["max_program"]
        if not 1 <= n_slots <= limit:
            raise RiffaError(f"a program of {n_slots} instructions; stock SoftMC takes 1..{limit}")
        slots = np.frombuffer(payload, dtype="<u4", count=2 * n_slots, offset=8)
        if slots[-2] != 0 or slots[-1] != 0:
            raise RiffaError(f"program for {self.name} does not end with END: the board would wait for more")
        if np.any(slots[1::2]):
            raise RiffaError(f"program for {self.name} has a slot with its high 32 bits set")
        n_reads = count_reads(slots[0::2])
        if self._dirty:
            self._reset_board()
        self._dirty = True  # until every burst of this program is in
        wait_ms = self._timeout_ms(timeout_s)
        send = (ctypes.c_uint32 * (2 * n_slots)).from_buffer_copy(payload, 8)
        self._log(f">> PROGRAM {n_slots} slots, {n_reads} reads")
        sent = self.library.fpga_send(self._fpga, self.url.channel, send, 2 * n_slots, 0, 1, wait_ms)
        if sent != 2 * n_slots:
            raise RiffaError(
                f"fpga_send to {self.name} took {sent} of {2 * n_slots} words in {wait_ms} ms (board busy or gone)"
            )
        self.stats.bytes_sent += 8 * n_slots
        # One burst's room beyond the last: each receive may take 32 words, so a transaction longer
        # than a burst (a SoftMC build that packs READs) is seen, not cut to 16 words by libriffa.
        result = bytearray(4 + BURST_BYTES * (n_reads + 1))
        result[0:4] = n_reads.to_bytes(4, "little")
        if n_reads:
            view = (ctypes.c_uint8 * len(result)).from_buffer(result)
            base = ctypes.addressof(view)
            recv = self.library.fpga_recv
            fpga, channel = self._fpga, self.url.channel
            started = time.monotonic()
            for index in range(n_reads):
                got = recv(fpga, channel, base + 4 + BURST_BYTES * index, 2 * WORDS_PER_BURST, wait_ms)
                if got != WORDS_PER_BURST:
                    self.stats.extra["recv_calls"] += index + 1
                    self.stats.timeouts += 1
                    raise LinkTimeoutError(
                        f"{self.name}: READ {index + 1} of {n_reads} "
                        + (f"came back as a transaction of {got} words, not {WORDS_PER_BURST}" if got > 0 else
                           f"did not come back within {wait_ms} ms")
                        + f" ({time.monotonic() - started:.2f} s); the board is reset before the next program"
                    )
            self.stats.extra["recv_calls"] += n_reads
        self.stats.bytes_received += BURST_BYTES * n_reads
        self._dirty = False
        self._log(f"<< RESULT {n_reads} bursts")
        return bytes(memoryview(result)[: 4 + BURST_BYTES * n_reads])
