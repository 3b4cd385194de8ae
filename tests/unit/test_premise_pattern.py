"""The OpenAPI pattern of a premise (`requires`, `unless`) matches nothing the send refuses.

Its blanks were str.split's, CR and LF included, while a premise must be one line, and its
time took any two digits (`0116-03-66T37:90`), which the parser refuses: a client
generating from the document (schemathesis, session 9) got a 400 for a schema-valid premise.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sendguard.fields import PREMISE_PATTERN
from sendguard.ingress.payloads import SendPayload


@settings(max_examples=300, deadline=None)
@given(st.from_regex(PREMISE_PATTERN, fullmatch=True))
def test_every_premise_the_pattern_matches_is_taken(premise: str) -> None:
    SendPayload.model_validate(
        {"from": "shop@example.com", "to": ["ann@example.org"], "requires": [premise]}
    )


def test_a_premise_over_two_lines_is_not_in_the_pattern() -> None:
    assert re.fullmatch(PREMISE_PATTERN, "meeting:1:status=completed")
    assert not re.fullmatch(PREMISE_PATTERN, "meeting:1:status=\r\ncompleted")
    assert not re.fullmatch(PREMISE_PATTERN, "\rmeeting:1:status=completed")


def test_the_after_time_of_the_pattern_is_a_real_time() -> None:
    assert re.fullmatch(PREMISE_PATTERN, "a=b; after=2026-11-22T09:00:00Z")
    assert not re.fullmatch(PREMISE_PATTERN, "a=b; after=0116-03-66T37:90:05.5-33:45")
