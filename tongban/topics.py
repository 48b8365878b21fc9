"""Typed names: every Kafka topic and every event type Tongban exchanges, in one place.

Handlers, the runtime and tools import these instead of spelling names out, so a typo is an
``AttributeError`` at import time rather than a silent topic nobody reads.
``tests/unit/test_topics.py`` checks this module against the declarations:

- topics against ``infra/topics.toml`` (every declared topic or template has a name here and
  every name here is declared; one writer per topic);
- event types against ``schemas/`` (each has a released ``<namespace>.<Name>.v<N>.avsc``).

Names are logical: the runtime prefixes ``TONGBAN_NAMESPACE`` when it talks to the broker.
Templates are functions; each returns the declared template when given its placeholder,
e.g. ``partner_decisions("{partner}") == "tongban.partner.{partner}.decisions"``.
"""

from __future__ import annotations

# ---------------------------------------------------------------- application lifecycle
# Keyed by application id, so one application's events stay in order within a topic.
APPLICATION_RECEIVED = "tongban.application.received"  # writer: intake
APPLICATION_ROUTED = "tongban.application.routed"  # writer: routing
APPLICATION_VERIFIED = "tongban.application.verified"  # writer: verification
APPLICATION_ACCEPTED = "tongban.application.accepted"  # writer: delivery
APPLICATION_DECIDED = "tongban.application.decided"  # writer: delivery
APPLICATION_DELIVERED = "tongban.application.delivered"  # writer: delivery

# ---------------------------------------------------------------- feedback and catalogue
FEEDBACK_RATINGS = "tongban.feedback.ratings"  # writer: intake; key: application id (一事一评)
FEEDBACK_WORKORDERS = "tongban.feedback.workorders"  # writer: the 12345 hotline; key: work-order id
FEEDBACK_FLAGS = "tongban.feedback.flags"  # writer: feedback; key: matter code
CATALOGUE_CHANGES = "tongban.catalogue.changes"  # writer: routing; compacted; key: matter code

# ---------------------------------------------------------------- schemas
SCHEMAS = "tongban.schemas"  # every writer publishes its schemas here; compacted

TOPICS = (
    APPLICATION_RECEIVED,
    APPLICATION_ROUTED,
    APPLICATION_VERIFIED,
    APPLICATION_ACCEPTED,
    APPLICATION_DECIDED,
    APPLICATION_DELIVERED,
    FEEDBACK_RATINGS,
    FEEDBACK_WORKORDERS,
    FEEDBACK_FLAGS,
    CATALOGUE_CHANGES,
    SCHEMAS,
)


# ---------------------------------------------------------------- per partner
# A partner id is a division code at any level ("420000") or a system id ("ems").
def partner_assignments(partner_id: str) -> str:
    """Work delivery hands to a deciding authority (writer: delivery)."""
    return f"tongban.partner.{partner_id}.assignments"


def partner_decisions(partner_id: str) -> str:
    """An authority's acceptance and decision (writer: the partner itself)."""
    return f"tongban.partner.{partner_id}.decisions"


def partner_dispatches(partner_id: str) -> str:
    """Results for the carrier to deliver (writer: delivery)."""
    return f"tongban.partner.{partner_id}.dispatches"


def partner_receipts(partner_id: str) -> str:
    """The carrier's delivery receipts (writer: the carrier)."""
    return f"tongban.partner.{partner_id}.receipts"


PARTNER_STREAMS = (partner_assignments, partner_decisions, partner_dispatches, partner_receipts)

CARRIER = "ems"  # the postal carrier's partner id
POSTAL_DISPATCHES = partner_dispatches(CARRIER)
POSTAL_RECEIPTS = partner_receipts(CARRIER)


# ---------------------------------------------------------------- per consumer group
# `group` is the consumer group id, e.g. "tongban-intake" (without the namespace).
def dlq(group: str) -> str:
    """Dead letters of a group (writer: the group's service)."""
    return f"tongban.dlq.{group}"


def retry(group: str) -> str:
    """Dead letters an operator sends back to the group (writer: the operator)."""
    return f"tongban.retry.{group}"


def changelog(group: str) -> str:
    """The group's state store, compacted and kept forever (writer: the group's service)."""
    return f"tongban.changelog.{group}"


