"""The event types `POST /v1/events` accepts follow the engine's policies as configured now."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sendguard.app import event_types
from sendguard.events import EventType
from sendguard.policy import Lookback

BUILT_IN = frozenset(t.value for t in EventType)


class Reads:
    def __init__(self, *types: str) -> None:
        self._types = frozenset(types)

    def lookback(self) -> Lookback:
        return Lookback(event_types=self._types)


def bound(*types: str) -> Any:
    return SimpleNamespace(policy=Reads(*types))


def test_the_types_follow_the_policies_a_reload_puts_in_place() -> None:
    engine: Any = SimpleNamespace(policies=())
    accepted = event_types(engine)
    assert accepted() == BUILT_IN  # no policies: the built-in types, not nothing
    engine.policies = (bound("visit"),)
    assert accepted() == BUILT_IN | {"visit"}
    engine.policies = (bound("webinar"), bound())
    assert accepted() == BUILT_IN | {"webinar"}
    engine.policies = ()
    assert accepted() == BUILT_IN
