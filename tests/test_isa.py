"""Tests of the SoftMC instruction encoding (softmc_host.isa).

Known words are computed by hand from the facts in the shared ``softmc-isa.md``
reference, not from the implementation.  Property tests use hypothesis with
``derandomize=True`` so every run draws the same examples.
"""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softmc_host.isa import (
    MAX_REG_VALUE,
    MAX_WAIT_CYCLES,
    MAX_WBUF_INDEX,
    N_BANKS,
    N_COLUMNS,
    N_ROWS,
    Act,
    BusDirection,
    End,
    IsaError,
    Pre,
    PreAll,
    Rd,
    Ref,
    SetBusDir,
    SetTrefi,
    SetTrfc,
    Wait,
    WBuf,
    Wr,
    Zq,
    decode,
)

DETERMINISTIC = settings(derandomize=True, max_examples=300, deadline=None)

# Bits [24:19] (CKE, unused, CS_n, RAS_n, CAS_n, WE_n) of the six DDR commands.
REF_CMD, PRE_CMD, ACT_CMD, WR_CMD, RD_CMD, ZQ_CMD = 0x21, 0x22, 0x23, 0x24, 0x25, 0x26
DDR_CMDS = (REF_CMD, PRE_CMD, ACT_CMD, WR_CMD, RD_CMD, ZQ_CMD)


def test_geometry_constants():
    assert (N_BANKS, N_ROWS, N_COLUMNS) == (8, 65536, 1024)
    assert (MAX_WAIT_CYCLES, MAX_REG_VALUE, MAX_WBUF_INDEX) == (1023, 2**28 - 1, 8191)


# ---------------------------------------------------------------------------
# Round trip of every instruction class, at the field extremes and in between
# ---------------------------------------------------------------------------

BANKS = (0, 1, 7)
ROWS = (0, 1, 0x1234, 32767, 32768, 65535)
COLUMNS = (0, 1, 512, 1023)
DATA = (0, 1, 2, 3, 0x7F, 0x80, 0xA7, 0xFC, 0xFF)
WAITS = (1, 2, 5, 1022, 1023)
REG_VALUES = (0, 1, 39, 2**27, 2**28 - 1)
WBUF_INDICES = (0, 1, 4096, 8191)
FLAGS = (False, True)


def boundary_instructions():
    yield from (Act(b, r) for b, r in itertools.product(BANKS, ROWS))
    yield from (Pre(b) for b in BANKS)
    yield PreAll()
    yield from (Rd(b, c, ap) for b, c, ap in itertools.product(BANKS, COLUMNS, FLAGS))
    yield from (Wr(b, c, d, ap) for b, c, d, ap in itertools.product(BANKS, COLUMNS, DATA, FLAGS))
    yield Ref()
    yield Zq()
    yield Zq(long=True)
    yield from (Wait(n) for n in WAITS)
    yield SetBusDir(BusDirection.READ)
    yield SetBusDir(BusDirection.WRITE)
    yield from (SetTrefi(v) for v in REG_VALUES)
    yield from (SetTrfc(v) for v in REG_VALUES)
    yield End()
    yield from (WBuf(i) for i in WBUF_INDICES)


def test_round_trip_at_field_extremes():
    seen_classes = set()
    seen_words = {}
    for instruction in boundary_instructions():
        word = instruction.encode()
        assert 0 <= word <= 0xFFFFFFFF, instruction
        decoded = decode(word)
        assert decoded == instruction
        assert type(decoded) is type(instruction)
        # Distinct instructions never share a word.
        assert seen_words.setdefault(word, instruction) == instruction
        seen_classes.add(type(instruction))
    assert seen_classes == {Act, Pre, PreAll, Rd, Wr, Ref, Zq, Wait, SetBusDir, SetTrefi, SetTrfc, End, WBuf}


def test_ddr_commands_set_cke_and_leave_bit_23_clear():
    for instruction in boundary_instructions():
        word = instruction.encode()
        assert bool(word >> 31) == instruction.is_ddr
        if instruction.is_ddr:
            assert word >> 24 & 1 == 1, instruction  # CKE
            assert word >> 23 & 1 == 0, instruction  # unused bit


banks = st.integers(0, N_BANKS - 1)
columns = st.integers(0, N_COLUMNS - 1)

instructions = st.one_of(
    st.builds(Act, banks, st.integers(0, N_ROWS - 1)),
    st.builds(Pre, banks),
    st.just(PreAll()),
    st.builds(Rd, banks, columns, st.booleans()),
    st.builds(Wr, banks, columns, st.integers(0, 0xFF), st.booleans()),
    st.just(Ref()),
    st.builds(Zq, st.booleans()),
    st.builds(Wait, st.integers(1, MAX_WAIT_CYCLES)),
    st.builds(SetBusDir, st.sampled_from(BusDirection)),
    st.builds(SetTrefi, st.integers(0, MAX_REG_VALUE)),
    st.builds(SetTrfc, st.integers(0, MAX_REG_VALUE)),
    st.just(End()),
    st.builds(WBuf, st.integers(0, MAX_WBUF_INDEX)),
)


