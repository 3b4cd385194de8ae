"""ValueEnum: StrEnum's behaviour with a `.value` read in C (sendguard/value_enum.py)."""

from __future__ import annotations

import pickle

from sendguard.message import DeliveryState, MessageClass
from sendguard.verdict import Action, Mode


def test_value_and_lookups_are_strenums() -> None:
    for enum in (DeliveryState, MessageClass, Action, Mode):
        for member in enum:
            assert type(member.value) is str  # bound by sqlite3 without an adapter
            assert member.value == member == str(member)
            assert enum(member.value) is member
            assert enum[member.name] is member
            assert pickle.loads(pickle.dumps(member)) is member
    assert DeliveryState.SENT.value == "sent"
    assert f"{Action.HOLD}" == "hold"
