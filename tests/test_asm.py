"""Tests of the SoftMC assembler, disassembler and their command line (softmc_host.asm)."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softmc_host.asm import AsmError, assemble, disassemble, parse_line
from softmc_host.isa import (
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
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DETERMINISTIC = settings(derandomize=True, max_examples=200, deadline=None)

# ---------------------------------------------------------------------------
# parse_line
# ---------------------------------------------------------------------------

PARSED = [
    ("ACT 1 4660", Act(1, 0x1234)),
    ("act 0x1 0x1234", Act(1, 0x1234)),
    ("Act 7 0XFFFF", Act(7, 65535)),
    ("aCt 0 0", Act(0, 0)),
    ("PRE 3", Pre(3)),
    ("pre 0x7", Pre(7)),
    ("PREA", PreAll()),
    ("prea", PreAll()),
    ("RD 2 8", Rd(2, 8)),
    ("rd 0x2 0x8 ap", Rd(2, 8, auto_precharge=True)),
    ("Rd 7 1023 Ap", Rd(7, 1023, auto_precharge=True)),
    ("WR 5 16 0xA7", Wr(5, 16, 0xA7)),
    ("wr 5 0x10 167 AP", Wr(5, 16, 0xA7, auto_precharge=True)),
    ("wR 0 0 0xff", Wr(0, 0, 0xFF)),
    ("REF", Ref()),
    ("ref", Ref()),
    ("ZQ", Zq()),
    ("zq long", Zq(long=True)),
    ("Zq Long", Zq(long=True)),
    ("WAIT 1023", Wait(1023)),
    ("wait 0x3ff", Wait(1023)),
    ("Wait 1", Wait(1)),
    ("BUSDIR WRITE", SetBusDir(BusDirection.WRITE)),
    ("busdir read", SetBusDir(BusDirection.READ)),
    ("BusDir Write", SetBusDir(BusDirection.WRITE)),
    ("SET_TREFI 39", SetTrefi(39)),
    ("set_trefi 0xFFFFFFF", SetTrefi(2**28 - 1)),
    ("SET_TRFC 44", SetTrfc(44)),
    ("Set_Trfc 0x0", SetTrfc(0)),
    ("END", End()),
    ("end", End()),
    ("WBUF 8191", WBuf(8191)),
    ("wbuf 0x0", WBuf(0)),
    # Blanks and comments around an instruction.
    ("   ACT 1 2   # open row 2", Act(1, 2)),
    ("\tWAIT\t5\t", Wait(5)),
    ("END# no space before the comment", End()),
]


@pytest.mark.parametrize("line, expected", PARSED)
def test_parse_line(line, expected):
    assert parse_line(line) == expected


@pytest.mark.parametrize("line", ["", "   ", "\t", "# a comment", "   # indented comment # with two hashes"])
def test_blank_and_comment_lines_parse_to_none(line):
    assert parse_line(line) is None


BAD_LINES = [
    ("FOO 1 2", "FOO"),  # unknown mnemonic
    ("ACTIVATE 1 2", "ACTIVATE"),
    ("ACT 1", "ACT takes 2"),  # wrong argument counts
    ("ACT 1 2 3", "ACT takes 2"),
    ("PREA 0", "PREA takes 0"),
    ("RD 0", "RD takes 2 to 3"),
    ("WR 0 0 0 AP X", "WR takes 3 to 4"),
    ("END 0", "END takes 0"),
    ("WAIT", "WAIT takes 1"),
    ("ACT 8 0", "bank"),  # out-of-range fields
    ("ACT 0 65536", "row"),
    ("RD 0 1024", "column"),
    ("WR 0 0 256", "data"),
    ("WAIT 0", "wait"),
    ("WAIT 1024", "wait"),
    ("PRE -1", "bank"),
    ("SET_TREFI 0x10000000", "trefi"),
    ("WBUF 8192", "write-buffer index"),
    ("ACT one 0", "bank"),  # bad numbers
    ("WAIT 0x", "wait"),
    ("WAIT 0xZZ", "wait"),
    ("WAIT 1.5", "wait"),
    ("RD 0 0 XX", "AP"),  # bad flags and keywords
    ("ZQ SHORT", "LONG"),
    ("BUSDIR SIDEWAYS", "SIDEWAYS"),
]


@pytest.mark.parametrize("line, fragment", BAD_LINES)
def test_bad_line_raises_isa_error(line, fragment):
    with pytest.raises(IsaError) as info:
        parse_line(line)
    assert fragment.lower() in str(info.value).lower()


@pytest.mark.parametrize("token", ["0b101", "0o7", "1_000", "+5", "0x_1F", "\u0661"])
def test_numbers_are_only_decimal_or_0x_hex(token):
    with pytest.raises(IsaError, match="wait cycles"):
        parse_line(f"WAIT {token}")


@pytest.mark.parametrize("token, value", [("007", 7), ("010", 10), ("0x00A", 10), ("0XA", 10), ("1000", 1000)])
def test_decimal_with_leading_zeros_and_hex(token, value):
    assert parse_line(f"WAIT {token}") == Wait(value)


# ---------------------------------------------------------------------------
# assemble / disassemble
# ---------------------------------------------------------------------------

PROGRAM_TEXT = """\
# Write 0xA7 to bank 5, row 0x1234, column 16, then read it back.
SET_TREFI 0          # auto-refresh off
set_trfc 44

