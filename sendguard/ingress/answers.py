"""The JSON answers of the HTTP API as pydantic models: the OpenAPI response schemas.

The handlers build these answers in `views.py` and their own modules; the models describe them
exactly (`extra="forbid"` becomes `additionalProperties: false`), and the schemathesis run in
tests/e2e/test_openapi_schemathesis.py checks every real answer against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, create_model

from sendguard.fields import FIELDS
from sendguard.message import DeliveryState, MessageClass
from sendguard.suppressions import Effect, SuppressionReason
from sendguard.verdict import Action, Mode

Email = EmailStr
"""An address as sendguard keeps it (`format: email`; internationalised ones too)."""


class Shape(BaseModel):
    """Base of every answer: exactly these keys, each always present."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class ErrorDetail(Shape):
    """What went wrong; `field` names the input at fault (a JSON path, query parameter or
    header), `problems` lists every problem of a refused config reload."""

    code: str = Field(description="Machine-readable: invalid, invalid_json, not_found, ...")
    message: str = Field(description="What went wrong and how to fix it.")
    field: str | None = Field(default=None, description="The input at fault.")
    problems: list[dict[str, str]] | None = Field(default=None)
    id: str | None = Field(
        default=None, description="With a 409 of POST /v1/simulations: the running one's id."
    )


class ErrorAnswer(Shape):
    """Every error of the JSON API: `{"error": {"code", "message", "field"?}}`."""

    error: ErrorDetail


class DecisionReason(Shape):
    """One policy's verdict on a delivery, as answered to a send."""

    policy: str
    verdict: Action
    mode: Mode
    reason: str
    until: datetime | None
    error: str | None


class RecordedReason(DecisionReason):
    """One recorded policy verdict, with when it was given."""

    at: datetime | None


class AcceptedDelivery(Shape):
    """One recipient's delivery as a send created it."""

    id: str
    recipient: Email
    state: DeliveryState
    reason: str
    due_at: datetime | None
    reasons: list[DecisionReason]


class SendAnswer(Shape):
    """`202` to a send: the message's id and one delivery per recipient."""

    id: str
    deliveries: list[AcceptedDelivery]


class TransitionView(Shape):
    """One step of a delivery's history."""

    at: datetime | None
    state: DeliveryState
    reason: str


class DeliveryView(Shape):
    """A delivery with its history and every policy's verdict."""

    id: str
    message_id: str
    recipient: Email
    state: DeliveryState
    campaign: str | None
    subject: str
    created_at: datetime | None
    updated_at: datetime | None
    due_at: datetime | None
    attempts: int = Field(ge=0)
    last_error: str | None
    approved_by: str | None
    reason: str
    transitions: list[TransitionView]
    reasons: list[RecordedReason]


class MessageBase(Shape):
    """A message without its content; its sendguard fields are added from `fields.FIELDS`."""

    id: str
    received_at: datetime | None
    ingress: str
    from_: Email | Literal[""] = Field(alias="from", description="Empty for a bounce (<>).")
    recipients: list[Email]
    subject: str
    size: int = Field(ge=0)
    deliveries: list[DeliveryView]


def _shown_fields() -> dict[str, Any]:
    return {
        spec.json_name: (
            list[str] if spec.many else str | None,
            Field(description=spec.description),
        )
        for spec in FIELDS
    }


if TYPE_CHECKING:
    MessageView = MessageBase
else:
    MessageView = create_model(
        "MessageView", __base__=MessageBase, __doc__=MessageBase.__doc__, **_shown_fields()
    )


class DeliveryPage(Shape):
    """A page of deliveries, newest first; `next_cursor` fetches the next (null at the end)."""

    deliveries: list[DeliveryView]
    next_cursor: str | None


class EventView(Shape):
    """One engagement or suppression event."""

    type: str
    recipient: Email
    at: datetime | None
    message_id: str | None


class SuppressionHonour(Shape):
    """A configured policy that honours suppressions: its mode and the classes it drops."""

    policy: str
    mode: Mode
    drops: list[MessageClass]


class SuppressionSummary(Shape):
    """Whether, why and since when a person is suppressed, and what the running config does
    with it."""

    reason: SuppressionReason
    source: str
    created_at: datetime | None
    created_by: str | None
    dropped_classes: list[MessageClass] = Field(
        description=(
            "The message classes a policy in enforce mode drops for a suppressed address;"
            " empty: the suppression is only recorded and mail to the address is sent."
        )
    )
    honoured_by: list[SuppressionHonour] = Field(
        description="Each configured policy that honours suppressions, enforce or shadow."
    )


class Timeline(DeliveryPage):
    """Everything a person was sent, spared or is waiting for, and why; newest first."""

    recipient: str
    events: list[EventView]
    suppression: SuppressionSummary | None


class CampaignActionAnswer(Shape):
    """What a campaign action did."""

    campaign: str
    action: Literal["approve", "reject", "pause", "resume"]
    deliveries: int = Field(ge=0, description="How many deliveries it released, dropped or held.")
    approval: Literal["approved", "rejected"] | None
    paused: bool


class PauseView(Shape):
    """The global kill switch."""

    paused: bool
    updated_at: datetime | None
    updated_by: str | None
    note: str | None


class PauseAnswer(PauseView):
    """What pausing or resuming did."""

    deliveries: int = Field(ge=0)


class CampaignView(Shape):
    """A campaign's review state and its deliveries per state."""

    name: str
    state: Literal["approved", "rejected", "paused", "pending"]
    approval: Literal["approved", "rejected"] | None
    paused: bool
    updated_at: datetime | None
    updated_by: str | None
    counts: dict[DeliveryState, int]


