"""SoftMC instruction words: bit-exact encoding and decoding.

Word format (32 bits; the host sends each word in the low half of a 64-bit slot)::

    bits [31:28]  opcode. 1xxx = DDR command, 0000 END, 0001 SET_BUS_DIR,
                  0010 SET_TREFI, 0011 SET_TRFC, 0100 WAIT,
                  0101 WBUF (bridge write-data extension, not stock SoftMC)

    DDR command (bit 31 = 1):
    [30:25] write data bits [7:2] (WR only)    [24] CKE    [23] unused (0)
    [22] CS_n  [21] RAS_n  [20] CAS_n  [19] WE_n  [18:16] bank  [15:0] A[15:0]
    WR keeps data bits [1:0] in A[15:14]; RD/WR set A12 (BC_n = 1, burst of 8);
    A10 is auto-precharge on RD/WR and all-bank on PRE; A[9:0] is the column.

    SET_BUS_DIR [1:0] (binary): 0b00 READ, 0b10 WRITE (value 2).  SET_TREFI/SET_TRFC value in [27:0].
    WAIT cycles in [9:0], 1..1023.  WBUF write-data table index in [12:0].

Every field is range-checked when an instruction is built, and :func:`decode`
accepts exactly the words that :meth:`Instruction.encode` produces, so
``decode(w).encode() == w`` for every word that decodes.  See ``docs/softmc-isa.md``.

:func:`decode_words` and :func:`encode_words` do the same for whole arrays of words at once
(numpy), with one *kind* code per word instead of an object: the firmware checks and runs
programs from them, and the host builds programs with them, without Python work per word.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Sequence, Union

import numpy as np

__all__ = [
    "N_BANKS",
    "N_ROWS",
    "N_COLUMNS",
    "MAX_WAIT_CYCLES",
    "MAX_REG_VALUE",
    "MAX_WBUF_INDEX",
    "IsaError",
    "BusDirection",
    "Act",
    "Pre",
    "PreAll",
    "Rd",
    "Wr",
    "Ref",
    "Zq",
    "Wait",
    "SetBusDir",
    "SetTrefi",
    "SetTrfc",
    "End",
    "WBuf",
    "Instruction",
    "decode",
    "Kind",
    "DecodedWords",
    "decode_words",
    "encode_words",
]

N_BANKS = 8
N_ROWS = 1 << 16  # the row field is 16 bits (A[15:0]); the ML605 DIMM uses 32768
N_COLUMNS = 1024
MAX_WAIT_CYCLES = 1023
MAX_REG_VALUE = (1 << 28) - 1
MAX_WBUF_INDEX = 8191

_DDR_BIT = 1 << 31
_OP_END = 0x0
_OP_BUSDIR = 0x1
_OP_TREFI = 0x2
_OP_TRFC = 0x3
_OP_WAIT = 0x4
_OP_WBUF = 0x5

# Bits [24:19] (CKE, unused, CS_n, RAS_n, CAS_n, WE_n) of each DDR command.
_CMD_REF = 0x21
_CMD_PRE = 0x22
_CMD_ACT = 0x23
_CMD_WR = 0x24
_CMD_RD = 0x25
_CMD_ZQ = 0x26

_A10 = 1 << 10
_A12 = 1 << 12
_COL_MASK = 0x3FF


class IsaError(ValueError):
    """An instruction field is out of range, or a word is not a valid instruction."""


class BusDirection(enum.IntEnum):
    """Direction of the tester's data bus, as encoded in SET_BUS_DIR bits [1:0]."""

    READ = 0b00
    WRITE = 0b10


