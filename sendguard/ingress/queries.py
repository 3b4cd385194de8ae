"""The query parameters of the HTTP API as pydantic models: names, types, enums and limits
for the OpenAPI document. The handlers read the same limits from here."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sendguard import duration
from sendguard.ingress.payloads import Address
from sendguard.message import DeliveryState
from sendguard.suppressions import SuppressionReason

MAX_DELIVERIES = 500
MAX_AUDIT = 1000
MAX_SUPPRESSIONS = 1000
MAX_EXAMPLES = 50
MAX_TOP = 100


class Query(BaseModel):
    """Base of every query model (each field is an optional query parameter)."""

    model_config = ConfigDict(extra="forbid")


class DeliveryFilter(Query):
    """`GET /v1/deliveries` and a timeline: filters and the page."""

    state: DeliveryState | None = Field(default=None, description="Only deliveries in this state.")
    campaign: str | None = Field(default=None, description="Only this campaign's deliveries.")
    since: datetime | None = Field(
        default=None, description="Only deliveries created at or after this time (RFC 3339)."
    )
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page.")
    limit: int = Field(default=50, ge=1, le=MAX_DELIVERIES, description="Page size.")


class DeliveryListQuery(DeliveryFilter):
    """`GET /v1/deliveries`."""

    recipient: Address | Literal[""] | None = Field(
        default=None, description="Only deliveries to this person (empty: everyone)."
    )


class AuditQuery(Query):
    """`GET /v1/audit`."""

    limit: int = Field(default=100, ge=1, le=MAX_AUDIT, description="How many entries.")


class SuppressionQuery(Query):
    """`GET /v1/suppressions`."""

    address: Address | Literal[""] | None = Field(
        default=None, description="Only this address (empty: every address)."
    )
    reason: SuppressionReason | Literal[""] | None = Field(
        default=None, description="Only this reason (empty: any reason)."
    )
    after: str | None = Field(default=None, description="`next` of the previous page.")
    limit: int = Field(default=100, ge=1, le=MAX_SUPPRESSIONS, description="Page size.")


class CsvImportQuery(Query):
    """`POST /v1/suppressions` with a CSV body."""

    reviewer: str | None = Field(default=None, description="For whom the caller acts (noted).")
    source: str | None = Field(
        default=None, description="Where the export came from (like sendgrid; 200 characters kept)."
    )


class RawSendQuery(Query):
    """`POST /v1/messages` with a `message/rfc822` body: the envelope, when not the headers."""

    from_: Address | None = Field(
        default=None, alias="from", description="The sender (default: the From header)."
    )
    to: list[Address] | None = Field(
        default=None,
        description="The recipients, repeatable (default: the To, Cc and Bcc headers).",
    )


class SimulationQuery(Query):
    """`GET /v1/simulations/{id}`."""

    format: Literal["json", "html"] = Field(
        default="json", description="json: status and report; html: the report's page."
    )


class ShadowQuery(Query):
    """`GET /v1/policies/shadow`."""

    since: str = Field(
        default="7d",
        pattern=duration.PATTERN,
        description="How far back: a duration like 90s, 15m, 24h or 7d (at most 3650d;"
        " a longer one reports everything).",
    )
    examples: int = Field(default=5, ge=0, le=MAX_EXAMPLES, description="Examples per policy.")
    top: int = Field(default=10, ge=0, le=MAX_TOP, description="Most affected recipients.")