BUSDIR WRITE
wait 5
ACT 5 0x1234
WAIT 6               # tRCD
WR 5 16 0xA7 AP
Wait 0x20
busdir read
WAIT 5
act 5 4660
WAIT 6
rd 5 16
PRE 5
prea
REF
ZQ LONG
zq
WBUF 3
END
"""

PROGRAM = [
    SetTrefi(0),
    SetTrfc(44),
    SetBusDir(BusDirection.WRITE),
    Wait(5),
    Act(5, 0x1234),
    Wait(6),
    Wr(5, 16, 0xA7, auto_precharge=True),
    Wait(32),
    SetBusDir(BusDirection.READ),
    Wait(5),
    Act(5, 0x1234),
    Wait(6),
    Rd(5, 16),
    Pre(5),
    PreAll(),
    Ref(),
    Zq(long=True),
    Zq(),
    WBuf(3),
    End(),
]

# The same program as words, computed by hand from the ISA reference (see test_isa.py).
PROGRAM_WORDS = [
    "0x20000000",
    "0x3000002C",
    "0x10000002",
    "0x40000005",
    "0x811D1234",  # 0x80000000 | 0x23 << 19 = 0x01180000 | 5 << 16 = 0x50000 | 0x1234
    "0x40000006",
    "0xD325D410",  # 0xD325D010 | A10
    "0x40000020",
    "0x10000000",
    "0x40000005",
    "0x811D1234",
    "0x40000006",
    "0x812D1010",  # 0x80000000 | 0x25 << 19 | 5 << 16 | A12 | 16
    "0x81150000",  # 0x80000000 | 0x22 << 19 | 5 << 16
    "0x81100400",
    "0x81080000",
    "0x81300400",
    "0x81300000",
    "0x50000003",
    "0x00000000",
]

PROGRAM_DISASSEMBLY = [
    "SET_TREFI 0",
    "SET_TRFC 44",
    "BUSDIR WRITE",
    "WAIT 5",
    "ACT 5 4660",
    "WAIT 6",
    "WR 5 16 0xA7 AP",
    "WAIT 32",
    "BUSDIR READ",
    "WAIT 5",
    "ACT 5 4660",
    "WAIT 6",
    "RD 5 16",
    "PRE 5",
    "PREA",
    "REF",
    "ZQ LONG",
    "ZQ",
    "WBUF 3",
    "END",
]


def test_assemble_program_text():
    program = assemble(PROGRAM_TEXT.splitlines())
    assert program == PROGRAM
    assert [f"0x{i.encode():08X}" for i in program] == PROGRAM_WORDS


def test_assemble_then_disassemble_round_trip():
    program = assemble(PROGRAM_TEXT.splitlines())
    words = [f"0x{i.encode():08X}" for i in program]
    assert disassemble(words) == program
    # Without the 0x prefix, in lower case, with comments and blank lines.
    bare = ["# words", ""] + [f"{i.encode():08x}  # {i}" for i in program]
    assert disassemble(bare) == program
    # The disassembly text assembles to the same program.
    text = [i.to_text() for i in program]
    assert text == PROGRAM_DISASSEMBLY
    assert assemble(text) == program


def test_assemble_reports_the_physical_line_number():
    lines = ["# header", "", "ACT 1 2", "WAIT 6", "", "RD 9 0", "END"]
    with pytest.raises(AsmError) as info:
        assemble(lines)
    assert info.value.lineno == 6
    assert "bank" in info.value.message


def test_disassemble_reports_the_physical_line_number():
    with pytest.raises(AsmError) as info:
        disassemble(["0x81191234", "# comment", "", "0x60000000"])
    assert info.value.lineno == 4
    with pytest.raises(AsmError) as info:
        disassemble(["0x81191234", "xyz"])
    assert info.value.lineno == 2


banks = st.integers(0, 7)
columns = st.integers(0, 1023)
instructions = st.one_of(
    st.builds(Act, banks, st.integers(0, 65535)),
    st.builds(Pre, banks),
    st.just(PreAll()),
    st.builds(Rd, banks, columns, st.booleans()),
    st.builds(Wr, banks, columns, st.integers(0, 255), st.booleans()),
    st.just(Ref()),
    st.builds(Zq, st.booleans()),
    st.builds(Wait, st.integers(1, 1023)),
    st.builds(SetBusDir, st.sampled_from(BusDirection)),
    st.builds(SetTrefi, st.integers(0, 2**28 - 1)),
    st.builds(SetTrfc, st.integers(0, 2**28 - 1)),
    st.just(End()),
    st.builds(WBuf, st.integers(0, 8191)),
)


@DETERMINISTIC
@given(st.lists(instructions, max_size=20), st.sampled_from([str, str.lower, str.swapcase]))
def test_text_and_word_round_trip(program, case):
    text = [case(i.to_text()) for i in program]
    assert assemble(text) == program
    assert disassemble([f"0x{i.encode():08X}" for i in program]) == program


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def run_cli(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "softmc_host.asm", *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_assembles_a_file(tmp_path):
    source = tmp_path / "prog.smc"
    source.write_text(PROGRAM_TEXT)
    result = run_cli(str(source))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PROGRAM_WORDS
    assert result.stdout.endswith("\n")
    assert result.stderr == ""


def test_cli_assembles_stdin():
    result = run_cli("-", stdin="act 1 0x1234\nEND\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0x81191234\n0x00000000\n"


def test_cli_empty_input_gives_no_output():
    result = run_cli("-", stdin="# nothing here\n\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_cli_disassembles_a_file(tmp_path):
    words = tmp_path / "prog.hex"
    words.write_text("# program\n" + "\n".join(PROGRAM_WORDS) + "\n\n")
    result = run_cli("--disasm", str(words))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == PROGRAM_DISASSEMBLY


def test_cli_disassembles_stdin():
    result = run_cli("--disasm", "-", stdin="81191234\n0xD325D010\n10000002\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ACT 1 4660\nWR 5 16 0xA7\nBUSDIR WRITE\n"


def test_cli_assemble_disassemble_round_trip():
    words = run_cli("-", stdin=PROGRAM_TEXT).stdout
    text = run_cli("--disasm", "-", stdin=words).stdout
    assert text.splitlines() == PROGRAM_DISASSEMBLY
    again = run_cli("-", stdin=text).stdout
    assert again == words


CLI_BAD_SOURCES = [
    ("ACT 1 2\n\n# comment\nFROB 3\n", 4, "FROB"),  # unknown mnemonic
    ("ACT 1\n", 1, "ACT takes 2"),  # wrong argument count
    ("ACT 1 2\nWAIT 6\nRD 0 1024\n", 3, "column"),  # out-of-range field
    ("\n\nWAIT 0x1G\n", 3, "not a decimal or 0x-hex number"),  # bad number
]


@pytest.mark.parametrize("source, lineno, fragment", CLI_BAD_SOURCES)
def test_cli_bad_line_in_file(tmp_path, source, lineno, fragment):
    path = tmp_path / "bad.smc"
    path.write_text(source)
    result = run_cli(str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}:{lineno}: ")
    assert fragment in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("source, lineno, fragment", CLI_BAD_SOURCES)
def test_cli_bad_line_on_stdin(source, lineno, fragment):
    result = run_cli("-", stdin=source)
    assert result.returncode == 2
    assert result.stderr.startswith(f"<stdin>:{lineno}: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


CLI_BAD_WORDS = [
    ("0x81191234\n0xZZ\n", 2, "not a hexadecimal instruction word"),  # bad hex
    ("0x81191234\n\n81191234 00000000\n", 3, "not a hexadecimal instruction word"),
    ("# c\n0x60000000\n", 2, "0x60000000"),  # unknown opcode
    ("0x40000000\n", 1, "WAIT"),  # WAIT 0
    ("0x123456789\n", 1, "32-bit"),  # does not fit in 32 bits
]


@pytest.mark.parametrize("source, lineno, fragment", CLI_BAD_WORDS)
def test_cli_disasm_bad_word(tmp_path, source, lineno, fragment):
    path = tmp_path / "bad.hex"
    path.write_text(source)
    result = run_cli("--disasm", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}:{lineno}: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_missing_file(tmp_path):
    missing = tmp_path / "no-such-file.smc"
    result = run_cli(str(missing))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0]
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# Hostile input: huge numbers, non-ASCII text, lax hex (issue 12)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, source, fragment",
    [
        ((), "ACT 1 2\nWAIT " + "9" * 5000 + "\n", "wait cycles"),
        ((), "WAIT 0x" + "F" * 5000 + "\n", "wait cycles"),
        ((), "ACT 0 -" + "7" * 5000 + "\n", "row"),
        (("--disasm",), "0x81191234\n" + "9" * 5000 + "\n", "32-bit"),
        (("--disasm",), "0x" + "F" * 5000 + "\n", "32-bit"),
    ],
    ids=["decimal", "hex", "negative", "disasm-decimal-digits", "disasm-hex"],
)
def test_cli_5000_digit_number_is_one_line_and_exit_2(args, source, fragment):
    result = run_cli(*args, "-", stdin=source)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and len(lines[0]) < 200, result.stderr[:300]
    lineno = source.count("\n")
    assert lines[0].startswith(f"<stdin>:{lineno}: ") and fragment in lines[0]


@pytest.mark.parametrize(
    "line, fragment",
    [("WAIT 0x\ufb00", "wait cycles"), ("\u017fET_TREFI 5", "unknown instruction"), ("WAIT 1\u00b2", "wait cycles"),
     ("BUSDIR WR\u0131TE", "BUSDIR takes"), ("RD 0 0 \u0251p", "only AP"), ("WAIT\u00a05", "unknown instruction")],
)
def test_non_ascii_outside_a_comment_is_refused(line, fragment):
    # str.upper() turns U+FB00 into "FF", U+017F into "S" and U+0131 into "I"; U+00A0 is a blank
    # to str.split():
    # such text must not assemble.
    with pytest.raises(IsaError, match=fragment):
        parse_line(line)


def test_non_ascii_in_a_comment_is_fine():
    assert parse_line("WAIT 5  # \u00b2 \ufb00 caf\u00e9") == Wait(5)


@pytest.mark.parametrize("text", ["1_0", "+10", "\u0663", "0x1_0", "0x\uff11", "-1"])
def test_disassembler_takes_only_ascii_hex_words(text):
    with pytest.raises(AsmError, match="not a hexadecimal instruction word"):
        disassemble([text])


def test_disassembler_takes_a_64_bit_slot_with_a_zero_high_half():
    assert disassemble(["0x0000000081191234", "0000000000000000"]) == [Act(1, 0x1234), End()]


def test_cli_numbers_physical_lines_even_after_a_form_feed():
    # str.splitlines() also splits at \x0c, so the text after it became a line of its own.
    result = run_cli("-", stdin="WAIT 1  # page\x0cbreak\nFOO\n")
    assert result.returncode == 2
    assert result.stderr.startswith("<stdin>:2: ") and "FOO" in result.stderr


def test_leading_zeros_do_not_count_towards_the_digit_limit():
    # Python's int() counts leading zeros towards its 4300-digit limit; the assembler must not fail on them.
    assert parse_line("WAIT " + "0" * 5000 + "7") == Wait(7)
    assert parse_line("WAIT 0x" + "0" * 5000 + "A") == Wait(10)
    with pytest.raises(IsaError, match="bank -1 out of range"):
        parse_line("PRE -" + "0" * 5000 + "1")
