"""Edit before approve: a reviewer corrects the subject, text or HTML of a held campaign message.

The correction is a substitution: "where the subject reads X, make it Y" (and likewise for the
text and HTML parts). It applies to every held delivery of the campaign whose message reads
exactly X in each part the reviewer changed; a message that reads otherwise there (a
personalised body, another variant) is left alone and counted, so a correction of Ann's copy
never sends Ann's greeting to Ben. Each corrected message becomes a new message row (see
`Store.add_edit`): the original stays, the held deliveries move to the copy, and the
dispatcher, the policies and the preview all read the copy from then on.

The edited copy has its own content fingerprint. Approving the campaign afterwards approves
the fingerprints of what it releases, that is the edited content that leaves; the uncorrected
copy, if the sending tool sends it again, is new content and is held again.
"""

from __future__ import annotations

import difflib
import email
import email.policy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage

from sendguard.audit import AuditEntry
from sendguard.clock import Clock
from sendguard.content import fingerprints
from sendguard.deliveries import DeliveryQuery
from sendguard.errors import Conflict
from sendguard.headers import Headers, split_message
from sendguard.ids import new_id
from sendguard.message import DeliveryState, Message
from sendguard.review_queue import Edit, EditedPart
from sendguard.store.base import Store

_PAGE = 500
MAX_PART = 1024 * 1024  # a corrected part larger than this is refused (a form, not an upload)


class EditRefused(Conflict):
    """The edit cannot be made (nothing changed, not a held message of the campaign, too big)."""


@dataclass(frozen=True)
class Editable:
    """The parts of a message a reviewer may correct; None: the message has no such part."""

    subject: str
    text: str | None
    html: str | None

    def value(self, part: EditedPart) -> str | None:
        """The value of one part."""
        if part is EditedPart.SUBJECT:
            return self.subject
        return self.text if part is EditedPart.TEXT else self.html


@dataclass(frozen=True)
class EditOutcome:
    """What an edit of a campaign did."""

    edits: tuple[Edit, ...]
    moved: int
    """Held deliveries that now carry the corrected message."""
    unmatched: int
    """Held deliveries of the campaign whose message reads otherwise; left as they were."""


