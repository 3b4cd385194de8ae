"""The route table: every route of the HTTP API, declared once (see `route.Route`).

The router, the authentication middleware and `/openapi.json` are derived from `ROUTES`.
To add a route, append one `Route` here (docs/development.md shows an example). The review
page's HTML routes are kept in their own table, `sendguard.review_page.pages.PAGE_ROUTES`:
they are forms behind a sign-in cookie, not part of the JSON API, but they are registered and
authenticated the same way (their `auth` is `Auth.SESSION`).
"""

from __future__ import annotations

from typing import Any

from sendguard.ingress import (
    answers,
    api_admin,
    api_context,
    api_health,
    api_review,
    api_send,
    api_shadow,
    api_simulations,
    api_suppressions,
    openapi,
    queries,
)
from sendguard.ingress.esp import mailgun, postmark, sendgrid, shapes, webhooks
from sendguard.ingress.esp.mapping import guarded
from sendguard.ingress.payloads import (
    ADDRESS_SCHEMA,
    CampaignApprovalPayload,
    EventPayload,
    FactPayload,
    ReviewPayload,
    SendPayload,
    SuppressionPayload,
)
from sendguard.ingress.route import Answer, Auth, Body, Header, Link, Route
from sendguard.review import CAMPAIGN_ACTIONS
from sendguard.suppressions import CSV_PATTERN

_JSON = "application/json"
_ANY_OBJECT: dict[str, Any] = {"type": "object"}
_REVIEW = (Body(_JSON, ReviewPayload),)
_DELIVERY = {"id": "$response.body#/id"}
_FIRST_DELIVERY = {"id": "$response.body#/deliveries/0/id"}
_MAILGUN_BODIES = (
    Body("multipart/form-data", schema=shapes.MAILGUN_MESSAGE),
    Body("application/x-www-form-urlencoded", schema=shapes.MAILGUN_MESSAGE),
)


def _ok(model: type[answers.Shape], text: str, **links: Link) -> dict[int, Answer]:
    return {200: Answer(text, model, links=links)}


def _delivery_actions() -> list[Route]:
    return [
        Route(
            "POST",
            f"/v1/deliveries/{{id}}/{action}",
            api_review.delivery_action(action),
            f"{action}Delivery",
            summary,
            ("review",),
            _ok(answers.DeliveryView, "the delivery after the action"),
            bodies=_REVIEW,
            body_required=False,
            errors=(409,),
        )
        for action, summary in (
            ("approve", "Release a held delivery"),
            ("reject", "Drop a held delivery"),
        )
    ]


_CAMPAIGN_SUMMARIES = {
    "approve": "Approve a campaign and the content it held (release: all lifts every hold reason)",
    "reject": "Reject a campaign: drop what is unsent",
    "pause": "Kill switch: hold a campaign",
    "resume": "Lift a campaign's kill switch",
}