def _show(value: object) -> str:
    """``repr(value)`` for a message: one short line, even for a 5000-digit integer.

    (``repr`` of an int above Python's int-string conversion limit raises ValueError.)
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"{'-' if value < 0 else ''}<{value.bit_length()}-bit integer>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a foreign object's repr must not hide the real error
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 60 else f"{text[:40]}...{text[-12:]}"


def _check(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise IsaError(f"{name} must be an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise IsaError(f"{name} {_show(value)} out of range {lo}..{hi}")


def _ddr(cmd: int, bank: int = 0, addr: int = 0, data_hi: int = 0) -> int:
    return _DDR_BIT | (data_hi << 25) | (cmd << 19) | (bank << 16) | addr


class _Base:
    """Common behaviour of all instructions (encoding, text form)."""

    mnemonic: ClassVar[str]
    is_ddr: ClassVar[bool] = False

    def encode(self) -> int:  # pragma: no cover - every subclass overrides
        raise TypeError(f"{type(self).__name__} cannot be encoded")

    def __str__(self) -> str:
        return self.to_text()

    def to_text(self) -> str:
        """Return the assembler text of this instruction (``softmc_host.asm`` syntax)."""
        return self.mnemonic


@dataclass(frozen=True)
class Act(_Base):
    """ACTIVATE ``row`` in ``bank``."""

    bank: int
    row: int
    mnemonic: ClassVar[str] = "ACT"
    is_ddr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check("bank", self.bank, 0, N_BANKS - 1)
        _check("row", self.row, 0, N_ROWS - 1)

    def encode(self) -> int:
        return _ddr(_CMD_ACT, self.bank, self.row)

    def to_text(self) -> str:
        return f"ACT {self.bank} {self.row}"


@dataclass(frozen=True)
class Pre(_Base):
    """PRECHARGE one bank."""

    bank: int
    mnemonic: ClassVar[str] = "PRE"
    is_ddr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check("bank", self.bank, 0, N_BANKS - 1)

    def encode(self) -> int:
        return _ddr(_CMD_PRE, self.bank, 0)

    def to_text(self) -> str:
        return f"PRE {self.bank}"


@dataclass(frozen=True)
class PreAll(_Base):
    """PRECHARGE all banks (A10 = 1)."""

    mnemonic: ClassVar[str] = "PREA"
    is_ddr: ClassVar[bool] = True

    def encode(self) -> int:
        return _ddr(_CMD_PRE, 0, _A10)


@dataclass(frozen=True)
class Rd(_Base):
    """READ one burst of 8 (64 bytes) from ``column`` of the open row in ``bank``."""

    bank: int
    column: int
    auto_precharge: bool = False
    mnemonic: ClassVar[str] = "RD"
    is_ddr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check("bank", self.bank, 0, N_BANKS - 1)
        _check("column", self.column, 0, N_COLUMNS - 1)
        object.__setattr__(self, "auto_precharge", bool(self.auto_precharge))

    def encode(self) -> int:
        return _ddr(_CMD_RD, self.bank, _A12 | (_A10 if self.auto_precharge else 0) | self.column)

    def to_text(self) -> str:
        return f"RD {self.bank} {self.column}" + (" AP" if self.auto_precharge else "")


@dataclass(frozen=True)
class Wr(_Base):
    """WRITE one burst to ``column``: stock SoftMC repeats ``data`` over all 64 bytes.

    If a :class:`WBuf` instruction precedes it, an extended firmware writes the
    loaded 64-byte buffer instead (see ``docs/write-data-extension.md``).
    """

    bank: int
    column: int
    data: int
    auto_precharge: bool = False
    mnemonic: ClassVar[str] = "WR"
    is_ddr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check("bank", self.bank, 0, N_BANKS - 1)
        _check("column", self.column, 0, N_COLUMNS - 1)
        _check("data", self.data, 0, 0xFF)
        object.__setattr__(self, "auto_precharge", bool(self.auto_precharge))

    def encode(self) -> int:
        addr = ((self.data & 0x3) << 14) | _A12 | (_A10 if self.auto_precharge else 0) | self.column
        return _ddr(_CMD_WR, self.bank, addr, self.data >> 2)

    def to_text(self) -> str:
        return f"WR {self.bank} {self.column} 0x{self.data:02X}" + (" AP" if self.auto_precharge else "")


@dataclass(frozen=True)
class Ref(_Base):
    """AUTO REFRESH (all banks must be precharged)."""

    mnemonic: ClassVar[str] = "REF"
    is_ddr: ClassVar[bool] = True

    def encode(self) -> int:
        return _ddr(_CMD_REF)


@dataclass(frozen=True)
class Zq(_Base):
    """ZQ calibration: short (ZQCS, A10 = 0) by default, long (ZQCL) if ``long``."""

    long: bool = False
    mnemonic: ClassVar[str] = "ZQ"
    is_ddr: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "long", bool(self.long))

    def encode(self) -> int:
        return _ddr(_CMD_ZQ, 0, _A10 if self.long else 0)

    def to_text(self) -> str:
        return "ZQ LONG" if self.long else "ZQ"


@dataclass(frozen=True)
class Wait(_Base):
    """Wait ``cycles`` DRAM clock cycles (1..1023)."""

    cycles: int
    mnemonic: ClassVar[str] = "WAIT"

    def __post_init__(self) -> None:
        _check("wait cycles", self.cycles, 1, MAX_WAIT_CYCLES)

    def encode(self) -> int:
        return (_OP_WAIT << 28) | self.cycles

    def to_text(self) -> str:
        return f"WAIT {self.cycles}"


@dataclass(frozen=True)
class SetBusDir(_Base):
    """Switch the data bus direction."""

    direction: BusDirection
    mnemonic: ClassVar[str] = "BUSDIR"

    def __post_init__(self) -> None:
        if isinstance(self.direction, bool):
            raise IsaError(f"bus direction must be READ or WRITE, got {_show(self.direction)}")
        try:
            object.__setattr__(self, "direction", BusDirection(self.direction))
        except (ValueError, TypeError):
            raise IsaError(f"bus direction must be READ or WRITE, got {_show(self.direction)}") from None

    def encode(self) -> int:
        return (_OP_BUSDIR << 28) | int(self.direction)

    def to_text(self) -> str:
        return f"BUSDIR {self.direction.name}"


@dataclass(frozen=True)
class SetTrefi(_Base):
    """Set the auto-refresh interval in 200 ns ticks (0 disables auto-refresh)."""

    value: int
    mnemonic: ClassVar[str] = "SET_TREFI"

    def __post_init__(self) -> None:
        _check("tREFI value", self.value, 0, MAX_REG_VALUE)

    def encode(self) -> int:
        return (_OP_TREFI << 28) | self.value

    def to_text(self) -> str:
        return f"SET_TREFI {self.value}"


@dataclass(frozen=True)
class SetTrfc(_Base):
    """Set tRFC in DRAM clock cycles."""

    value: int
    mnemonic: ClassVar[str] = "SET_TRFC"

    def __post_init__(self) -> None:
        _check("tRFC value", self.value, 0, MAX_REG_VALUE)

    def encode(self) -> int:
        return (_OP_TRFC << 28) | self.value

    def to_text(self) -> str:
        return f"SET_TRFC {self.value}"


@dataclass(frozen=True)
class End(_Base):
    """End of the program: the tester starts executing it."""

    mnemonic: ClassVar[str] = "END"

    def encode(self) -> int:
        return 0


@dataclass(frozen=True)
class WBuf(_Base):
    """Bridge extension: load the write buffer from entry ``index`` of the write-data table.

    The next WR writes those 64 bytes instead of repeating its data byte.
    Not part of stock SoftMC; see ``docs/write-data-extension.md``.
    """

    index: int
    mnemonic: ClassVar[str] = "WBUF"

    def __post_init__(self) -> None:
        _check("write-buffer index", self.index, 0, MAX_WBUF_INDEX)

    def encode(self) -> int:
        return (_OP_WBUF << 28) | self.index

    def to_text(self) -> str:
        return f"WBUF {self.index}"


Instruction = Union[Act, Pre, PreAll, Rd, Wr, Ref, Zq, Wait, SetBusDir, SetTrefi, SetTrfc, End, WBuf]


def _reject(word: int, why: str) -> IsaError:
    return IsaError(f"0x{word:08X} is not a valid instruction: {why}")


def _decode_ddr(word: int) -> Instruction:
    cmd = (word >> 19) & 0x3F
    bank = (word >> 16) & 0x7
    addr = word & 0xFFFF
    data_hi = (word >> 25) & 0x3F
    if cmd != _CMD_WR and data_hi:
        raise _reject(word, "write-data bits [30:25] set on a command other than WR")
    if cmd == _CMD_ACT:
        return Act(bank, addr)
    if cmd == _CMD_PRE:
        if addr == _A10:
            if bank:
                raise _reject(word, "bank bits set on PREA")
            return PreAll()
        if addr:
            raise _reject(word, "address bits other than A10 set on PRE")
        return Pre(bank)
    if cmd in (_CMD_RD, _CMD_WR):
        name = "RD" if cmd == _CMD_RD else "WR"
        if not addr & _A12:
            raise _reject(word, f"{name} without A12 (BC_n) set: only burst length 8 is supported")
        extra = addr & ~(_A12 | _A10 | _COL_MASK | (0xC000 if cmd == _CMD_WR else 0))
        if extra:
            raise _reject(word, f"unused address bits 0x{extra:04X} set on {name}")
        ap = bool(addr & _A10)
        col = addr & _COL_MASK
        if cmd == _CMD_RD:
            return Rd(bank, col, ap)
        return Wr(bank, col, (data_hi << 2) | (addr >> 14), ap)
    if cmd in (_CMD_REF, _CMD_ZQ):
        name = "REF" if cmd == _CMD_REF else "ZQ"
        if bank:
            raise _reject(word, f"bank bits set on {name}")
        if cmd == _CMD_ZQ and addr in (0, _A10):
            return Zq(bool(addr))
        if addr:
            raise _reject(word, f"address bits set on {name}")
        return Ref()
    raise _reject(word, f"unknown DDR command bits [24:19] = 0x{cmd:02X}")


def decode(word: int) -> Instruction:
    """Decode one 32-bit instruction word.

    Parameters
    ----------
    word : int
        The instruction, 0 <= word < 2**32.

    Returns
    -------
    Instruction
        The decoded instruction; ``decode(word).encode() == word``.

    Raises
    ------
    IsaError
        If the word is out of range or is not a word the encoder can produce
        (unknown opcode, reserved bits set, field out of range).
    """
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word <= 0xFFFFFFFF:
        raise IsaError(f"instruction word must be a 32-bit unsigned integer, got {_show(word)}")
    if word & _DDR_BIT:
        return _decode_ddr(word)
    op = word >> 28
    payload = word & 0x0FFFFFFF
    if op == _OP_END:
        if payload:
            raise _reject(word, "END with nonzero bits")
        return End()
    if op == _OP_BUSDIR:
        if payload not in (BusDirection.READ, BusDirection.WRITE):
            raise _reject(word, "SET_BUS_DIR value must be 0b00 (READ) or 0b10 (WRITE)")
        return SetBusDir(BusDirection(payload))
    if op == _OP_TREFI:
        return SetTrefi(payload)
    if op == _OP_TRFC:
        return SetTrfc(payload)
    if op == _OP_WAIT:
        if payload > MAX_WAIT_CYCLES:
            raise _reject(word, "WAIT bits above [9:0] set")
        if payload == 0:
            raise _reject(word, "WAIT of 0 cycles")
        return Wait(payload)
    if op == _OP_WBUF:
        if payload > MAX_WBUF_INDEX:
            raise _reject(word, "WBUF bits above [12:0] set")
        return WBuf(payload)
    raise _reject(word, f"unknown opcode 0b{op:04b}")


# Whole programs as arrays -----------------------------------------------------------------


class Kind(enum.IntEnum):
    """Kind code of a word in :class:`DecodedWords` (``INVALID``: a word :func:`decode` rejects)."""

    END = 0
    BUSDIR = 1
    TREFI = 2
    TRFC = 3
    WAIT = 4
    WBUF = 5
    ACT = 6
    PRE = 7
    PREA = 8
    RD = 9
    WR = 10
    REF = 11
    ZQ = 12
    INVALID = 255


#: The instruction class of each kind (``KIND_CLASS[Kind.RD] is Rd``).
KIND_CLASS: dict[Kind, type] = {
    Kind.END: End, Kind.BUSDIR: SetBusDir, Kind.TREFI: SetTrefi, Kind.TRFC: SetTrfc, Kind.WAIT: Wait,
    Kind.WBUF: WBuf, Kind.ACT: Act, Kind.PRE: Pre, Kind.PREA: PreAll, Kind.RD: Rd, Kind.WR: Wr, Kind.REF: Ref,
    Kind.ZQ: Zq,
}


class DecodedWords:
    """An array of instruction words, decoded field by field (all arrays of the words' length).

    Attributes
    ----------
    kind : numpy.ndarray
        uint8 :class:`Kind` code of each word.
    bank : numpy.ndarray
        int64 bank of ACT, PRE, RD and WR (0 for the others).
    field : numpy.ndarray
        int64: the row of ACT, the column of RD/WR, the cycles of WAIT, the index of WBUF,
        the value of SET_TREFI/SET_TRFC, the direction of SET_BUS_DIR, 1 for ZQ LONG; 0 otherwise.
    auto_precharge : numpy.ndarray
        bool, RD/WR with auto-precharge.
    data : numpy.ndarray
        int64 data byte of WR (0 for the others), worked out when first asked for.

    Fields of a word of kind ``INVALID`` mean nothing.
    """

    __slots__ = ("kind", "bank", "field", "auto_precharge", "_words", "_data")

    def __init__(self, kind: np.ndarray, bank: np.ndarray, field: np.ndarray, auto_precharge: np.ndarray,
                 words: np.ndarray) -> None:
        self.kind = kind
        self.bank = bank
        self.field = field
        self.auto_precharge = auto_precharge
        self._words = words
        self._data: np.ndarray | None = None

    @property
    def data(self) -> np.ndarray:
        """int64 data byte of WR (0 for the others)."""
        if self._data is None:
            w = self._words
            self._data = np.where(self.kind == Kind.WR, ((w >> 23) & 0xFC) | ((w >> 14) & 3), 0)
        return self._data

    def __len__(self) -> int:
        return len(self.kind)


_U32 = 0xFFFFFFFF
_RD_ALLOWED = _A12 | _A10 | _COL_MASK
_WR_ALLOWED = _RD_ALLOWED | 0xC000


def _decode_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables of :func:`decode_words`, built once.

    A word's kind is ``KIND[CLASS[word >> 16], word & 0xFFFF]`` (``KIND`` flattened): the high
    half selects a class (which command, and which low halves it allows), the class's row gives
    the kind of each low half (``CLASS`` holds each class already shifted to its row's start).
    Then ``field = word & FIELD_MASK[kind]`` (ZQ's A10 shifted to bit 0).  (Equivalence with :func:`decode` is tested word by word.)
    """
    hi = np.arange(1 << 16, dtype=np.int64)
    lo = np.arange(1 << 16, dtype=np.int64)
    classes = [Kind.INVALID, Kind.END, Kind.BUSDIR, Kind.TREFI, Kind.TRFC, Kind.WAIT, Kind.WBUF, Kind.ACT,
               "PRE0", Kind.PRE, Kind.RD, Kind.WR, Kind.REF, Kind.ZQ]
    index = {c: i for i, c in enumerate(classes)}
    cls = np.zeros(1 << 16, np.uint8)
    op, upper = hi >> 12, hi & 0xFFF
    for code, opcode in ((Kind.END, _OP_END), (Kind.BUSDIR, _OP_BUSDIR), (Kind.WAIT, _OP_WAIT), (Kind.WBUF, _OP_WBUF)):
        cls[(op == opcode) & (upper == 0)] = index[code]
    cls[op == _OP_TREFI] = index[Kind.TREFI]
    cls[op == _OP_TRFC] = index[Kind.TRFC]
    ddr = op >= 8
    data_hi, cmd, bank = (hi >> 9) & 0x3F, (hi >> 3) & 0x3F, hi & 7
    plain = ddr & (data_hi == 0)
    cls[plain & (cmd == _CMD_ACT)] = index[Kind.ACT]
    cls[plain & (cmd == _CMD_PRE)] = index[Kind.PRE]
    cls[plain & (cmd == _CMD_PRE) & (bank == 0)] = index["PRE0"]
    cls[plain & (cmd == _CMD_RD)] = index[Kind.RD]
    cls[ddr & (cmd == _CMD_WR)] = index[Kind.WR]
    cls[plain & (cmd == _CMD_REF) & (bank == 0)] = index[Kind.REF]
    cls[plain & (cmd == _CMD_ZQ) & (bank == 0)] = index[Kind.ZQ]
    kind = np.full((len(classes), 1 << 16), Kind.INVALID, np.uint8)
    a12 = (lo & _A12) != 0
    rows = {
        Kind.END: lo == 0,
        Kind.BUSDIR: (lo == BusDirection.READ) | (lo == BusDirection.WRITE),
        Kind.TREFI: np.ones(1 << 16, bool),
        Kind.TRFC: np.ones(1 << 16, bool),
        Kind.WAIT: (lo >= 1) & (lo <= MAX_WAIT_CYCLES),
        Kind.WBUF: lo <= MAX_WBUF_INDEX,
        Kind.ACT: np.ones(1 << 16, bool),
        Kind.PRE: lo == 0,
        Kind.RD: a12 & ((lo & ~_RD_ALLOWED) == 0),
        Kind.WR: a12 & ((lo & ~_WR_ALLOWED) == 0),
        Kind.REF: lo == 0,
        Kind.ZQ: (lo == 0) | (lo == _A10),
    }
    for code, allowed in rows.items():
        kind[index[code], allowed] = code
    kind[index["PRE0"], lo == 0] = Kind.PRE
    kind[index["PRE0"], lo == _A10] = Kind.PREA
    field_mask = np.zeros(256, np.int64)
    for code in (Kind.END, Kind.BUSDIR, Kind.TREFI, Kind.TRFC, Kind.WAIT, Kind.WBUF):
        field_mask[code] = 0x0FFFFFFF
    field_mask[Kind.ACT] = 0xFFFF
    field_mask[Kind.RD] = field_mask[Kind.WR] = _COL_MASK
    field_mask[Kind.ZQ] = _A10  # shifted down to 0/1 by decode_words
    return cls.astype(np.int64) << 16, kind.ravel(), field_mask


_TABLES: tuple[np.ndarray, ...] | None = None


def decode_words(words: np.ndarray | Sequence[int]) -> DecodedWords:
    """Decode many instruction words at once; exactly the words :func:`decode` accepts are valid.

    Parameters
    ----------
    words : numpy.ndarray or sequence of int
        The words (any integer dtype; values outside 0..2**32-1 are invalid).

    Returns
    -------
    DecodedWords
        Kind and fields of every word; a word :func:`decode` would reject has kind ``INVALID``
        (call :func:`decode` on it for the reason).
    """
    global _TABLES
    if _TABLES is None:
        _TABLES = _decode_tables()
    cls, kind_table, field_mask = _TABLES
    raw = np.asarray(words)
    if raw.dtype == np.int64 or raw.dtype == np.uint32:
        w = raw.astype(np.int64, copy=False)
        in_range = None if raw.dtype == np.uint32 else (w >> 32) == 0
    elif raw.dtype.kind == "u":
        in_range = raw <= _U32
        w = (raw & _U32).astype(np.int64)
    else:
        w = raw.astype(np.int64)
        in_range = (w >> 32) == 0
    if in_range is not None and not in_range.all():
        w = np.where(in_range, w, 0)
    else:
        in_range = None
    high = w >> 16
    kind = np.take(kind_table, np.take(cls, high) | (w & 0xFFFF))
    if in_range is not None:
        kind[~in_range] = Kind.INVALID
    field = w & np.take(field_mask, kind)
    zq = kind == Kind.ZQ
    if zq.any():
        field[zq] >>= 10
    # Bits [18:16] are the bank of a DDR command; valid PREA, REF and ZQ have them 0.
    bank = (high & 7) * (w >> 31)
    ap = (w & _A10) != 0
    ap &= (kind == Kind.RD) | (kind == Kind.WR)
    return DecodedWords(kind, bank, field, ap, w)


def _encode_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per kind (0..255): lowest and highest field value (lo > hi: not a kind), DDR command, opcode bits."""
    lo = np.ones(256, np.int64)
    hi = np.zeros(256, np.int64)
    limits = {
        Kind.END: (0, 0), Kind.BUSDIR: (0, 2), Kind.TREFI: (0, MAX_REG_VALUE), Kind.TRFC: (0, MAX_REG_VALUE),
        Kind.WAIT: (1, MAX_WAIT_CYCLES), Kind.WBUF: (0, MAX_WBUF_INDEX), Kind.ACT: (0, N_ROWS - 1),
        Kind.PRE: (0, 0), Kind.PREA: (0, 0), Kind.RD: (0, N_COLUMNS - 1), Kind.WR: (0, N_COLUMNS - 1),
        Kind.REF: (0, 0), Kind.ZQ: (0, 1),
    }
    for code, (low, high) in limits.items():
        lo[code], hi[code] = low, high
    cmd = np.zeros(256, np.int64)
    for code, value in ((Kind.ACT, _CMD_ACT), (Kind.PRE, _CMD_PRE), (Kind.PREA, _CMD_PRE), (Kind.RD, _CMD_RD),
                        (Kind.WR, _CMD_WR), (Kind.REF, _CMD_REF), (Kind.ZQ, _CMD_ZQ)):
        cmd[code] = value
    opcode = np.zeros(256, np.int64)
    for code, value in ((Kind.END, _OP_END), (Kind.BUSDIR, _OP_BUSDIR), (Kind.TREFI, _OP_TREFI),
                        (Kind.TRFC, _OP_TRFC), (Kind.WAIT, _OP_WAIT), (Kind.WBUF, _OP_WBUF)):
        opcode[code] = value << 28
    return lo, hi, cmd, opcode


_ENCODE_TABLES = _encode_tables()


def encode_words(
    kind: np.ndarray | Sequence[int],
    bank: np.ndarray | Sequence[int] | int = 0,
    field: np.ndarray | Sequence[int] | int = 0,
    data: np.ndarray | Sequence[int] | int = 0,
    auto_precharge: np.ndarray | Sequence[bool] | bool = False,
) -> np.ndarray:
    """Encode many instructions at once: the inverse of :func:`decode_words` (int64 words).

    Arguments broadcast against ``kind`` and mean what the :class:`DecodedWords` fields mean.

    Raises
    ------
    IsaError
        If a kind is unknown or a field is out of its range (naming the first such word).
    """
    k = np.asarray(kind, np.int64)
    b, f, d = (np.broadcast_to(np.asarray(x, np.int64), k.shape) for x in (bank, field, data))
    ap = np.broadcast_to(np.asarray(auto_precharge, bool), k.shape)
    lo, hi, cmd_table, opcode_table = _ENCODE_TABLES
    known = (k >= 0) & (k < 256)
    kk = np.where(known, k, Kind.INVALID)
    bad = ~known | (f < lo[kk]) | (f > hi[kk]) | (b < 0) | (b >= N_BANKS) | (d < 0) | (d > 0xFF)
    bad |= (kk == Kind.BUSDIR) & (f == 1)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise IsaError(
            f"word {i}: kind {int(k.ravel()[i])}, bank {int(b.ravel()[i])}, field {int(f.ravel()[i])}, "
            f"data {int(d.ravel()[i])} cannot be encoded"
        )
    ddr_cmd = cmd_table[kk]
    is_rw = (kk == Kind.RD) | (kk == Kind.WR)
    is_wr = kk == Kind.WR
    addr = np.where(kk == Kind.ACT, f, 0)
    addr = np.where(is_rw, _A12 | np.where(ap, _A10, 0) | f, addr)
    addr = np.where(is_wr, addr | ((d & 0x3) << 14), addr)
    addr = np.where((kk == Kind.PREA) | ((kk == Kind.ZQ) & (f != 0)), _A10, addr)
    has_bank = is_rw | (kk == Kind.ACT) | (kk == Kind.PRE)
    ddr = _DDR_BIT | np.where(is_wr, d >> 2, 0) << 25 | ddr_cmd << 19 | np.where(has_bank, b, 0) << 16 | addr
    return np.where(ddr_cmd != 0, ddr, opcode_table[kk] | f)