def _parse(content: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _body_parts(parsed: EmailMessage) -> dict[str, EmailMessage]:
    """The first text/plain and text/html part that is not an attachment, by subtype."""
    found: dict[str, EmailMessage] = {}
    for part in parsed.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.is_attachment():
            continue
        subtype = part.get_content_subtype()
        if subtype in ("plain", "html") and subtype not in found:
            assert isinstance(part, EmailMessage)
            found[subtype] = part
    return found


def _text(part: EmailMessage | None) -> str | None:
    if part is None:
        return None
    try:
        value = part.get_content()
    except (LookupError, UnicodeError):
        payload = part.get_payload(decode=True)
        value = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return str(value).replace("\r\n", "\n")


def editable(content: bytes) -> Editable:
    """The subject, text part and HTML part of a raw message."""
    parsed = _parse(content)
    parts = _body_parts(parsed)
    return Editable(
        str(parsed.get("Subject", "")), _text(parts.get("plain")), _text(parts.get("html"))
    )


def changed_parts(before: Editable, after: Editable) -> tuple[EditedPart, ...]:
    """The parts that differ (a part the message lacks cannot be added)."""
    changed = []
    for part in EditedPart:
        old, new = before.value(part), after.value(part)
        if old is not None and new is not None and _lines(old) != _lines(new):
            changed.append(part)
    return tuple(changed)


def _lines(value: str) -> str:
    # Browsers send text areas with CRLF line ends; a message part has its own.
    return value.replace("\r\n", "\n")


def rewrite(content: bytes, after: Editable, parts: Sequence[EditedPart]) -> bytes:
    """`content` with `parts` replaced by their values in `after`; every other header and
    part (attachments, images) stays as it was."""
    parsed = _parse(content)
    if EditedPart.SUBJECT in parts:
        del parsed["Subject"]
        parsed["Subject"] = after.subject.replace("\r", " ").replace("\n", " ")
    body = _body_parts(parsed)
    for part, subtype in ((EditedPart.TEXT, "plain"), (EditedPart.HTML, "html")):
        value = after.value(part)
        if part not in parts or value is None or subtype not in body:
            continue
        value = _lines(value)
        # Quoted-printable keeps the message 7-bit clean whatever the reviewer typed.
        cte = "7bit" if value.isascii() and max(map(len, value.split("\n"))) < 990 else None
        body[subtype].set_content(
            value, subtype=subtype, charset="utf-8", cte=cte or "quoted-printable"
        )
    linesep = "\r\n" if b"\r\n" in content[:4096] else "\n"
    return parsed.as_bytes(policy=email.policy.default.clone(linesep=linesep))


def unified_diff(before: Editable, after: Editable, parts: Sequence[EditedPart]) -> str:
    """A unified diff of each changed part, one after the other."""
    out: list[str] = []
    for part in parts:
        old, new = _lines(before.value(part) or ""), _lines(after.value(part) or "")
        out.extend(
            difflib.unified_diff(
                old.splitlines(),
                new.splitlines(),
                f"{part.value} (original)",
                f"{part.value} (edited)",
                lineterm="",
            )
        )
    return "\n".join(out)


def _matches(current: Editable, before: Editable, parts: Sequence[EditedPart]) -> bool:
    return all(
        _lines(current.value(p) or "") == _lines(before.value(p) or "")
        and current.value(p) is not None
        for p in parts
    )


async def _held_messages(
    store: Store, campaign: str
) -> tuple[dict[str, list[str]], dict[str, Message]]:
    """The held deliveries of a campaign by message id, and those messages."""
    held: dict[str, list[str]] = {}
    messages: dict[str, Message] = {}
    after_id: str | None = None
    while True:
        page = await store.list_deliveries(
            DeliveryQuery(state=DeliveryState.HELD, campaign=campaign, after=after_id, limit=_PAGE)
        )
        for delivery in page.deliveries:
            held.setdefault(delivery.message.id, []).append(delivery.id)
            messages[delivery.message.id] = delivery.message
        if page.next is None:
            return held, messages
        after_id = page.next


async def _templated(store: Store, message_id: str) -> bool:
    original = await store.esp_request(message_id)
    return original is not None and original.template is not None


async def edit_campaign(
    store: Store,
    clock: Clock,
    campaign: str,
    message_id: str,
    after: Editable,
    actor: str,
    note: str = "",
) -> EditOutcome:
    """Correct message `message_id` of `campaign` as `after` says, in every held delivery of
    the campaign whose message reads the same in the changed parts."""
    for part in EditedPart:
        value = after.value(part)
        if value is not None and len(value) > MAX_PART:
            raise EditRefused(f"the {part.value} is larger than {MAX_PART} characters")
    source = await store.get_message(message_id)
    if source is None or source.fields.campaign != campaign:
        raise EditRefused(f"message {message_id} is not a message of campaign {campaign}")
    original = await store.esp_request(message_id)
    if original is not None and original.template is not None:
        # Its content is the ESP's template: an edited copy would leave without it.
        raise EditRefused(
            f"message {message_id} is {original.esp} stored template {original.template!r},"
            f" rendered by {original.esp}, not here: approve or reject it (change the template"
            f" at {original.esp})"
        )
    before = editable(await store.message_content(message_id))
    parts = changed_parts(before, after)
    if not parts:
        raise EditRefused("nothing was changed")
    diff = unified_diff(before, after, parts)
    held, messages = await _held_messages(store, campaign)
    if message_id not in held:
        raise EditRefused(f"no delivery of message {message_id} is held any more")
    done: list[Edit] = []
    unmatched = 0
    # The message the reviewer looked at first; then the others in a stable order.
    for ident in sorted(held, key=lambda i: (i != message_id, i)):
        content = await store.message_content(ident)
        templated = ident != message_id and await _templated(store, ident)
        if templated or (ident != message_id and not _matches(editable(content), before, parts)):
            unmatched += len(held[ident])
            continue
        edited = rewrite(content, after, parts)
        block, _ = split_message(edited)
        fingerprint = fingerprints(edited)
        copy = replace(
            messages[ident],
            id=new_id(),
            headers=Headers.parse(block),
            size=len(edited),
            content_hash=fingerprint.text,
            links=fingerprint.links,
        )
        made = await store.edit_making(ident)
        try:
            done.append(
                await store.add_edit(
                    Edit(
                        new_id(),
                        campaign,
                        ident,
                        copy.id,
                        made.origin_message_id if made is not None else ident,
                        actor,
                        clock.now(),
                        parts,
                        diff,
                        note,
                    ),
                    copy,
                    edited,
                )
            )
        except Conflict:
            if ident == message_id:
                raise
            continue  # reviewed or claimed meanwhile: nothing of it is held to correct
    moved = sum(e.count for e in done)
    what = f"{', '.join(p.value for p in parts)} changed in {len(done)} message(s)"
    if unmatched:
        what += f"; {unmatched} held deliveries read otherwise, left as they were"
    await store.add_audit(
        AuditEntry(
            clock.now(),
            actor,
            "edit",
            f"campaign:{campaign}",
            f"{what}; {note}" if note else what,
            moved,
        )
    )
    return EditOutcome(tuple(done), moved, unmatched)
