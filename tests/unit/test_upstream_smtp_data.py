"""The DATA form of a large message, piece by piece, against aiosmtplib's whole-message one.

If aiosmtplib changes how it encodes DATA, these tests fail rather than the wire quietly
changing.
"""

from __future__ import annotations

import inspect
import random

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from sendguard.delivery.smtp_data import PIECE, data_pieces


def aiosmtplib_data(content: bytes) -> tuple[bytes, int]:
    """What aiosmtplib writes after DATA, and the SIZE it announces (as in SMTP.sendmail)."""
    normal = normalize_message_line_endings(content)
    return PERIOD_REGEX.sub(b"..", normal) + b".\r\n", len(normal)


def pieced(content: bytes, size: int = PIECE) -> tuple[bytes, int]:
    pieces = list(data_pieces(content, size))
    return b"".join(p for p, _ in pieces), sum(n for _, n in pieces)


EDGES = [
    b"",
    b".",
    b"\r",
    b"\n",
    b"\r\n",
    b".\r\n",
    b"..\n.\r.\r\n.",
    b"no final line end",
    b"Subject: x\n\nbare LF\n.leading dot\n",
    b"Subject: x\r\rbare CR\r.dot after CR",
    b"\r\r\n\n\r\n\r",
    "8-bit: Grüße, ünïcödé\r\n.é\r\n".encode(),
    bytes(range(256)),
]


@pytest.mark.parametrize("content", EDGES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, PIECE])
def test_edges_encode_as_aiosmtplib_does(content: bytes, size: int) -> None:
    assert pieced(content, size) == aiosmtplib_data(content)


def test_random_content_in_small_pieces_encodes_as_aiosmtplib_does() -> None:
    draw = random.Random(11)
    alphabet = [b"a", b".", b"\r", b"\n", b"\r\n", b"\xff", b"..", b" "]
    for _ in range(3000):
        content = b"".join(draw.choice(alphabet) for _ in range(draw.randrange(0, 40)))
        size = draw.randrange(1, 12)
        assert pieced(content, size) == aiosmtplib_data(content), (content, size)


@pytest.mark.parametrize("extra", [-1, 0, 1, 2, 1000])
def test_sizes_around_a_piece_encode_as_aiosmtplib_does(extra: int) -> None:
    line = b".dotted line with a bare LF\n" + b"x" * 70 + b"\r\n" + b"cr only\r"
    content = (line * (PIECE // len(line) + 2))[: PIECE + extra]
    assert pieced(content) == aiosmtplib_data(content)
    assert all(len(p) <= 2 * PIECE for p, _ in data_pieces(content))


def test_a_line_longer_than_a_piece_is_cut_but_never_inside_a_crlf() -> None:
    content = b"." + b"y" * (PIECE - 2) + b"\r\n." + b"z" * (3 * PIECE) + b"\r\r\n"
    assert pieced(content) == aiosmtplib_data(content)
    assert len(list(data_pieces(content))) > 3
    for cut in range(PIECE - 3, PIECE + 3):
        assert pieced(content[:cut] + b"\r\n" + content[cut:]) == aiosmtplib_data(
            content[:cut] + b"\r\n" + content[cut:]
        )


def test_aiosmtplib_still_announces_size_as_data_pieces_counts_it() -> None:
    # sendmail announces SIZE with the CRLF-normalised length, as data_pieces counts it.
    assert "normalize_message_line_endings(message_bytes)" in inspect.getsource(
        aiosmtplib.SMTP.sendmail
    )
