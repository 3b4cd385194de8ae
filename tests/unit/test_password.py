from __future__ import annotations

from sendguard.password import DECOY_HASH, hash_password, is_hash, verify_password


def _parameters(stored: str) -> list[str]:
    return stored.split("$")[:4]


def test_the_decoy_costs_what_a_real_hash_costs() -> None:
    """An unknown user name is checked against the decoy: with the same scrypt parameters as a
    hash `hash_password` makes now, a wrong name takes as long as a wrong password."""
    assert is_hash(DECOY_HASH)
    assert _parameters(DECOY_HASH) == _parameters(hash_password("anything"))


def test_no_password_matches_the_decoy() -> None:
    for guess in ("", "sendguard decoy password", "password", DECOY_HASH):
        assert not verify_password(guess, DECOY_HASH)


def test_a_hash_verifies_its_own_password_only() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
