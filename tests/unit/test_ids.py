"""Ids after a fork: the child must not reuse the random bytes its parent had read ahead."""

from __future__ import annotations

import os

import pytest

from sendguard.ids import new_id

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _random_part(made: str) -> int:
    number = 0
    for char in made:
        number = number * 32 + _ALPHABET.index(char)
    return number & (2**80 - 1)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    new_id()  # the parent has random bytes read ahead when it forks
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: 100 ids to the parent, then exit without pytest's clean-up
        try:
            os.write(writer, " ".join(new_id() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    parent = [new_id() for _ in range(100)]
    with os.fdopen(reader, "rb") as pipe:
        child = pipe.read().decode().split()
    os.waitpid(pid, 0)
    assert len(child) == 100
    assert not set(parent) & set(child)
    # the 80 random bits too: with the parent's bytes the child would repeat them one for one
    assert not {_random_part(i) for i in parent} & {_random_part(i) for i in child}


def test_ids_take_fresh_random_bytes_past_the_read_ahead() -> None:
    # 400 numbers are read ahead: these ids run through them several times
    ids = [new_id() for _ in range(3000)]
    assert ids == sorted(ids)
    assert len({_random_part(i) for i in ids}) == len(ids)
