"""The SQLite schema, versioned in code (`PRAGMA user_version` holds the applied version)."""

from __future__ import annotations

import sqlite3

# Each entry migrates the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL,
        ingress TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        headers TEXT NOT NULL,
        fields TEXT NOT NULL,
        campaign TEXT,
        class TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_hash TEXT,
        content BLOB NOT NULL
    );
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL REFERENCES messages(id),
        recipient TEXT NOT NULL,
        recipient_key TEXT NOT NULL,
        domain TEXT NOT NULL,
        campaign TEXT,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        due_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        first_attempt_at INTEGER,
        last_error TEXT,
        owner TEXT,
        lease_until INTEGER,
        approved_by TEXT,
        hold_origin TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(due_at)
        WHERE state IN ('queued', 'delayed', 'deferred', 'held');
    CREATE INDEX deliveries_sending ON deliveries(lease_until) WHERE state = 'sending';
    CREATE INDEX deliveries_message ON deliveries(message_id);
    CREATE INDEX deliveries_recipient ON deliveries(recipient_key, id);
    CREATE INDEX deliveries_campaign ON deliveries(campaign, id);
    CREATE INDEX deliveries_campaign_created ON deliveries(campaign, created_at);
    CREATE INDEX deliveries_state ON deliveries(state, id);
    CREATE TABLE transitions (
        delivery_id TEXT NOT NULL REFERENCES deliveries(id),
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (delivery_id, seq)
    );
    CREATE TABLE outcomes (
        delivery_id TEXT NOT NULL REFERENCES deliveries(id),
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        policy TEXT NOT NULL,
        action TEXT NOT NULL,
        mode TEXT NOT NULL,
        reason TEXT NOT NULL,
        until INTEGER,
        error TEXT,
        PRIMARY KEY (delivery_id, seq)
    );
    CREATE TABLE history (
        delivery_id TEXT PRIMARY KEY,
        recipient_key TEXT NOT NULL,
        domain TEXT NOT NULL,
        campaign TEXT,
        class TEXT NOT NULL,
        content_hash TEXT,
        at INTEGER NOT NULL,
        sent INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX history_recipient ON history(recipient_key, at);
    CREATE INDEX history_domain ON history(domain, at);
    CREATE INDEX history_campaign ON history(recipient_key, campaign, at);
    CREATE TABLE facts (
        key TEXT NOT NULL,
        contact TEXT NOT NULL,
        value TEXT NOT NULL,
        observed_at INTEGER NOT NULL,
        PRIMARY KEY (key, contact)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        recipient_key TEXT NOT NULL,
        message_id TEXT,
        at INTEGER NOT NULL
    );
    CREATE INDEX events_recipient ON events(recipient_key, at);
    CREATE TABLE campaigns (
        name TEXT PRIMARY KEY,
        approval TEXT,
        paused INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER,
        updated_by TEXT
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        note TEXT NOT NULL,
        count INTEGER NOT NULL
    );
    CREATE TABLE requirements (
        message_id TEXT NOT NULL REFERENCES messages(id),
        key TEXT NOT NULL,
        PRIMARY KEY (key, message_id)
    );
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        response BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # 2: approvals bound to content, offers (repetition counts offers, a purchase ends them),
    # the global kill switch.
    """
    CREATE TABLE approvals (
        campaign TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        approved_by TEXT NOT NULL,
        approved_at INTEGER NOT NULL,
        PRIMARY KEY (campaign, content_hash)
    );
    CREATE TABLE global_pause (
        id INTEGER PRIMARY KEY,
        paused INTEGER NOT NULL,
        updated_at INTEGER,
        updated_by TEXT,
        note TEXT NOT NULL
    );
    ALTER TABLE messages ADD COLUMN offer TEXT;
    ALTER TABLE history ADD COLUMN offer TEXT;
    ALTER TABLE events ADD COLUMN offer TEXT;
    CREATE INDEX messages_content_hash ON messages(content_hash);
    """,
    # 3: fact contacts are recipient keys (case folded like recipients; the newest of facts
    # that differ only in case is kept), facts may name their successor, and `waits` keeps
    # the fact keys each delivery's last decision waits on (Verdict.wakes_on), and who
    # overrode a context hold (`override_by`).
    """
    CREATE TABLE facts_v2 (
        key TEXT NOT NULL,
        contact TEXT NOT NULL,
        value TEXT NOT NULL,
        observed_at INTEGER NOT NULL,
        superseded_by TEXT,
        PRIMARY KEY (key, contact)
    );
    INSERT INTO facts_v2 (key, contact, value, observed_at)
        SELECT key, contact, value, observed_at FROM (
            SELECT key, lower(contact) AS contact, value, observed_at, ROW_NUMBER() OVER
                (PARTITION BY key, lower(contact) ORDER BY observed_at DESC) AS n
            FROM facts
        ) AS ranked
        WHERE n = 1;
    DROP TABLE facts;
    ALTER TABLE facts_v2 RENAME TO facts;
    CREATE TABLE waits (
        delivery_id TEXT NOT NULL REFERENCES deliveries(id),
        key TEXT NOT NULL,
        PRIMARY KEY (key, delivery_id)
    );
    CREATE INDEX waits_delivery ON waits(delivery_id);
    ALTER TABLE deliveries ADD COLUMN override_by TEXT;
    """,
    # 4: durable suppressions (never pruned).
    """
    CREATE TABLE suppressions (
        address_key TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        reason TEXT NOT NULL,
        source TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX suppressions_reason ON suppressions(reason, address_key);
    """,
    # 5: what the SMTP client declared (SMTPUTF8, BODY=8BITMIME), passed on to the upstream;
    # the fingerprint of the request an Idempotency-Key was first used with.
    """
    ALTER TABLE messages ADD COLUMN smtputf8 INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN body_8bit INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE idempotency ADD COLUMN fingerprint TEXT;
    """,
    # 6: the outbound webhook outbox (rows written in the transaction of the state change they
    # announce; deleted once delivered), and an index for the shadow report's window.
    """
    CREATE TABLE webhook_outbox (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL,
        delivery_id TEXT NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        next_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        owner TEXT,
        lease_until INTEGER
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox(next_at);
    CREATE INDEX webhook_outbox_order ON webhook_outbox(target, delivery_id, id);
    CREATE INDEX outcomes_mode_at ON outcomes(mode, at);
    """,
    # 7: edits before approval (the edited copy is a message of its own, the original stays),
    # which campaigns' holds the reviewers were told about, and an index for the held queue.
    """
    CREATE TABLE edits (
        id TEXT PRIMARY KEY,
        campaign TEXT NOT NULL,
        message_id TEXT NOT NULL,
        edited_message_id TEXT NOT NULL,
        origin_message_id TEXT NOT NULL,
        actor TEXT NOT NULL,
        at INTEGER NOT NULL,
        changed TEXT NOT NULL,
        diff TEXT NOT NULL,
        note TEXT NOT NULL,
        count INTEGER NOT NULL
    );
    CREATE INDEX edits_campaign ON edits(campaign, at);
    CREATE INDEX edits_origin ON edits(origin_message_id);
    CREATE INDEX edits_message ON edits(message_id);
    CREATE UNIQUE INDEX edits_edited ON edits(edited_message_id);
    CREATE TABLE review_notices (
        campaign TEXT PRIMARY KEY,
        held_at INTEGER NOT NULL,
        sent_at INTEGER
    );
    CREATE INDEX deliveries_held ON deliveries(campaign, id, updated_at, due_at)
        WHERE state = 'held';
    """,
    # 8: the ESP request a message came in as (SendGrid, Postmark, Mailgun), for pass-through
    # to the same ESP; pruned with its message.
    """
    CREATE TABLE esp_requests (
        message_id TEXT PRIMARY KEY REFERENCES messages(id),
        esp TEXT NOT NULL,
        template TEXT,
        body BLOB NOT NULL
    );
    """,
    # 9: fewer statements per message. A decision's outcomes are kept as JSON on the
    # transition it caused; `outcomes` keeps only shadow outcomes and verdicts other than
    # forward (what the shadow report and the review queue query), plus every outcome of
    # decisions recorded before. `history.sent` is no longer written (read from the
    # delivery's state). history_campaign served no query history_recipient does not (a
    # person's sends in a window are few): one index less to write per send.
    """
    ALTER TABLE transitions ADD COLUMN outcomes TEXT;
    DROP INDEX history_campaign;
    """,
    # 10: a delivery's first and final transitions kept on its own row, so creating it and
    # ending it (`sent`, `failed`, `dropped`) write no transitions row: its first transition
    # is (created_at, first_state, first_reason, first_outcomes), its final one (updated_at,
    # state, final_reason, final_outcomes) while it is in a final state; `transitions` holds
    # those between. Deliveries created before keep their first transition in `transitions`
    # (first_state NULL).
    """
    ALTER TABLE deliveries ADD COLUMN first_state TEXT;
    ALTER TABLE deliveries ADD COLUMN first_reason TEXT;
    ALTER TABLE deliveries ADD COLUMN first_outcomes TEXT;
    ALTER TABLE deliveries ADD COLUMN final_reason TEXT;
    ALTER TABLE deliveries ADD COLUMN final_outcomes TEXT;
    """,
    # 11: the server's simulations (POST /v1/simulations), shared by every worker and
    # instance: at most one running (the unique partial index), held by `owner` until
    # `lease_until`; `report` is JSON text, `html` the report's page (UTF-8).
    """
    CREATE TABLE simulations (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        actor TEXT NOT NULL,
        config_hash TEXT NOT NULL,
        since_at INTEGER NOT NULL,
        until_at INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        owner TEXT NOT NULL,
        lease_until INTEGER,
        error TEXT,
        report TEXT,
        html BLOB
    );
    CREATE UNIQUE INDEX simulations_running ON simulations(status) WHERE status = 'running';
    """,
    # 12: a large content in pieces (sql_content.py): `content_chunks` holds them, written
    # before their message's row (so no foreign key), by `owner` (owner.py) at `written_at`;
    # `part` 0 is the message's content (its row then has an empty `content` and `chunks` =
    # how many pieces), 1 the body of the ESP request it came in as (likewise in esp_requests).
    """
    CREATE TABLE content_chunks (
        message_id TEXT NOT NULL,
        part INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        owner TEXT NOT NULL,
        written_at INTEGER NOT NULL,
        PRIMARY KEY (message_id, part, seq)
    );
    ALTER TABLE messages ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE esp_requests ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
    """,
    # 13: two indexes rebuilt, same rows, cheaper to use. history_recipient covers what a
    # decision reads of a recipient's sends (the recipient read, `history`, `send_times`):
    # no descent into `history` per send read, which at a million prior deliveries is a page
    # fault and a cache miss each. deliveries_due's condition as comparisons joined by OR:
    # SQLite codes an IN list of more than two constants as a temporary B-tree built every
    # time a statement runs, and it evaluates the condition of a partial index for every
    # row inserted and for a changed row before and after (two trees per delivery's insert,
    # two per `sent`). The queries that want the index spell it as DUE_CONDITION.
    """
    DROP INDEX history_recipient;
    CREATE INDEX history_recipient ON history(recipient_key, at, delivery_id, campaign, class,
        content_hash, offer, sent);
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries(due_at)
        WHERE (state = 'queued' OR state = 'delayed' OR state = 'deferred' OR state = 'held');
    """,
    # 14: an approval covers the message's links, not only its text. `messages.links` and
    # `approvals.links` hold the link targets (sendguard/links.py, stored form); NULL: stored
    # before, a message's read from its content when needed, an approval's covering its text
    # whatever the links (grandfathered). One text may be approved with several sets of
    # links, so an approval is keyed by all three (the unique index; `*` is no stored form:
    # a grandfathered row is one of its own, as it was unique by campaign and text already).
    """
    ALTER TABLE messages ADD COLUMN links TEXT;
    CREATE TABLE approvals_v14 (
        campaign TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        links TEXT,
        approved_by TEXT NOT NULL,
        approved_at INTEGER NOT NULL
    );
    INSERT INTO approvals_v14 (campaign, content_hash, approved_by, approved_at)
        SELECT campaign, content_hash, approved_by, approved_at FROM approvals;
    DROP TABLE approvals;
    ALTER TABLE approvals_v14 RENAME TO approvals;
    CREATE UNIQUE INDEX approvals_content
        ON approvals(campaign, content_hash, COALESCE(links, '*'));
    CREATE INDEX approvals_campaign ON approvals(campaign, approved_at);
    """,
    # 15: the review page's sign-ins, shared by every worker and instance (they lived in one
    # process's memory). `review_sessions` is keyed by the SHA-256 of the cookie's token (a
    # copy of the database hands out no sign-in); `password_check` fingerprints the password
    # hash it was opened with (a changed password ends it); `notice` is what the last form
    # did, shown once. `review_throttle` keeps the recent failed sign-ins of a user name or an
    # address (`failures`: a JSON list of times), one row per key, so that a row lock
    # serializes the attempts on one key across instances.
    """
    CREATE TABLE review_sessions (
        token_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        password_check TEXT NOT NULL,
        csrf TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        notice TEXT
    );
    CREATE INDEX review_sessions_expires ON review_sessions(expires_at);
    CREATE INDEX review_sessions_user ON review_sessions(username);
    CREATE TABLE review_throttle (
        key TEXT PRIMARY KEY,
        failures TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX review_throttle_updated ON review_throttle(updated_at);
    """,
    # 16: the resend check (sendguard/resend.py). `resend_key` is the 64-bit key of a message
    # an SMTP client may send again (its Message-ID, envelope sender and fingerprints), kept
    # on each of its deliveries: a decision looks up the recipient's deliveries with the key
    # in one index probe, whatever the size of either message (a key on `messages` would read
    # every delivery of a large first copy for each recipient of its retransmission). NULL
    # (most rows: HTTP sends, messages without a Message-ID of their own) is not indexed. It
    # goes with its delivery when retention prunes it.
    """
    ALTER TABLE deliveries ADD COLUMN resend_key INTEGER;
    CREATE INDEX deliveries_resend ON deliveries(resend_key, recipient_key)
        WHERE resend_key IS NOT NULL;
    """,
    # 17: a send's `history.sent` kept right again, so that a decision reads a recipient's
    # sends from the covering history_recipient alone. Since 9 it was read from the
    # delivery's state (a join: two B-tree descents per send read, the primary key index of
    # `deliveries` and its row, which at a million prior deliveries are a cache miss and a
    # page fault each). The trigger sets it when the delivery enters `sent`, in the statement
    # that moves it there (no statement more for the client). A send counts as made when its
    # row says so, its delivery is `sent`, or its delivery is gone (pruned when done: a failed
    # or dropped one takes its history row with it); the rows written before say so at once.
    # The index is dropped and made again around the update, which rewrites nearly every row.
    """
    DROP INDEX history_recipient;
    UPDATE history SET sent = 1 WHERE sent = 0 AND NOT EXISTS (SELECT 1 FROM deliveries d
        WHERE d.id = history.delivery_id AND d.state <> 'sent');
    CREATE INDEX history_recipient ON history(recipient_key, at, delivery_id, campaign, class,
        content_hash, offer, sent);
    CREATE TRIGGER history_sent AFTER UPDATE OF state ON deliveries
        WHEN new.state = 'sent' AND old.state <> 'sent'
        BEGIN UPDATE history SET sent = 1 WHERE delivery_id = new.id; END;
    """,
    # 18: PostgreSQL's alone (postgres_schema.py: `history.sent` written in place, a HOT
    # update); nothing changes here.
    "",  # 19: a message's requirements found by the message (retention's prune of a message that
    # nothing refers to any more, a reviewer's edit copying them to the corrected message):
    # the primary key leads with the fact key, so both read every requirement of every message.
    """
    CREATE INDEX requirements_message ON requirements(message_id);
    """,
)

