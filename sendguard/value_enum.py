"""`ValueEnum`: a StrEnum whose `.value` costs an attribute read.

On Python 3.11 an Enum member's `.value` is `enum.property`, a descriptor written in Python:
some 1,500 instructions a read (380 ns), where the value is a plain attribute of the member
(`_value_`) all along. The send path reads it a score of times a message (a state, a class or
an action bound as a statement's parameter, a metric's label). Here `.value` is a property
over `operator.attrgetter`, which runs in C: the same value, about 95 ns. Everything else is
StrEnum's own (members, look-up by value, pickling, pydantic).
"""

from __future__ import annotations

import operator
from enum import StrEnum
from typing import TYPE_CHECKING


class ValueEnum(StrEnum):
    """A StrEnum with a cheap `.value` (see the module's doc); no members of its own."""

    if not TYPE_CHECKING:  # type checkers keep reading `.value` as StrEnum's
        value = property(operator.attrgetter("_value_"))
