"""What the running config does with a suppression: which classes of mail it drops, and why not.

A suppression is always recorded; mail to the address is dropped only by a policy that honours
suppressions (declares `HonoursSuppressions`, as `fatigue` does) and runs in enforce mode. The
timeline, `check-config` and the start log say which classes that is, or why none, so nobody is
told that mail is dropped when the config sends it. Policy names here come from the config only.

`sendguard timeline` renders the answer with this module: it imports the policy contract (and
pydantic with it) only where a config's policies are looked at, so the client command stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sendguard.message import MessageClass
from sendguard.verdict import Mode


@dataclass(frozen=True)
class Honour:
    """One configured policy that honours suppressions: its mode and what it drops."""

    policy: str
    mode: Mode
    classes: frozenset[MessageClass]

    def view(self) -> dict[str, Any]:
        """As in the timeline answer's `suppression.honoured_by`."""
        return {"policy": self.policy, "mode": self.mode.value, "drops": _ordered(self.classes)}

    @classmethod
    def of_view(cls, view: Mapping[str, Any]) -> Honour:
        """Back from `view` (the command line reads it from the timeline answer)."""
        return cls(
            str(view["policy"]),
            Mode(view["mode"]),
            frozenset(MessageClass(c) for c in view["drops"]),
        )


def _ordered(classes: Iterable[MessageClass]) -> list[str]:
    """Class names in the order `MessageClass` declares them (stable output)."""
    chosen = set(classes)
    return [c.value for c in MessageClass if c in chosen]


@dataclass(frozen=True)
class SuppressionEnforcement:
    """What the configured policies do to mail for a suppressed address."""

    honoured_by: tuple[Honour, ...] = ()

    @classmethod
    def of(cls, configured: Iterable[tuple[str, Mode, object]]) -> SuppressionEnforcement:
        """From the configured policies as (name, mode, policy instance), in config order."""
        from sendguard.policy import HonoursSuppressions  # noqa: PLC0415 - see the module doc

        return cls(
            tuple(
                Honour(name, mode, frozenset(policy.suppressed_classes()))
                for name, mode, policy in configured
                if isinstance(policy, HonoursSuppressions)
            )
        )

    @property
    def dropped_classes(self) -> frozenset[MessageClass]:
        """The classes some policy in enforce mode drops for a suppressed address."""
        dropped: set[MessageClass] = set()
        for h in self.honoured_by:
            if h.mode is Mode.ENFORCE:
                dropped |= h.classes
        return frozenset(dropped)

    def view(self) -> dict[str, Any]:
        """The keys the timeline answer adds to its `suppression` object."""
        return {
            "dropped_classes": _ordered(self.dropped_classes),
            "honoured_by": [h.view() for h in self.honoured_by],
        }

    def summary(self) -> str:
        """One line: what happens to mail for a suppressed address under this config."""
        dropped = self.dropped_classes
        if not dropped:
            return (
                "recorded, but no policy in enforce mode drops mail to suppressed addresses"
                f" ({self.why_not()})"
            )
        by = ", ".join(h.policy for h in self.honoured_by if h.mode is Mode.ENFORCE and h.classes)
        said = f"{' and '.join(_ordered(dropped))} mail to this address is dropped (by {by})"
        sent = _ordered(set(MessageClass) - dropped)
        if sent:
            said += f"; {' and '.join(sent)} mail is not"
        return said

    def why_not(self) -> str:
        """Why no class is dropped: each honouring policy's state, or that none is configured."""
        if not self.honoured_by:
            return "no configured policy honours suppressions"
        return "; ".join(
            f"{h.policy} is in shadow mode"
            if h.mode is Mode.SHADOW
            else f"{h.policy} exempts every message class"
            for h in self.honoured_by
        )

    def warning(self) -> str | None:
        """The warning for `check-config` and the start log when suppressions are only
        recorded (None when some class is dropped), naming the fix."""
        if self.dropped_classes:
            return None
        if self.honoured_by:
            fix = (
                f"set `mode: enforce` on {self.honoured_by[0].policy}"
                if self.honoured_by[0].mode is Mode.SHADOW
                else f"narrow `exempt_classes` of {self.honoured_by[0].policy}"
            )
        elif honouring := honouring_policies():
            fix = f"add {' or '.join(honouring)} to `policies:` (mode: enforce)"
        else:
            fix = "install and configure a policy that honours suppressions"
        return (
            "suppressions are only recorded: no policy in enforce mode drops mail to"
            f" suppressed addresses ({self.why_not()}); to honour them, {fix}"
        )


def honouring_policies() -> list[str]:
    """The installed policies that can honour suppressions, by entry point name."""
    from sendguard.policy import PolicyLoadError, installed_policies, load_policy_class  # noqa: PLC0415

    names = []
    installed = installed_policies()
    for name in sorted(installed):
        try:
            cls = load_policy_class(name, installed)
        except PolicyLoadError:
            continue  # a broken plugin is reported where it is configured, not here
        if callable(getattr(cls, "suppressed_classes", None)):
            names.append(name)
    return names
