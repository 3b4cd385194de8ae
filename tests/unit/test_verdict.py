from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from sendguard.deliveries import HistoryEntry
from sendguard.events import Event, EventType
from sendguard.message import MessageClass
from sendguard.recipient import RecipientReads
from sendguard.verdict import Action, Decision, Mode, PolicyOutcome, Verdict, combine

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(action: Action, n: int = 0) -> Verdict:
    if action is Action.DELAY:
        return Verdict.delay(T0 + timedelta(hours=n), f"delay {n}")
    return Verdict(action, f"{action} {n}")


@pytest.mark.parametrize(
    "actions",
    [combo for size in range(1, 4) for combo in itertools.product(list(Action), repeat=size)],
)
def test_combine_precedence_is_drop_hold_delay_forward(actions: tuple[Action, ...]) -> None:
    verdicts = [make(a, i) for i, a in enumerate(actions)]
    result = combine(verdicts)
    assert result.action is max(actions, key=lambda a: a.rank)
    if result.action is Action.DELAY:
        latest = max(v.until for v in verdicts if v.until is not None)
        assert result.until == latest
    else:
        # the first verdict of the winning action supplies the reason
        assert result is next(v for v in verdicts if v.action is result.action)


def test_combine_of_nothing_is_forward() -> None:
    assert combine([]).action is Action.FORWARD


def test_latest_delay_wins_regardless_of_order() -> None:
    early, late = Verdict.delay(T0, "early"), Verdict.delay(T0 + timedelta(days=1), "late")
    assert combine([late, early]) is late
    assert combine([early, late]) is late


def test_verdict_invariants() -> None:
    with pytest.raises(ValueError, match="until"):
        Verdict(Action.DELAY, "x")
    with pytest.raises(ValueError, match="until"):
        Verdict(Action.DROP, "x", T0)
    with pytest.raises(ValueError, match="timezone"):
        Verdict.delay(datetime(2026, 1, 1), "naive")


def test_shadow_outcomes_are_recorded_but_not_acted_on() -> None:
    decision = Decision.of(
        [
            PolicyOutcome("a", Verdict.forward()),
            PolicyOutcome("b", Verdict.drop("would drop"), Mode.SHADOW),
        ]
    )
    assert decision.verdict.action is Action.FORWARD
    assert len(decision.outcomes) == 2


@pytest.mark.parametrize(
    "cls", [Verdict, PolicyOutcome, Decision, HistoryEntry, Event, RecipientReads]
)
def test_hand_written_inits_set_every_field_and_stay_frozen(cls: type) -> None:
    # These frozen dataclasses write their __init__ by hand (one dict update, made per
    # decision or per row read): it must set exactly the dataclass's fields.
    names = [f.name for f in dataclasses.fields(cls)]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    examples: dict[type, object] = {
        Verdict: Verdict(Action.DELAY, "r", at, ("k",)),
        PolicyOutcome: PolicyOutcome("p", Verdict.hold("x"), Mode.SHADOW, "e", 0.5),
        Decision: Decision(Verdict.hold("x"), ()),
        HistoryEntry: HistoryEntry("d", "r", "c", MessageClass.MARKETING, "h", at, True, "o"),
        Event: Event(EventType.OPEN, "r", at, "m", "o"),
        RecipientReads: RecipientReads([], [], None, None),
    }
    made = examples[cls]
    assert list(vars(made)) == names
    assert dataclasses.replace(made) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, names[0], None)
