"""The review page's edit-before-approve: the form, the correction, the record of changes."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from sendguard.errors import Conflict
from sendguard.ingress.http_context import api
from sendguard.ingress.route import Route
from sendguard.review_page import pages
from sendguard.review_page.editing import Editable, EditRefused, edit_campaign, editable
from sendguard.review_page.guard import safe_next


def edit_routes() -> list[Route]:
    """The edit form, its POST, and the list of a campaign's edits with their diffs."""
    return [
        pages.session_page("GET", "/review/campaigns/{name}/edit", edit_form),
        pages.session_page("POST", "/review/campaigns/{name}/edit", edit),
        pages.session_page("GET", "/review/campaigns/{name}/edits", edits),
    ]


async def edit_form(request: web.Request) -> web.StreamResponse:
    """The subject, text and HTML of a held campaign message, in a form to correct them."""
    session = await pages.current_session(request, notice=True)
    if session is None:
        return pages.to_login()
    refused = pages.refuse_viewer(request, session)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    store = api(request).store
    message_id = request.query.get("message", "")
    message = await store.get_message(message_id) if message_id else None
    if message is None or message.fields.campaign != name:
        return pages.message_page(
            request, session, 404, "Not found", f"No message {message_id} in campaign {name}."
        )
    current = editable(await store.message_content(message_id))
    return pages.render(
        request,
        "edit.html",
        {
            "session": session,
            "campaign": name,
            "message": message,
            "current": current,
            "next": safe_next(request.query.get("next")),
        },
    )


async def edit(request: web.Request) -> web.StreamResponse:
    """Correct the message in the campaign's held deliveries (fields `message`, `subject`,
    `text`, `html`, `note`, `csrf_token`); a part left out of the form stays as it was."""
    checked = await pages.checked_form(request)
    if isinstance(checked, web.StreamResponse):
        return checked
    session, form = checked
    refused = pages.refuse_viewer(request, session)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    store = api(request).store
    message_id = str(form.get("message", ""))
    message = await store.get_message(message_id) if message_id else None
    if message is None or message.fields.campaign != name:
        return pages.message_page(
            request, session, 404, "Not found", f"No message {message_id} in campaign {name}."
        )
    current = editable(await store.message_content(message_id))

    def field(key: str, now: str | None) -> str | None:
        value = form.get(key)
        return now if value is None or now is None else str(value)

    after = Editable(
        field("subject", current.subject) or "",
        field("text", current.text),
        field("html", current.html),
    )
    note = str(form.get("note", "")).strip()[:2000]
    try:
        outcome = await edit_campaign(
            store,
            pages.page_state(request).clock,
            name,
            message_id,
            after,
            session.identity.name,
            note,
        )
    except EditRefused as exc:
        return pages.message_page(request, session, 409, "Not possible", str(exc))
    except Conflict as exc:
        return pages.message_page(request, session, 409, "Not possible", str(exc))
    text = (
        f"Campaign {name}: {outcome.moved} held deliveries now carry the edited message"
        f" ({', '.join(p.value for p in outcome.edits[0].changed)} changed)."
    )
    if outcome.unmatched:
        text += (
            f" {outcome.unmatched} held deliveries of it read otherwise and were left as they"
            " were; edit them from their own preview."
        )
    text += " Approving still judges them again by every other policy before they leave."
    return await pages.see_outcome(
        request, session, text, "/review?" + urlencode({"campaign": name})
    )


async def edits(request: web.Request) -> web.StreamResponse:
    """Every edit of a campaign: who, when, why, how many deliveries, and the diff."""
    session = await pages.current_session(request, notice=True)
    if session is None:
        return pages.to_login()
    name = request.match_info["name"]
    found = await api(request).store.edits(name)
    return pages.render(
        request, "edits.html", {"session": session, "campaign": name, "edits": found}
    )