@DETERMINISTIC
@given(instructions)
def test_round_trip_any_instruction(instruction):
    assert decode(instruction.encode()) == instruction


@DETERMINISTIC
@given(banks, columns, st.integers(0, 0xFF), st.booleans())
def test_wr_data_byte_is_split_between_bits_30_25_and_a15_a14(bank, column, data, ap):
    word = Wr(bank, column, data, ap).encode()
    assert (word >> 25) & 0x3F == data >> 2
    assert (word >> 14) & 0x3 == data & 0x3
    assert (word >> 16) & 0x7 == bank
    assert word & 0x3FF == column
    assert (word >> 12) & 1 == 1  # A12: burst of 8
    assert (word >> 10) & 1 == int(ap)


# ---------------------------------------------------------------------------
# Arbitrary words: decode rejects them or returns the instruction that encodes them
# ---------------------------------------------------------------------------


def check_word(word):
    """Decode ``word``; it must either be rejected or round-trip exactly. Return True if it decoded."""
    try:
        instruction = decode(word)
    except IsaError:
        return False
    assert instruction.encode() == word, f"0x{word:08X} decoded to {instruction!r}"
    return True


@DETERMINISTIC
@given(st.integers(0, 2**32 - 1))
def test_any_32_bit_word_is_rejected_or_round_trips(word):
    check_word(word)


def mostly_zero(bits):
    """Integers of ``bits`` bits, zero about half the time (reserved bits are usually clear)."""
    return st.one_of(st.just(0), st.integers(0, (1 << bits) - 1))


@st.composite
def ddr_words(draw):
    """Words with bit 31 set and one of the six command codes, mostly well-formed."""
    cmd = draw(st.sampled_from(DDR_CMDS))
    bank = draw(st.integers(0, 7))
    address = draw(
        st.one_of(
            st.integers(0, 0xFFFF),
            # A well-formed RD/WR address: data bits [1:0], A12, optional A10, column.
            st.builds(
                lambda low, ap, col: low << 14 | 1 << 12 | ap << 10 | col,
                st.integers(0, 3),
                st.integers(0, 1),
                st.integers(0, 1023),
            ),
            st.sampled_from([0, 1 << 10]),
        )
    )
    data_hi = draw(mostly_zero(6))
    bit23 = draw(st.sampled_from([0, 0, 0, 1]))
    return 1 << 31 | data_hi << 25 | cmd << 19 | bit23 << 23 | bank << 16 | address


@DETERMINISTIC
@given(ddr_words())
def test_ddr_words_are_rejected_or_round_trip(word):
    decoded = check_word(word)
    if word >> 23 & 1:
        assert not decoded, f"0x{word:08X} has bit 23 set"


@DETERMINISTIC
@given(st.integers(0, 7), st.one_of(st.integers(0, 0x3FF), st.integers(0, 0xFFFFFFF)))
def test_non_ddr_words_are_rejected_or_round_trip(opcode, payload):
    decoded = check_word(opcode << 28 | payload)
    if opcode in (0x6, 0x7):
        assert not decoded


def test_decoder_accepts_exactly_the_encodable_address_patterns():
    """Sweep all 2**16 address values of a command and bank, and count the accepted words.

    ACT accepts every row (checked by the round-trip tests), so it is left out to save time.
    """
    sweeps = [
        (PRE_CMD, 0, 2),  # PRE bank 0 and PREA
        (PRE_CMD, 7, 1),  # PREA only exists in bank 0
        (RD_CMD, 2, 2 * 1024),  # A12 set, A10 either way, any column
        (WR_CMD, 5, 4 * 2 * 1024),  # as RD, plus data bits [1:0] in A[15:14]
        (REF_CMD, 0, 1),  # no address bits (bank bits: see INVALID_WORDS)
        (ZQ_CMD, 0, 2),  # short and long
    ]
    for cmd, bank, want in sweeps:
        base = 1 << 31 | cmd << 19 | bank << 16
        accepted = sum(check_word(base | address) for address in range(1 << 16))
        assert accepted == want, (hex(cmd), bank)


# ---------------------------------------------------------------------------
# Exact words computed by hand from the reference
# ---------------------------------------------------------------------------

