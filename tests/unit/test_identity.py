"""Identities: named API tokens, review accounts, and a claimed reviewer kept in the note."""

from __future__ import annotations

import pytest

from sendguard.config import parse_config
from sendguard.errors import ConfigError
from sendguard.identity import Identity, Role, note_with_claimed_reviewer
from sendguard.password import hash_password
from sendguard.tokens import TokenSet


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", environ={})
    return [str(p) for p in caught.value.problems]


def test_plain_tokens_are_named_by_position_and_named_ones_keep_their_name() -> None:
    text = (
        "http:\n  api_tokens:\n    - env:SENDGUARD_API_TOKEN\n    - plain-secret\n"
        "    - {name: crm, token: env:CRM_TOKEN}\n"
    )
    settings = parse_config(text, "t.yaml", environ={"CRM_TOKEN": "crm-secret"})
    # The default's own variable may be unset; it keeps its position: the next is token-2.
    assert settings.api_tokens == (("token-2", "plain-secret"), ("crm", "crm-secret"))
    tokens = TokenSet(settings.api_tokens)
    assert tokens.identify("crm-secret") == "crm"
    assert tokens.identify("plain-secret") == "token-2"
    assert tokens.identify("nope") is None
    assert not tokens.accepts("")


def test_token_names_must_be_unique_and_plain() -> None:
    found = problems("http: {api_tokens: [{name: a, token: x}, {name: a, token: y}]}\n")
    assert any("used twice: a" in p for p in found), found
    found = problems("http: {api_tokens: [{name: 'a b', token: x}]}\n")
    assert any(p.startswith("http.api_tokens[0]") for p in found), found


def test_review_users_need_a_hash_and_a_known_role() -> None:
    stored = hash_password("pw")
    text = f"review:\n  users:\n    ana: {{password_hash: '{stored}'}}\n"
    users = parse_config(text, "t.yaml", environ={}).config.review.users
    assert users["ana"].role == "reviewer"
    found = problems("review: {users: {ana: {password_hash: secret}}}\n")
    assert any("hash-password" in p for p in found), found
    found = problems(f"review: {{users: {{ana: {{password_hash: '{stored}', role: boss}}}}}}\n")
    assert any("role" in p for p in found), found
    found = problems(f"review: {{users: {{'a b': {{password_hash: '{stored}'}}}}}}\n")
    assert any(p.startswith("review.users") for p in found), found


def test_a_claimed_reviewer_is_part_of_the_note_never_the_identity() -> None:
    who = Identity("crm", Role.API)
    assert note_with_claimed_reviewer("fine", "ana", who) == "reviewer ana: fine"
    assert note_with_claimed_reviewer("", "ana", who) == "reviewer ana"
    assert note_with_claimed_reviewer("fine", None, who) == "fine"
    assert note_with_claimed_reviewer("fine", "crm", who) == "fine"
    assert not Identity("v", Role.VIEWER).may_decide
    assert Identity("r", Role.REVIEWER).may_decide
