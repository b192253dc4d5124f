"""Fuzz the SoftMC instruction decoder, the assembler and the disassembler.

* ``isa.decode`` gets random 32- and 64-bit words, words of valid instructions with bits
  flipped, and values that are not words at all: only ``IsaError`` may come out, and every
  word that decodes re-encodes to itself.
* ``asm.assemble`` gets valid program text, mutated (characters flipped, inserted, deleted,
  tokens swapped for huge, negative, Unicode-digit or junk numbers): only ``AsmError``, one
  line, naming a line of the input; what assembles round-trips through its text.
* ``asm.disassemble`` gets hex word lines, mutated the same way: only ``AsmError``.
* ``asm.main`` (the command line) gets mutated files: exit 0, or exit 2 with one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

import pytest
from fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from softmc_host import asm, isa

pytestmark = pytest.mark.fuzz

BANKS = st.integers(0, isa.N_BANKS - 1)
COLUMNS = st.integers(0, isa.N_COLUMNS - 1)
INSTRUCTIONS = st.one_of(
    st.builds(isa.Act, BANKS, st.integers(0, isa.N_ROWS - 1)),
    st.builds(isa.Pre, BANKS),
    st.just(isa.PreAll()),
    st.builds(isa.Rd, BANKS, COLUMNS, st.booleans()),
    st.builds(isa.Wr, BANKS, COLUMNS, st.integers(0, 255), st.booleans()),
    st.just(isa.Ref()),
    st.builds(isa.Zq, st.booleans()),
    st.builds(isa.Wait, st.integers(1, isa.MAX_WAIT_CYCLES)),
    st.builds(isa.SetBusDir, st.sampled_from(isa.BusDirection)),
    st.builds(isa.SetTrefi, st.integers(0, isa.MAX_REG_VALUE)),
    st.builds(isa.SetTrfc, st.integers(0, isa.MAX_REG_VALUE)),
    st.just(isa.End()),
    st.builds(isa.WBuf, st.integers(0, isa.MAX_WBUF_INDEX)),
)

# Tokens a hostile or careless user puts where a number goes.
NASTY_TOKENS = st.one_of(
    st.sampled_from([
        "9" * 5000, "0x" + "F" * 5000, "-" + "9" * 4301, "0" * 5000 + "1", "1e3", "1_000", "+5", "0b101",
        "\u00b2", "\u0661", "\uff11", "0x\ufb00", "\u017fET_TREFI", "\u0131", "ß", "nan", "inf", "-0", "0x",
        "", "#", "\x00", "\x0c", "\u2028", "\r", "AP", "LONG", "READ", "WRITE", "0xFFFFFFFF", "4294967296",
    ]),
    st.integers(-(2**80), 2**80).map(str),
    st.integers(0, 2**70).map(hex),
    st.text(max_size=12),
)


def _mutate(data: st.DataObject, text: str) -> str:
    """A few random edits of ``text``: flip, insert, delete, swap a token, truncate."""
    for _ in range(data.draw(st.integers(0, 4), label="edits")):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "token", "truncate", "dup"]), label="kind")
        pos = data.draw(st.integers(0, len(text)), label="pos")
        if kind == "flip" and text:
            pos = min(pos, len(text) - 1)
            char = data.draw(st.characters(), label="char")
            text = text[:pos] + char + text[pos + 1:]
        elif kind == "insert":
            text = text[:pos] + data.draw(st.text(max_size=6), label="junk") + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + data.draw(st.integers(1, 5), label="n"):]
        elif kind == "token":
            tokens = text.split(" ")
            index = data.draw(st.integers(0, max(0, len(tokens) - 1)), label="index")
            tokens[index] = data.draw(NASTY_TOKENS, label="token")
            text = " ".join(tokens)
        elif kind == "truncate":
            text = text[:pos]
        elif kind == "dup":
            text = text[:pos] + text[pos:] * 2
    return text


def _one_line(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 400, message[:400]


@fuzz_settings(300)
@given(st.one_of(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**70), 2**70),
    INSTRUCTIONS.map(lambda i: i.encode()).flatmap(
        lambda w: st.integers(0, 31).map(lambda bit: w ^ (1 << bit))),
    st.sampled_from([10**5000, -(10**5000), True, False, None, 1.0, float("nan"), "0x81191234", b"\x00", [1]]),
))
def test_fuzz_decode_word(word: object) -> None:
    try:
        instruction = isa.decode(word)  # type: ignore[arg-type]
    except isa.IsaError as exc:
        _one_line(exc)
        return
    assert isinstance(word, int) and not isinstance(word, bool)
    assert instruction.encode() == word  # the round-trip property
    assert asm.parse_line(instruction.to_text()) == instruction


@fuzz_settings(300)
@given(st.lists(INSTRUCTIONS, min_size=1, max_size=8), st.data())
def test_fuzz_assembler_lines(program: list, data: st.DataObject) -> None:
    case = data.draw(st.sampled_from([str, str.lower, str.swapcase]), label="case")
    text = "\n".join(case(i.to_text()) for i in program)
    text = _mutate(data, text)
    lines = text.split("\n")
    try:
        result = asm.assemble(lines)
    except asm.AsmError as exc:
        _one_line(exc)
        assert 1 <= exc.lineno <= len(lines)
        assert str(exc).startswith(f"line {exc.lineno}: ")
        return
    # What assembles is real instructions, and their canonical text and words agree.
    assert asm.assemble([i.to_text() for i in result]) == result
    assert asm.disassemble([f"0x{i.encode():08X}" for i in result]) == result


@fuzz_settings(300)
@given(st.lists(INSTRUCTIONS.map(lambda i: i.encode()), min_size=1, max_size=8), st.data())
def test_fuzz_disassembler_lines(words: list[int], data: st.DataObject) -> None:
    form = data.draw(st.sampled_from(["0x{:08X}", "{:08x}", "0x{:016X}", "{:x}"]), label="form")
    text = _mutate(data, "\n".join(form.format(w) for w in words))
    lines = text.split("\n")
    try:
        result = asm.disassemble(lines)
    except asm.AsmError as exc:
        _one_line(exc)
        assert 1 <= exc.lineno <= len(lines)
        return
    for instruction in result:
        assert isa.decode(instruction.encode()) == instruction


@fuzz_settings(100)
@given(st.lists(INSTRUCTIONS, min_size=1, max_size=5), st.booleans(), st.data())
def test_fuzz_asm_command_line(program: list, disasm: bool, data: st.DataObject) -> None:
    if disasm:
        text = "\n".join(f"0x{i.encode():08X}" for i in program)
    else:
        text = "\n".join(i.to_text() for i in program)
    raw = _mutate(data, text).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans(), label="bytes"):
        raw = raw + data.draw(st.binary(max_size=4), label="tail")
    fd, path = tempfile.mkstemp(suffix=".s")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = asm.main([*(["--disasm"] if disasm else []), path])
    finally:
        os.unlink(path)
    assert code in (0, 2)
    if code == 2:
        assert out.getvalue() == ""
        assert len(err.getvalue().splitlines()) == 1, err.getvalue()[:500]
        assert err.getvalue().startswith((f"{path}:", "error: cannot read"))
    else:
        assert err.getvalue() == ""