KNOWN_WORDS = [
    # Worked example from the reference:
    #   bit31 0x80000000 | cmd 0x23 << 19 = 0x01180000 | bank 1 << 16 = 0x10000 | row 0x1234
    (Act(1, 0x1234), 0x81191234),
    # ACT bank 7, row 0xFFFF: 0x80000000 | 0x01180000 | 0x70000 | 0xFFFF
    (Act(7, 0xFFFF), 0x811FFFFF),
    # END: opcode 0000, no payload.
    (End(), 0x00000000),
    # PRE bank 3: 0x80000000 | 0x22 << 19 = 0x01100000 | 3 << 16 = 0x30000
    (Pre(3), 0x81130000),
    # PREA: 0x80000000 | 0x01100000 | A10 = 0x400, bank 0
    (PreAll(), 0x81100400),
    # RD bank 2 col 8: 0x80000000 | 0x25 << 19 = 0x01280000 | 2 << 16 = 0x20000 | A12 0x1000 | 8
    (Rd(2, 8), 0x812A1008),
    # ... with auto-precharge adds A10 = 0x400.
    (Rd(2, 8, auto_precharge=True), 0x812A1408),
    # WR bank 5 col 16 data 0xA7 = 0b1010_0111:
    #   data[7:2] = 0b101001 = 0x29 -> 0x29 << 25 = 0x52000000
    #   data[1:0] = 0b11 -> A[15:14] = 0xC000
    #   0x80000000 | 0x52000000 | 0x24 << 19 = 0x01200000 | 5 << 16 = 0x50000
    #   | 0xC000 | A12 0x1000 | col 0x10  = 0xD325D010
    (Wr(5, 16, 0xA7), 0xD325D010),
    # ... with auto-precharge: | 0x400
    (Wr(5, 16, 0xA7, auto_precharge=True), 0xD325D410),
    # WR bank 0 col 0 data 0xFF: 0x3F << 25 = 0x7E000000 | 0x01200000 | 0xC000 | 0x1000
    (Wr(0, 0, 0xFF), 0xFF20D000),
    # REF: 0x80000000 | 0x21 << 19 = 0x01080000
    (Ref(), 0x81080000),
    # ZQ short (A10 = 0): 0x80000000 | 0x26 << 19 = 0x01300000
    (Zq(), 0x81300000),
    # ZQ long: A10 = 1 -> | 0x400
    (Zq(long=True), 0x81300400),
    # WAIT 1023: opcode 0100 -> 0x40000000 | 0x3FF
    (Wait(1023), 0x400003FF),
    (Wait(1), 0x40000001),
    # SET_BUS_DIR: opcode 0001 -> 0x10000000 | 0b10 (WRITE) or 0b00 (READ)
    (SetBusDir(BusDirection.WRITE), 0x10000002),
    (SetBusDir(BusDirection.READ), 0x10000000),
    # SET_TREFI 39 (7.8 us / 200 ns): opcode 0010 -> 0x20000000 | 39 = 0x27
    (SetTrefi(39), 0x20000027),
    (SetTrefi(2**28 - 1), 0x2FFFFFFF),
    # SET_TRFC 44 (110 ns / 2.5 ns): opcode 0011 -> 0x30000000 | 44 = 0x2C
    (SetTrfc(44), 0x3000002C),
    (SetTrfc(0), 0x30000000),
    # WBUF 8191 (bridge extension): opcode 0101 -> 0x50000000 | 0x1FFF
    (WBuf(8191), 0x50001FFF),
]


@pytest.mark.parametrize("instruction, word", KNOWN_WORDS, ids=lambda x: f"0x{x:08X}" if isinstance(x, int) else None)
def test_known_words(instruction, word):
    assert instruction.encode() == word
    assert decode(word) == instruction


# ---------------------------------------------------------------------------
# Out-of-range and mistyped fields
# ---------------------------------------------------------------------------

BAD_FIELDS = [
    (lambda: Act(8, 0), "bank"),
    (lambda: Act(-1, 0), "bank"),
    (lambda: Act(0, 65536), "row"),
    (lambda: Act(0, -1), "row"),
    (lambda: Act(1.5, 0), "bank"),
    (lambda: Act(0, True), "row"),
    (lambda: Act(0, "5"), "row"),
    (lambda: Pre(8), "bank"),
    (lambda: Pre(True), "bank"),
    (lambda: Rd(0, 1024), "column"),
    (lambda: Rd(0, -1), "column"),
    (lambda: Rd(8, 0), "bank"),
    (lambda: Rd(0, 1.5), "column"),
    (lambda: Wr(0, 1024, 0), "column"),
    (lambda: Wr(0, 0, 0x100), "data"),
    (lambda: Wr(0, 0, -1), "data"),
    (lambda: Wr(0, 0, 1.5), "data"),
    (lambda: Wr(0, 0, False), "data"),
    (lambda: Wr(-1, 0, 0), "bank"),
    (lambda: Wait(0), "wait"),
    (lambda: Wait(1024), "wait"),
    (lambda: Wait(-5), "wait"),
    (lambda: Wait(True), "wait"),
    (lambda: Wait(2.0), "wait"),
    (lambda: SetTrefi(2**28), "trefi"),
    (lambda: SetTrefi(-1), "trefi"),
    (lambda: SetTrfc(2**28), "trfc"),
    (lambda: SetTrfc(-1), "trfc"),
    (lambda: SetTrfc(1.5), "trfc"),
    (lambda: WBuf(8192), "write-buffer index"),
    (lambda: WBuf(-1), "write-buffer index"),
    (lambda: SetBusDir(1), "bus direction"),
    (lambda: SetBusDir(3), "bus direction"),
    (lambda: SetBusDir("WRITE"), "bus direction"),
]


