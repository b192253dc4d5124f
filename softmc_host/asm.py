"""Assembler and disassembler for SoftMC programs.

Text syntax, one instruction per line, case-insensitive; ``#`` starts a comment;
numbers are decimal or ``0x`` hexadecimal::

    ACT <bank> <row>          PRE <bank>          PREA
    RD <bank> <col> [AP]      WR <bank> <col> <byte> [AP]
    REF                       ZQ [LONG]           WAIT <cycles>
    BUSDIR READ|WRITE         SET_TREFI <n>       SET_TRFC <n>
    END                       WBUF <index>   (bridge write-data extension)

Command line::

    python -m softmc_host.asm FILE            # text in, one 0x%08X word per line out
    python -m softmc_host.asm --disasm FILE   # hex words in, text out

``FILE`` may be ``-`` for standard input.  A bad line is reported as
``FILE:LINE: message`` on standard error with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Iterable, Sequence

from softmc_host.isa import (
    Act,
    BusDirection,
    End,
    Instruction,
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

__all__ = ["AsmError", "parse_line", "assemble", "disassemble", "main"]


class AsmError(ValueError):
    """A line of assembler text could not be parsed; ``lineno`` is 1-based."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno
        self.message = message


# Decimal (leading zeros allowed) or 0x hex, nothing else; a minus sign is accepted so
# that a negative value is reported by the field's range check.  ASCII only.
_NUMBER = re.compile(r"-?(?:[0-9]+|0[xX][0-9a-fA-F]+)")
_HEX_WORD = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
# No field is wider than 28 bits: a number of more significant digits than this is out of
# range whatever the field, and is reported without converting it (Python refuses to
# convert decimal strings of more than 4300 digits).
_MAX_DIGITS = 20
_ASCII_BLANKS = " \t\r\n\v\f"
_BLANKS = re.compile(r"[ \t\r\n\v\f]+")