DUE_CONDITION = "(state = 'queued' OR state = 'delayed' OR state = 'deferred' OR state = 'held')"
"""The condition of the partial index `deliveries_due`, as a query must spell it for SQLite to
use the index (its planner takes a partial index only for a condition it finds, term for term,
in the query's)."""


# sqlite_stat1 rows (table, index, "rows rows-per-key"): the shape of a store's deliveries,
# many in few states, few due, fewer being sent. SQLite has no statistics unless ANALYZE ran,
# and then takes the index on state for every condition on state: the dispatcher's next due
# time and its claims read every delivery in a due state (every delayed one, 243 ms per look
# with 100,000 delayed on the build machine, on the event loop), where deliveries_due gives
# the earliest at once (0.02 ms), and the held queue, waking and an edit went through all
# deliveries in a state instead of those of one recipient, message or campaign. Told this
# shape, the planner uses the partial indexes made for them, as PostgreSQL's (which keeps
# statistics) does. Statistics measured early in a store's life (all sent, nothing due) would
# be worse: the shape is set at every open, whatever an ANALYZE wrote.
PLANNER_SHAPE = (
    ("deliveries", "deliveries_state", "1000000 200000 1"),
    ("deliveries", "deliveries_due", "10000 1"),
    ("deliveries", "deliveries_sending", "100 1"),
)