class CampaignList(Shape):
    """Every campaign, and the global pause."""

    campaigns: list[CampaignView]
    pause: PauseView


class AuditView(Shape):
    """One review action."""

    id: int
    at: datetime | None
    actor: str
    action: str
    target: str
    note: str | None
    count: int | None


class AuditList(Shape):
    """Review actions, newest first."""

    entries: list[AuditView]


class FactAnswer(Shape):
    """The fact as recorded, and how many waiting deliveries it woke."""

    key: str
    value: str
    contact: str | None
    observed_at: datetime | None
    superseded_by: str | None
    successor: str | None
    woken: int = Field(ge=0)


class EventAnswer(Shape):
    """One recorded event: its effect on the address's suppression and what it woke."""

    type: str
    recipient: Email
    at: datetime | None
    woken: int = Field(ge=0)
    suppression: Effect | None


class EventBatchAnswer(Shape):
    """A batch of events, answered item by item."""

    results: list[EventAnswer]


class SuppressionView(Shape):
    """One suppression; `address` is the key it is matched by (as recipients are)."""

    address: Email
    reason: SuppressionReason
    source: str
    created_at: datetime | None
    created_by: str | None
    note: str | None


class SuppressionList(Shape):
    """A page of suppressions by address; `next` fetches the next (null at the end)."""

    suppressions: list[SuppressionView]
    next: str | None


class SuppressionAdded(Shape):
    """`201` when the address is newly suppressed, `200` when it already was."""

    added: bool
    suppression: SuppressionView


class LineProblem(Shape):
    """A CSV line that was skipped or needs a look."""

    line: int
    message: str


class SuppressionImport(Shape):
    """What a CSV import added, found already present, and skipped."""

    added: int = Field(ge=0)
    already_present: int = Field(ge=0)
    invalid: list[LineProblem]
    warnings: list[LineProblem]


class SuppressionLifted(Shape):
    """The suppression that was lifted."""

    lifted: SuppressionView


class CertificateProblem(Shape):
    """Why a new SMTP certificate was not taken."""

    field: str
    message: str


class CertificateAnswer(Shape):
    """The SMTP certificate new connections get after a reload."""

    sha256: str | None
    reloaded: bool
    problem: CertificateProblem | None = None


class WorkerReloadAnswer(Shape):
    """What one process of the server made of a reload."""

    pid: int
    reloaded: bool = Field(description="Whether it runs the config it read now.")
    hash: str | None = Field(description="The sha256 of the config it read (null: none).")
    error: str | None = Field(
        description="Why it did not reload (refused, no answer, exited), or what it kept."
    )


class ReloadAnswer(Shape):
    """What a config reload applied and what needs a restart."""

    reloaded: bool = Field(
        description="True once every worker process runs the new config; false when one did "
        "not (see `workers`)."
    )
    hash: str
    previous_hash: str | None
    source: str
    applied: list[str]
    restart_required: list[str]
    tls_certificate: CertificateAnswer | None
    workers: list[WorkerReloadAnswer] = Field(
        description="Every process's result, the answering one first (one entry without "
        "`serve --workers`)."
    )


class SimulationAnswer(Shape):
    """A what-if replay on the server: running, done (with its report) or failed."""

    id: str
    status: Literal["running", "done", "failed"]
    actor: str
    config_hash: str
    since: datetime | None
    until: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    report: dict[str, Any] | None = Field(
        default=None, description="Once done: the JSON of `sendguard simulate --json`."
    )
    error: str | None = Field(default=None, description="Once failed: why.")


class ShadowExample(Shape):
    """A delivery a shadow policy would have treated otherwise than forward."""

    delivery_id: str
    recipient: Email
    campaign: str | None
    verdict: Action
    reason: str
    at: datetime | None
    until: datetime | None


class RecipientCount(Shape):
    """A recipient a shadow policy would have affected, and how often."""

    recipient: Email
    count: int = Field(ge=0)


class ShadowPolicy(Shape):
    """One policy's part of the shadow report."""

    policy: str
    total: int = Field(ge=0)
    counts: dict[Action, int]
    examples: list[ShadowExample]
    recipients: list[RecipientCount]
    configured_as_shadow: bool


class ShadowReport(Shape):
    """What each shadow policy would have done in the window."""

    since: datetime | None
    until: datetime | None
    policies: list[ShadowPolicy]


class Health(Shape):
    """The process answers."""

    status: Literal["ok"]


class Readiness(Shape):
    """Each check's result: `ok` or what is wrong."""

    ready: bool
    checks: dict[str, str]


class WebhookAnswer(Shape):
    """How many events an ESP webhook delivery recorded."""

    recorded: int = Field(ge=0)


# The ESP-compatible routes answer in their ESP's shapes (docs/esp-compat.md).
class SendGridErrorItem(Shape):
    """One SendGrid error."""

    message: str
    field: str | None
    help: None


class SendGridError(Shape):
    """SendGrid's error shape."""

    errors: list[SendGridErrorItem]


class PostmarkResult(Shape):
    """Postmark's answer to one email (`ErrorCode` 0 when accepted)."""

    model_config = ConfigDict(extra="allow")

    ErrorCode: int
    Message: str


class PostmarkError(Shape):
    """Postmark's error shape."""

    ErrorCode: int
    Message: str


class MailgunAnswer(Shape):
    """Mailgun's answer to a send."""

    id: str
    message: str


class MailgunError(Shape):
    """Mailgun's error shape (401 is the plain text `Forbidden`)."""

    message: str