def commands(group: str) -> str:
    """Requests the service's API hands to its own handlers (writer: the group's service)."""
    return f"tongban.commands.{group}"


def repartition(group: str) -> str:
    """Inputs re-keyed to their aggregate so each aggregate has one owner (writer: the group's service)."""
    return f"tongban.repartition.{group}"


GROUP_STREAMS = (dlq, retry, changelog, commands, repartition)


# ---------------------------------------------------------------- event types
# An event type is the Avro record's full name, `<namespace>.<Name>`, of a schema in schemas/.
APPLICATION_RECEIVED_EVENT = "tongban.application.ApplicationReceived"  # on APPLICATION_RECEIVED
APPLICATION_ROUTED_EVENT = "tongban.application.ApplicationRouted"  # on APPLICATION_ROUTED
APPLICATION_UNROUTABLE_EVENT = "tongban.application.ApplicationUnroutable"  # on APPLICATION_ROUTED
APPLICATION_VERIFIED_EVENT = "tongban.application.ApplicationVerified"  # on APPLICATION_VERIFIED
APPLICATION_VERIFICATION_FAILED_EVENT = "tongban.application.ApplicationVerificationFailed"  # on APPLICATION_VERIFIED
APPLICATION_ACCEPTED_EVENT = "tongban.application.ApplicationAccepted"  # on APPLICATION_ACCEPTED
APPLICATION_REFUSED_EVENT = "tongban.application.ApplicationRefused"  # on APPLICATION_ACCEPTED (不予受理)
APPLICATION_DECIDED_EVENT = "tongban.application.ApplicationDecided"  # on APPLICATION_DECIDED
APPLICATION_DELIVERED_EVENT = "tongban.application.ApplicationDelivered"  # on APPLICATION_DELIVERED
MATTER_ASSIGNED_EVENT = "tongban.partner.MatterAssigned"  # on partner_assignments
AUTHORITY_ACCEPTANCE_EVENT = "tongban.partner.AuthorityAcceptance"  # on partner_decisions
AUTHORITY_DECISION_EVENT = "tongban.partner.AuthorityDecision"  # on partner_decisions
POSTAL_DISPATCH_EVENT = "tongban.delivery.PostalDispatch"  # on POSTAL_DISPATCHES
POSTAL_RECEIPT_EVENT = "tongban.delivery.PostalReceipt"  # on POSTAL_RECEIPTS
SERVICE_RATING_EVENT = "tongban.feedback.ServiceRating"  # on FEEDBACK_RATINGS
HOTLINE_WORK_ORDER_EVENT = "tongban.feedback.HotlineWorkOrder"  # on FEEDBACK_WORKORDERS
MATTER_FLAGGED_EVENT = "tongban.feedback.MatterFlagged"  # on FEEDBACK_FLAGS
MATTER_FLAG_CLEARED_EVENT = "tongban.feedback.MatterFlagCleared"  # on FEEDBACK_FLAGS
MATTER_CHANGED_EVENT = "tongban.catalogue.MatterChanged"  # on CATALOGUE_CHANGES
COMMAND_EVENT = "tongban.runtime.Command"  # on commands(group): a request a service's API accepted
TIMER_FIRED_EVENT = "tongban.runtime.TimerFired"  # never on a topic: the runtime stores it

EVENT_TYPES = (
    APPLICATION_RECEIVED_EVENT,
    APPLICATION_ROUTED_EVENT,
    APPLICATION_UNROUTABLE_EVENT,
    APPLICATION_VERIFIED_EVENT,
    APPLICATION_VERIFICATION_FAILED_EVENT,
    APPLICATION_ACCEPTED_EVENT,
    APPLICATION_REFUSED_EVENT,
    APPLICATION_DECIDED_EVENT,
    APPLICATION_DELIVERED_EVENT,
    MATTER_ASSIGNED_EVENT,
    AUTHORITY_ACCEPTANCE_EVENT,
    AUTHORITY_DECISION_EVENT,
    POSTAL_DISPATCH_EVENT,
    POSTAL_RECEIPT_EVENT,
    SERVICE_RATING_EVENT,
    HOTLINE_WORK_ORDER_EVENT,
    MATTER_FLAGGED_EVENT,
    MATTER_FLAG_CLEARED_EVENT,
    MATTER_CHANGED_EVENT,
    COMMAND_EVENT,
    TIMER_FIRED_EVENT,
)
