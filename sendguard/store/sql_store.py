"""The store contract in SQL, written once for every SQL backend: `SqlStore`.

`SqlStore` is composed of one part per concern, each a class in a module of its own, on the
seam a backend supplies (`SqlJobs`, `sql_jobs.py`: how a job runs in a transaction, and the
helpers every part's statements share):

- `SqlIntake` (`sql_intake.py`): intake and decisions: messages, deliveries, idempotency keys,
  how a decision is recorded, send reservations;
- `SqlDispatch` (`sql_dispatch.py`): the dispatcher's claims, leases, state changes, wake-ups;
- `SqlDeliveries` (`sql_deliveries.py`): deliveries and their timelines, read;
- `SqlHistory` (`sql_history.py`): the send history and the counts policies read;
- `SqlFactsEvents` (`sql_facts_events.py`): facts, events, suppressions;
- `SqlReview` (`sql_review.py`): campaign decisions, approvals, the pause, the held queue,
  edits, reviewer notices;
- `SqlReports` (`sql_reports.py`): counts by state, campaigns, the shadow report, queue ages;
- `SqlAudit` (`sql_audit.py`): the audit log;
- `SqlOutbox` (`sql_outbox.py`): outbound webhook events;
- `SqlRetention` (`sql_retention.py`): pruning;
- `SqlSignIns` (`sql_sign_ins.py`): the review page's sessions and sign-in throttle.

The parts are mixins rather than objects `SqlStore` delegates to: each method's text is what
it was in one class, a backend overrides any of them (`_write`, `get_pause`, `_lease_and_mark`,
the replay's `_record`) and every part sees the override, and a part's base classes say which
other concern its transactions reach into. Those are:

- intake (`add_message`) and outbox: a new delivery's webhook event commits with it;
- dispatch (`change`, `wake_waiting`) with intake and decisions (`_record`,
  `_record_decision`, `_reserve`) and outbox: a state change commits with its decision, its
  send reservation and its webhook event;
- facts and events (`add_event`) and outbox: a bounce's webhook event; suppressions
  (`add_suppressions`, `lift_suppression`) and the audit log: the entry commits with the change;
- review (`add_edit`) and intake's tables: the edited copy of a message and the move of its
  held deliveries commit together;
- retention (`prune`): every concern's tables, in one job.

Every other transaction stays within its concern. A new concern (the simulations' store) gets
a module and a part of its own, added to `SqlStore`'s bases. Names other modules import from
here (`SqlStore`, `Tx`, `Job`, the row builders...) stay importable from here.
"""

from __future__ import annotations

from sendguard.store.base import Store
from sendguard.store.sql_audit import SqlAudit
from sendguard.store.sql_deliveries import SqlDeliveries
from sendguard.store.sql_dispatch import DUE_STATES, SENDING_TRANSITIONS, SqlDispatch
from sendguard.store.sql_facts_events import SqlFactsEvents
from sendguard.store.sql_history import SqlHistory
from sendguard.store.sql_intake import (
    DELIVERY_INSERT_COLUMNS,
    MESSAGE_INSERT,
    REQUIREMENT_INSERT,
    SqlIntake,
    delivery_values,
    message_values,
    premise_keys,
)
from sendguard.store.sql_jobs import Job, Tx, Write
from sendguard.store.sql_outbox import SqlOutbox
from sendguard.store.sql_reports import SqlReports
from sendguard.store.sql_retention import SqlRetention
from sendguard.store.sql_review import SqlReview
from sendguard.store.sql_sign_ins import SqlSignIns
from sendguard.store.sql_simulations import SqlSimulations

__all__ = [
    "DELIVERY_INSERT_COLUMNS",
    "DUE_STATES",
    "MESSAGE_INSERT",
    "REQUIREMENT_INSERT",
    "SENDING_TRANSITIONS",
    "Job",
    "SqlStore",
    "Tx",
    "Write",
    "delivery_values",
    "message_values",
    "premise_keys",
]


class SqlStore(
    SqlDispatch,
    SqlIntake,
    SqlDeliveries,
    SqlHistory,
    SqlFactsEvents,
    SqlReports,
    SqlReview,
    SqlAudit,
    SqlOutbox,
    SqlRetention,
    SqlSimulations,
    SqlSignIns,
    Store,
):
    """Every contract operation; a backend supplies transactions, locks and lifecycle."""