def _campaign_actions() -> list[Route]:
    return [
        Route(
            "POST",
            f"/v1/campaigns/{{name}}/{verb}",
            api_review.campaign_action(action),
            f"{verb}Campaign",
            _CAMPAIGN_SUMMARIES[verb],
            ("campaigns",),
            _ok(answers.CampaignActionAnswer, "what the action did"),
            bodies=(Body(_JSON, CampaignApprovalPayload if verb == "approve" else ReviewPayload),),
            body_required=False,
            errors=(409,),
        )
        for verb, action in CAMPAIGN_ACTIONS.items()
    ]


ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/v1/messages",
        api_send.send,
        "sendMessage",
        "Send a message (JSON, or a raw message/rfc822 body with ?from= and ?to=)",
        ("send",),
        {
            202: Answer(
                "accepted: committed to the store, one delivery per recipient",
                answers.SendAnswer,
                links={
                    "GetMessage": Link("getMessage", {"id": "$response.body#/id"}),
                    "GetDelivery": Link("getDelivery", _FIRST_DELIVERY),
                },
            )
        },
        bodies=(
            Body(_JSON, SendPayload),
            Body(
                "message/rfc822",
                schema={
                    "type": "string",
                    "description": "An RFC 5322 message; From, To, Cc and Bcc give the"
                    " envelope unless ?from= and ?to= do (Bcc never leaves).",
                },
            ),
        ),
        query=queries.RawSendQuery,
        headers=(
            Header(
                "Idempotency-Key",
                "A retry with the same key and body answers the first answer again and sends"
                " nothing twice; the same key with another body is refused with 422.",
                api_send.MAX_KEY,
            ),
        ),
        errors=(422,),
    ),
    Route(
        "GET",
        "/v1/messages/{id}",
        api_send.get_message,
        "getMessage",
        "A message and each delivery's state and reasons",
        ("deliveries",),
        _ok(answers.MessageView, "the message and its deliveries"),
    ),
    Route(
        "GET",
        "/v1/deliveries",
        api_send.list_deliveries,
        "listDeliveries",
        "Deliveries, newest first, filtered and paginated",
        ("deliveries",),
        _ok(
            answers.DeliveryPage,
            "a page of deliveries",
            NextPage=Link("listDeliveries", {"cursor": "$response.body#/next_cursor"}),
        ),
        query=queries.DeliveryListQuery,
    ),
    Route(
        "GET",
        "/v1/deliveries/{id}",
        api_send.get_delivery,
        "getDelivery",
        "One delivery with its transitions and reasons",
        ("deliveries",),
        _ok(
            answers.DeliveryView,
            "the delivery",
            GetMessage=Link("getMessage", {"id": "$response.body#/message_id"}),
        ),
    ),
    *_delivery_actions(),
    Route(
        "GET",
        "/v1/recipients/{address}/timeline",
        api_send.timeline,
        "getTimeline",
        "Everything a person was sent, spared or is waiting for, and why",
        ("deliveries",),
        _ok(answers.Timeline, "the person's timeline, newest first"),
        query=queries.DeliveryFilter,
        path_schemas={"address": ADDRESS_SCHEMA},
    ),
    *_campaign_actions(),
    Route(
        "GET",
        "/v1/campaigns",
        api_review.list_campaigns,
        "listCampaigns",
        "Campaigns with counts per delivery state, and the global pause",
        ("campaigns",),
        _ok(answers.CampaignList, "every campaign"),
    ),
    Route(
        "POST",
        "/v1/pause",
        api_review.pause_all,
        "pauseAll",
        "Global kill switch: hold every unsent delivery",
        ("review",),
        _ok(answers.PauseAnswer, "paused"),
        bodies=_REVIEW,
        body_required=False,
    ),
    Route(
        "POST",
        "/v1/resume",
        api_review.resume_all,
        "resumeAll",
        "Lift the global kill switch",
        ("review",),
        _ok(answers.PauseAnswer, "resumed"),
        bodies=_REVIEW,
        body_required=False,
    ),
    Route(
        "GET",
        "/v1/pause",
        api_review.pause_state,
        "getPause",
        "Whether sending is paused, since when, by whom",
        ("review",),
        _ok(answers.PauseView, "the global pause"),
    ),
    Route(
        "GET",
        "/v1/audit",
        api_review.audit,
        "listAudit",
        "Review actions, newest first",
        ("review",),
        _ok(answers.AuditList, "the latest review actions"),
        query=queries.AuditQuery,
    ),
    Route(
        "POST",
        "/v1/facts",
        api_context.post_fact,
        "postFact",
        "Record a context fact; wakes the deliveries waiting on it",
        ("context",),
        {202: Answer("recorded", answers.FactAnswer)},
        bodies=(Body(_JSON, FactPayload),),
    ),
    Route(
        "POST",
        "/v1/events",
        api_context.post_event,
        "postEvents",
        "Record an engagement or suppression event, or an array of them",
        ("context",),
        {
            202: Answer(
                "recorded (a batch is answered item by item under `results`)",
                (answers.EventAnswer, answers.EventBatchAnswer),
            )
        },
        bodies=(Body(_JSON, EventPayload, many=True),),
    ),
    Route(
        "GET",
        "/v1/suppressions",
        api_suppressions.list_suppressions,
        "listSuppressions",
        "Durable suppressions by address, paginated",
        ("suppressions",),
        _ok(
            answers.SuppressionList,
            "a page of suppressions",
            NextPage=Link("listSuppressions", {"after": "$response.body#/next"}),
        ),
        query=queries.SuppressionQuery,
    ),
    Route(
        "POST",
        "/v1/suppressions",
        api_suppressions.add_suppression,
        "addSuppression",
        "Suppress an address (JSON), or import an ESP's CSV export (text/csv)",
        ("suppressions",),
        {
            201: Answer(
                "newly suppressed",
                answers.SuppressionAdded,
                links={
                    "Lift": Link(
                        "liftSuppression", {"address": "$response.body#/suppression/address"}
                    )
                },
            ),
            200: Answer(
                "already suppressed (JSON), or what a CSV import did",
                (answers.SuppressionAdded, answers.SuppressionImport),
            ),
        },
        bodies=(
            Body(_JSON, SuppressionPayload),
            Body(
                "text/csv",
                schema={
                    "type": "string",
                    "description": "A header row with an email, address or recipient column;"
                    " optional reason and created_at columns.",
                    "pattern": CSV_PATTERN,
                },
            ),
        ),
        query=queries.CsvImportQuery,
    ),
    Route(
        "DELETE",
        "/v1/suppressions/{address}",
        api_suppressions.lift_suppression,
        "liftSuppression",
        "Lift a suppression (audited)",
        ("suppressions",),
        _ok(answers.SuppressionLifted, "lifted"),
        bodies=_REVIEW,
        body_required=False,
        path_schemas={"address": ADDRESS_SCHEMA},
    ),
    Route(
        "POST",
        "/v1/admin/reload",
        api_admin.reload_config,
        "reloadConfig",
        "Reload the config (as SIGHUP); what applied, what needs a restart",
        ("admin",),
        _ok(answers.ReloadAnswer, "reloaded"),
        errors=(400,),
        stores=False,
    ),
    Route(
        "GET",
        "/v1/policies/shadow",
        api_shadow.shadow_report,
        "shadowReport",
        "What each shadow policy would have done",
        ("policies",),
        _ok(answers.ShadowReport, "the shadow report"),
        query=queries.ShadowQuery,
    ),
    Route(
        "POST",
        "/v1/simulations",
        api_simulations.start_simulation,
        "startSimulation",
        "Start a what-if replay of recorded traffic through a candidate config (one at a time)",
        ("policies",),
        {
            202: Answer(
                "started",
                answers.SimulationAnswer,
                headers={"Location": "where to ask for its status and report"},
                links={"GetSimulation": Link("getSimulation", {"id": "$response.body#/id"})},
            )
        },
        bodies=(Body(_JSON, api_simulations.SimulationPayload),),
        errors=(409,),
    ),
    Route(
        "GET",
        "/v1/simulations/{id}",
        api_simulations.get_simulation,
        "getSimulation",
        "A simulation's status and, once done, its report (format=json or html)",
        ("policies",),
        {
            200: Answer(
                "its status (and report)",
                answers.SimulationAnswer,
                also={"text/html": "with format=html: the report as a self-contained page"},
            ),
        },
        query=queries.SimulationQuery,
        errors=(409,),
        stores=False,
    ),
    Route(
        "POST",
        "/v3/mail/send",
        guarded(sendgrid.mail_send, sendgrid.reply_error),
        "sendgridMailSend",
        "SendGrid v3 mail/send (Bearer: a sendguard API token)",
        ("esp",),
        {
            202: Answer("accepted", media_type="", headers={"X-Message-Id": "the message id"}),
            200: Answer("sandbox mode: validated, not sent", media_type=""),
        },
        auth=Auth.SENDGRID,
        bodies=(Body(_JSON, schema=shapes.SENDGRID_MAIL),),
        errors=(401,),
        error=answers.SendGridError,
    ),
    Route(
        "POST",
        "/email",
        guarded(postmark.send_email, postmark.reply_error),
        "postmarkEmail",
        "Postmark: send one email (X-Postmark-Server-Token: a sendguard API token)",
        ("esp",),
        _ok(answers.PostmarkResult, "accepted"),
        auth=Auth.POSTMARK,
        bodies=(Body(_JSON, schema=shapes.POSTMARK_EMAIL),),
        errors=(401, 422),
        error=answers.PostmarkError,
    ),
    Route(
        "POST",
        "/email/batch",
        guarded(postmark.send_batch, postmark.reply_error),
        "postmarkBatch",
        f"Postmark: send up to {postmark.MAX_BATCH} emails",
        ("esp",),
        {200: Answer("one result per email", answers.PostmarkResult, many=True)},
        auth=Auth.POSTMARK,
        bodies=(Body(_JSON, schema=shapes.POSTMARK_BATCH),),
        errors=(401, 422),
        error=answers.PostmarkError,
    ),
    *(
        Route(
            "POST",
            path + slash,
            guarded(handler, postmark.reply_error),
            f"postmark{name}{'Slash' if slash else ''}",
            f"Postmark: {what} (sent on as it came when the route leads to a Postmark upstream)"
            + (" (as postmarker calls it, with a trailing slash)" if slash else ""),
            ("esp",),
            answer,
            auth=Auth.POSTMARK,
            bodies=(Body(_JSON, schema=body),),
            errors=(401, 422),
            error=answers.PostmarkError,
            # postmarker's trailing-slash spelling of the same operation: served, not documented.
            documented=not slash,
        )
        for path, name, handler, what, answer, body in (
            (
                "/email/withTemplate",
                "WithTemplate",
                postmark.send_with_template,
                "send one email from a stored template",
                _ok(answers.PostmarkResult, "accepted"),
                shapes.POSTMARK_TEMPLATE_EMAIL,
            ),
            (
                "/email/batchWithTemplates",
                "BatchWithTemplates",
                postmark.send_batch_with_templates,
                "send emails from stored templates",
                {200: Answer("one result per email", answers.PostmarkResult, many=True)},
                shapes.POSTMARK_TEMPLATE_BATCH,
            ),
        )
        for slash in ("", "/")
    ),
    Route(
        "POST",
        "/v3/{domain}/messages",
        guarded(mailgun.messages, mailgun.reply_error),
        "mailgunMessages",
        "Mailgun messages, multipart or urlencoded (basic auth api:<a sendguard API token>)",
        ("esp",),
        {
            200: Answer("queued", answers.MailgunAnswer),
            401: Answer("bad credentials: the text Forbidden", media_type="text/plain"),
        },
        auth=Auth.MAILGUN,
        bodies=_MAILGUN_BODIES,
        errors=(401,),
        error=answers.MailgunError,
    ),
    Route(
        "POST",
        "/v3/{domain}/messages.mime",
        guarded(mailgun.messages_mime, mailgun.reply_error),
        "mailgunMessagesMime",
        "Mailgun messages.mime (a `message` file part and `to`)",
        ("esp",),
        {
            200: Answer("queued", answers.MailgunAnswer),
            401: Answer("bad credentials: the text Forbidden", media_type="text/plain"),
        },
        auth=Auth.MAILGUN,
        bodies=(Body("multipart/form-data", schema=shapes.MAILGUN_MIME),),
        errors=(401,),
        error=answers.MailgunError,
    ),
    Route(
        "POST",
        "/v1/webhooks/sendgrid",
        webhooks.sendgrid_webhook,
        "sendgridWebhook",
        "SendGrid signed Event Webhook (ECDSA); events recorded as POST /v1/events",
        ("webhooks",),
        _ok(answers.WebhookAnswer, "recorded"),
        auth=Auth.SIGNED,
        bodies=(Body(_JSON, schema={"type": "array", "items": _ANY_OBJECT}),),
        errors=(401,),
    ),
    Route(
        "POST",
        "/v1/webhooks/postmark",
        webhooks.postmark_webhook,
        "postmarkWebhook",
        "Postmark webhook (basic auth); events recorded as POST /v1/events",
        ("webhooks",),
        _ok(answers.WebhookAnswer, "recorded"),
        auth=Auth.SIGNED,
        bodies=(Body(_JSON, schema=_ANY_OBJECT),),
        errors=(401,),
    ),
    Route(
        "POST",
        "/v1/webhooks/postmark/{secret}",
        webhooks.postmark_webhook,
        "postmarkWebhookSecretPath",
        "Postmark webhook (secret path); events recorded as POST /v1/events",
        ("webhooks",),
        _ok(answers.WebhookAnswer, "recorded"),
        auth=Auth.SIGNED,
        bodies=(Body(_JSON, schema=_ANY_OBJECT),),
        errors=(401,),
    ),
    Route(
        "POST",
        "/v1/webhooks/mailgun",
        webhooks.mailgun_webhook,
        "mailgunWebhook",
        "Mailgun signed webhook (HMAC-SHA256, 5-minute replay window)",
        ("webhooks",),
        _ok(answers.WebhookAnswer, "recorded"),
        auth=Auth.SIGNED,
        bodies=(Body(_JSON, schema=_ANY_OBJECT),),
        errors=(401,),
    ),
    Route(
        "GET",
        "/metrics",
        api_health.metrics,
        "metrics",
        "Prometheus metrics (public while http.metrics_public is true)",
        ("health",),
        {200: Answer("the text exposition format", media_type="text/plain")},
        auth=Auth.METRICS,
        stores=False,
    ),
    Route(
        "GET",
        "/healthz",
        api_health.healthz,
        "healthz",
        "Liveness",
        ("health",),
        _ok(answers.Health, "the process answers"),
        auth=Auth.PUBLIC,
        stores=False,
    ),
    Route(
        "GET",
        "/readyz",
        api_health.readyz,
        "readyz",
        "Readiness: store and upstream reachable",
        ("health",),
        {
            200: Answer("ready", answers.Readiness),
            503: Answer("not ready: the failing checks say why", answers.Readiness),
        },
        auth=Auth.PUBLIC,
        stores=False,
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi.serve,
        "openapi",
        "This document",
        ("health",),
        {200: Answer("the OpenAPI 3.1 document", schema=_ANY_OBJECT)},
        auth=Auth.PUBLIC,
        stores=False,
    ),
)
"""Every route of the HTTP API; append one `Route` to add a route."""
