"""docs/wire-protocol.md against the implementation: worked bytes, error-free settings."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest

from emubench import spawn
from firmware_bridge.framing import encode_frame
from firmware_bridge.protocol import ErrorCode, MsgType
from softmc_host.session import TesterSession

DOC = (Path(__file__).resolve().parents[1] / "docs" / "wire-protocol.md").read_text()


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_worked_info_reply_is_what_the_emulator_process_sends() -> None:
    section = DOC[DOC.index("INFO to SEQ 1 from") :]
    head = _hex(re.search(r"starts\s+`([0-9a-f ]+)`", section).group(1))
    body = re.search(r"```\n(\{.*\})\n```", section).group(1).encode()
    crc = _hex(re.search(r"CRC-32 `([0-9a-f ]+)`", section).group(1))
    with spawn(seed=0) as emu:
        host, port = emu.url[len("socket://") :].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(encode_frame(MsgType.HELLO, 1))
            want = len(head) + len(body) + len(crc)
            got = b""
            while len(got) < want:
                chunk = conn.recv(4096)
                assert chunk
                got += chunk
    assert got == head + body + crc


def test_worked_request_and_nak_bytes() -> None:
    hello = re.search(r"### HELLO request, SEQ 1 \(16 bytes\)\n\n```\n([0-9a-f ]+)\n```", DOC).group(1)
    assert _hex(hello) == encode_frame(MsgType.HELLO, 1)
    nak = re.search(r"A NAK for SEQ 7 is `([0-9a-f ]+)`", DOC).group(1)
    assert _hex(nak) == encode_frame(MsgType.NAK, 7)


def test_error_codes_in_the_doc_match_the_enum() -> None:
    table = DOC[DOC.index("### 6.7 ERROR") :]
    rows = dict(re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", table, flags=re.M))
    assert {int(k): v for k, v in rows.items()} == {int(c): c.name for c in ErrorCode}


@pytest.mark.parametrize("profile", ["A", "C", "eden"])
def test_nominal_settings_read_back_exactly_at_85_c(profile: str) -> None:
    rng = np.random.default_rng(5)
    rows = [(0, 1), (3, 20000), (7, 32767)]
    data = [rng.integers(0, 256, 8192, dtype=np.uint8) for _ in rows]
    with TesterSession.open(f"emu://{profile}?seed=4&temp_c=85") as tester:
        tester.write_rows(rows, data)
        back = tester.read_rows(rows)
    assert all(np.array_equal(b, d) for b, d in zip(back, data))
