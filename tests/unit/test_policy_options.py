"""The policy options contract every plugin meets, and the harness plugin authors test with."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

import pytest
from pydantic import BaseModel, ValidationError
from sendguard_plugins.fatigue import FatiguePolicy

from sendguard import policy as policy_module
from sendguard.message import Delivery
from sendguard.policy import PolicyContext, PolicyLoadError, PolicyOptions, load_policy_class
from sendguard.testing import PolicyHarness, make_delivery
from sendguard.verdict import Action, Verdict

ANN = "ann@example.org"
BUILTINS = sorted(
    (
        ep
        for ep in entry_points(group="sendguard.policies")
        if ep.value.startswith("sendguard_plugins.")
    ),
    key=lambda ep: ep.name,
)


@pytest.mark.parametrize("entry", BUILTINS, ids=[ep.name for ep in BUILTINS])
def test_builtin_options_forbid_unknown_keys_and_are_frozen(entry: EntryPoint) -> None:
    policy_class = entry.load()
    assert issubclass(policy_class.Options, PolicyOptions)
    with pytest.raises(ValidationError, match="colour"):
        PolicyHarness(policy_class, {"colour": "red"})
    with pytest.raises(ValidationError, match="frozen"):
        policy_class.Options().colour = "red"


class LaxOptions(BaseModel):
    limit: int = 1


class LaxPolicy:
    """A policy whose options would swallow a misspelt key."""

    Options = LaxOptions

    def __init__(self, options: LaxOptions) -> None:
        self.options = options

    async def evaluate(self, delivery: Delivery, ctx: PolicyContext) -> Verdict:
        return Verdict.forward()


def test_a_policy_whose_options_allow_unknown_keys_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = EntryPoint("lax", f"{__name__}:LaxPolicy", policy_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(policy_module, "installed_policies", lambda: {"lax": entry})
    with pytest.raises(PolicyLoadError, match="must forbid unknown keys"):
        load_policy_class("lax")


async def test_harness_needs_async_with() -> None:
    h = PolicyHarness(FatiguePolicy)
    with pytest.raises(RuntimeError, match="async with"):
        await h.evaluate(make_delivery(ANN))
    async with h:
        assert (await h.evaluate(make_delivery(ANN))).action is Action.FORWARD
