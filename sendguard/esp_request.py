"""The ESP request a message came in as, kept so that it can leave in that ESP's own shape.

When a message came in through SendGrid's, Postmark's or Mailgun's endpoint and its upstream
is the same ESP, the request is passed through (docs/esp-compat.md, "Pass-through"): its
template, template data, tracking settings, categories and attachments reach the ESP as the
client wrote them, narrowed to one delivery's recipient by the upstream. The ingress stores
the request (without its credentials) in the intake transaction; retention prunes it with
its message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ESPS = frozenset({"sendgrid", "postmark", "mailgun"})
"""The ESPs whose requests can be passed through (each is also an ingress name)."""


@dataclass(frozen=True)
class EspRequest:
    """One message's part of an ESP request, as JSON.

    - sendgrid: the mail/send body with the message's one personalization;
    - postmark: the message's email object;
    - mailgun: `{"fields": [[name, value], ...], "files": [{"name", "filename",
      "content_type", "content" (base64)}], "mime": bool}` with the message's recipients only.
    """

    esp: str
    body: bytes = field(repr=False)
    template: str | None = None
    """The stored template the request names (`template_id`, `TemplateId`/`TemplateAlias`,
    `template`): such a message has no content of its own and can only leave as it came,
    through an upstream of the same ESP."""