def tell_the_planner(conn: sqlite3.Connection) -> None:
    """Write PLANNER_SHAPE into sqlite_stat1 and have this connection's planner read it
    (connections opened later read it as they load the schema)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # ANALYZE of a one-row table: it creates sqlite_stat1 if missing, in no time.
        conn.execute("ANALYZE global_pause")
        conn.execute(
            "DELETE FROM sqlite_stat1 WHERE tbl = 'deliveries' AND idx IN (?, ?, ?)",
            [index for _, index, _ in PLANNER_SHAPE],
        )
        conn.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", PLANNER_SHAPE)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("ANALYZE sqlite_schema")  # the planner reads sqlite_stat1 again


def statements(script: str) -> list[str]:
    """The statements of a migration's `script`, one by one: split at each `;` that ends one
    (a trigger's body holds a `;` of its own)."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.replace(";", "").strip():
                found.append(pending)
            pending = ""
    if pending.replace(";", "").strip():
        found.append(pending)
    return found


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Bring the schema to the newest version, one migration per transaction. Returns the
    versions this call applied (none when another connection applied them first)."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"the database schema is version {current}, newer than this sendguard "
            f"knows ({len(MIGRATIONS)}); upgrade sendguard"
        )
    applied: list[int] = []
    for version in range(current, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        # Workers of one serve start together: another may have applied it meanwhile.
        if conn.execute("PRAGMA user_version").fetchone()[0] > version:
            conn.execute("COMMIT")
            continue
        try:
            for statement in statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version + 1)
    return applied
