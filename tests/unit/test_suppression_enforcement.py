"""What the timeline, check-config and the start log say about suppressions, from the configured
policies' modes and declared classes (the words the e2e tests see, in every combination)."""

from __future__ import annotations

from sendguard_plugins.fatigue import FatigueOptions, FatiguePolicy
from sendguard_plugins.schedule import ScheduleOptions, SchedulePolicy

from sendguard.message import MessageClass
from sendguard.suppression_enforcement import Honour, SuppressionEnforcement
from sendguard.verdict import Mode

MARKETING = frozenset({MessageClass.MARKETING})


def test_only_enforcing_policies_drop_and_a_shadow_one_is_listed() -> None:
    shadow = FatiguePolicy(FatigueOptions())
    enforce = FatiguePolicy(FatigueOptions(exempt_classes=[MessageClass.MARKETING]))
    configured = [
        ("schedule", Mode.ENFORCE, SchedulePolicy(ScheduleOptions())),
        ("fatigue", Mode.SHADOW, shadow),
        ("fatigue-tx", Mode.ENFORCE, enforce),
    ]
    found = SuppressionEnforcement.of(configured)
    assert found.dropped_classes == {MessageClass.TRANSACTIONAL}
    assert found.view() == {
        "dropped_classes": ["transactional"],
        "honoured_by": [
            {"policy": "fatigue", "mode": "shadow", "drops": ["marketing"]},
            {"policy": "fatigue-tx", "mode": "enforce", "drops": ["transactional"]},
        ],
    }
    assert found.summary() == (
        "transactional mail to this address is dropped (by fatigue-tx); marketing mail is not"
    )
    assert found.warning() is None
    # the command line rebuilds the same words from the answer
    again = SuppressionEnforcement(tuple(Honour.of_view(h) for h in found.view()["honoured_by"]))
    assert again == found


def test_several_reasons_why_nothing_is_dropped() -> None:
    found = SuppressionEnforcement(
        (Honour("a", Mode.SHADOW, MARKETING), Honour("b", Mode.ENFORCE, frozenset()))
    )
    assert found.dropped_classes == frozenset()
    assert found.summary().endswith("(a is in shadow mode; b exempts every message class)")
    warning = found.warning()
    assert warning is not None and warning.endswith("to honour them, set `mode: enforce` on a")


def test_no_honouring_policy_names_the_installed_ones() -> None:
    warning = SuppressionEnforcement.of([]).warning()
    assert warning is not None
    assert "(no configured policy honours suppressions)" in warning
    assert warning.endswith("add fatigue to `policies:` (mode: enforce)")