def _short(text: str, limit: int = 40) -> str:
    """``repr(text)`` cut to a readable length, for messages."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 14]}...{shown[-8:]} ({len(text)} chars)"


def _number(token: str, what: str) -> int:
    if not _NUMBER.fullmatch(token):
        raise IsaError(f"{what} {_short(token)} is not a decimal or 0x-hex number")
    hexadecimal = "x" in token.lower()
    digits = (token.lstrip("-")[2:] if hexadecimal else token.lstrip("-")).lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS:
        raise IsaError(f"{what} {_short(token)} out of range (a number of {len(digits)} digits)")
    # convert without the leading zeros: Python counts them towards its 4300-digit limit
    value = int(digits, 16 if hexadecimal else 10)
    return -value if token.startswith("-") else value


def _flag(tokens: Sequence[str], word: str, what: str) -> bool:
    if not tokens:
        return False
    if len(tokens) == 1 and tokens[0] == word:
        return True
    raise IsaError(f"unexpected {_short(' '.join(tokens))} after {what} (only {word} is allowed)")


def _busdir(args: Sequence[str]) -> Instruction:
    try:
        return SetBusDir(BusDirection[args[0]])
    except KeyError:
        raise IsaError(f"BUSDIR takes READ or WRITE, got {_short(args[0])}") from None


# mnemonic -> (minimum argument count, maximum argument count, builder)
_SYNTAX: dict[str, tuple[int, int, Callable[[Sequence[str]], Instruction]]] = {
    "ACT": (2, 2, lambda a: Act(_number(a[0], "bank"), _number(a[1], "row"))),
    "PRE": (1, 1, lambda a: Pre(_number(a[0], "bank"))),
    "PREA": (0, 0, lambda a: PreAll()),
    "RD": (2, 3, lambda a: Rd(_number(a[0], "bank"), _number(a[1], "column"), _flag(a[2:], "AP", "RD"))),
    "WR": (
        3,
        4,
        lambda a: Wr(_number(a[0], "bank"), _number(a[1], "column"), _number(a[2], "data"), _flag(a[3:], "AP", "WR")),
    ),
    "REF": (0, 0, lambda a: Ref()),
    "ZQ": (0, 1, lambda a: Zq(_flag(a, "LONG", "ZQ"))),
    "WAIT": (1, 1, lambda a: Wait(_number(a[0], "wait cycles"))),
    "BUSDIR": (1, 1, _busdir),
    "SET_TREFI": (1, 1, lambda a: SetTrefi(_number(a[0], "tREFI value"))),
    "SET_TRFC": (1, 1, lambda a: SetTrfc(_number(a[0], "tRFC value"))),
    "END": (0, 0, lambda a: End()),
    "WBUF": (1, 1, lambda a: WBuf(_number(a[0], "write-buffer index"))),
}


def parse_line(line: str) -> Instruction | None:
    """Parse one line of assembler text.

    Parameters
    ----------
    line : str
        The line; a ``#`` comment and surrounding blanks are ignored.

    Returns
    -------
    Instruction or None
        The instruction, or None for a blank or comment-only line.

    Raises
    ------
    IsaError
        If the mnemonic is unknown, the argument count is wrong or a field is out of range
        (mnemonics, numbers and flags are ASCII; other text may appear only in comments).
    """
    # Tokens are separated by ASCII blanks only, and only ASCII tokens are upper-cased:
    # str.upper() would turn "0x\ufb00" into "0XFF" and "\u017fET_TREFI" into "SET_TREFI",
    # so a non-ASCII token stays as it is and fails as an unknown mnemonic, number or flag.
    code = line.split("#", 1)[0]
    tokens = [t.upper() if t.isascii() else t for t in _BLANKS.split(code.strip(_ASCII_BLANKS)) if t]
    if not tokens:
        return None
    mnemonic, args = tokens[0], tokens[1:]
    if mnemonic not in _SYNTAX:
        raise IsaError(f"unknown instruction {_short(mnemonic)}")
    lo, hi, build = _SYNTAX[mnemonic]
    if not lo <= len(args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise IsaError(f"{mnemonic} takes {want} argument(s), got {len(args)}")
    return build(args)


def assemble(lines: Iterable[str]) -> list[Instruction]:
    """Parse assembler text into instructions; raise :class:`AsmError` naming the line."""
    program: list[Instruction] = []
    for lineno, line in enumerate(lines, start=1):
        try:
            instruction = parse_line(line)
        except IsaError as exc:
            raise AsmError(lineno, str(exc)) from None
        if instruction is not None:
            program.append(instruction)
    return program


def disassemble(lines: Iterable[str]) -> list[Instruction]:
    """Decode lines of hex words (``0x`` prefix optional) into instructions; blank and ``#`` lines are skipped.

    A word is ASCII hex digits only (no sign, ``_`` or other scripts' digits); one of more
    than 8 significant digits is not a 32-bit word.
    """
    program: list[Instruction] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _HEX_WORD.fullmatch(text)
        if match is None:
            raise AsmError(lineno, f"{_short(text)} is not a hexadecimal instruction word")
        if len(match.group(1).lstrip("0")) > 8:
            raise AsmError(lineno, f"{_short(text)} is not a 32-bit instruction word (more than 8 hex digits)")
        word = int(match.group(1), 16)
        try:
            program.append(decode(word))
        except IsaError as exc:
            raise AsmError(lineno, str(exc)) from None
    return program


def main(argv: Sequence[str] | None = None) -> int:
    """Run the assembler command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m softmc_host.asm",
        description="Assemble SoftMC instruction text into 32-bit words (0x%%08X per line), or disassemble.",
    )
    parser.add_argument("file", help="input file, or - for standard input")
    parser.add_argument("--disasm", action="store_true", help="read hex words and print instruction text")
    args = parser.parse_args(argv)
    name = "<stdin>" if args.file == "-" else args.file
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {name}: {exc}", file=sys.stderr)
        return 2
    # Physical lines (universal newlines are already applied): str.splitlines() would also
    # split at form feeds and other separators and so misnumber the lines after them.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    try:
        program = disassemble(lines) if args.disasm else assemble(lines)
    except AsmError as exc:
        print(f"{name}:{exc.lineno}: {exc.message}", file=sys.stderr)
        return 2
    out = [i.to_text() for i in program] if args.disasm else [f"0x{i.encode():08X}" for i in program]
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