@pytest.mark.parametrize("build, field", BAD_FIELDS)
def test_out_of_range_field_raises_naming_the_field(build, field):
    with pytest.raises(IsaError) as info:
        build()
    assert field in str(info.value).lower()


def test_isa_error_is_a_value_error():
    with pytest.raises(ValueError):
        Act(8, 0)


# ---------------------------------------------------------------------------
# Invalid words
# ---------------------------------------------------------------------------

INVALID_WORDS = [
    0x60000000,  # opcode 0110: unknown
    0x70000000,  # opcode 0111: unknown
    0x6000000F,
    0x00000001,  # END with payload
    0x08000000,  # END with payload
    0x10000001,  # SET_BUS_DIR 0b01
    0x10000003,  # SET_BUS_DIR 0b11
    0x10000006,  # SET_BUS_DIR: bit 2 set
    0x40000000,  # WAIT 0
    0x40000400,  # WAIT: bit 10 set
    0x48000001,  # WAIT: reserved bit 27 set
    0x50002000,  # WBUF: bit 13 set
    0x81991234,  # ACT with bit 23 set
    0x80191234,  # ACT with CKE (bit 24) clear
    0x83191234,  # ACT with write-data bits [30:25] set
    0x812A0008,  # RD without A12
    0x812A0408,  # RD AP without A12
    0x812A1808,  # RD with A11 set
    0x812A3008,  # RD with A13 set
    0x812A5008,  # RD with A14 set (data bits belong to WR only)
    0x832A1008,  # RD with write-data bit 25 set
    0xD3250010,  # WR without A12
    0xD325F010,  # WR with A13 set
    0x81130001,  # PRE with an address bit set
    0x81130400,  # PREA with bank bits set
    0x81100C00,  # PRE with A10 and A11
    0x81090000,  # REF in bank 1
    0x81080001,  # REF with an address bit
    0x81080400,  # REF with A10
    0x81310000,  # ZQ in bank 1
    0x81300001,  # ZQ with an address bit
    0x81000000,  # bits [24:19] = 0x20 (MRS): not a SoftMC command
    0x81380000,  # bits [24:19] = 0x27 (NOP)
    0x81F80000,  # bits [24:19] = 0x3F
    0x80000000,  # bits [24:19] = 0
    0xFFFFFFFF,
]


@pytest.mark.parametrize("word", INVALID_WORDS, ids=lambda w: f"0x{w:08X}")
def test_invalid_word_raises(word):
    with pytest.raises(IsaError) as info:
        decode(word)
    assert f"0x{word:08X}" in str(info.value)


@pytest.mark.parametrize("word", [2**32, -1, 2**40, True, False, 1.0, "0x0", None])
def test_non_32_bit_word_raises(word):
    with pytest.raises(IsaError):
        decode(word)


@pytest.mark.parametrize(
    "build",
    [lambda: Wait(10**5000), lambda: Act(0, -(10**5000)), lambda: SetTrefi(2**20000), lambda: decode(10**5000),
     lambda: decode(-(10**5000)), lambda: SetBusDir(10**5000)],
    ids=["wait", "act-row", "trefi", "decode", "decode-negative", "busdir"],
)
def test_huge_values_give_a_short_isa_error(build):
    # Formatting an int of more than 4300 digits raises ValueError: the message must not try.
    with pytest.raises(IsaError) as info:
        build()
    message = str(info.value)
    assert "bit integer" in message and len(message) < 200 and "\n" not in message


def test_a_wait_longer_than_a_program_is_refused_before_building_it():
    # (10**10 cycles would be 9.8 million WAIT words; 10**12 would need 8 GB before the check)
    from softmc_host.program import MAX_WAIT_SLOTS_CYCLES, Program, ProgramError, wait_words

    assert len(wait_words(MAX_WAIT_SLOTS_CYCLES)) == 8192
    for cycles in (MAX_WAIT_SLOTS_CYCLES + 1, 10**10, 10**5000):
        with pytest.raises(ProgramError, match="does not fit in one program"):
            wait_words(cycles)
    with pytest.raises(ProgramError, match="whole number of cycles"):
        Program().wait(2.5)
