"""Typed names: every Kafka topic and every event type Tongban exchanges, in one place.

Handlers, the runtime and tools import these instead of spelling names out, so a typo is an
``AttributeError`` at import time rather than a silent topic nobody reads.
``tests/unit/test_topics.py`` checks this module against the declarations:

- topics against ``infra/topics.toml`` (every declared topic or template has a name here and
  every name here is declared; one writer per topic);
- event types against ``schemas/`` (each has a released ``<namespace>.<Name>.v<N>.avsc``);
- which event types each topic carries (``events`` in ``infra/topics.toml``, read at run time
  by ``tongban.topic_events``: the runtime refuses a type its topic does not carry).

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
APPLICATION_NOTICES = "tongban.application.notices"  # writer: intake; the notices an applicant is served

# ---------------------------------------------------------------- feedback and catalogue
FEEDBACK_RATINGS = "tongban.feedback.ratings"  # writer: intake; key: application id (一事一评)
# 好差评 from the channels outside intake, each topic written by its channel alone (feeds haochaping-<channel>)
FEEDBACK_RATINGS_HALL = "tongban.feedback.ratings.hall"  # on site at the halls' windows (一次一评)
FEEDBACK_RATINGS_PORTAL = "tongban.feedback.ratings.portal"  # the online service portal (一事一评)
FEEDBACK_RATINGS_MOBILE = "tongban.feedback.ratings.mobile"  # the mobile apps (一事一评)
FEEDBACK_RATINGS_WEBSITE = "tongban.feedback.ratings.website"  # the government websites (一事一评)
FEEDBACK_WORKORDERS = "tongban.feedback.workorders"  # writer: the 12345 hotline; key: work-order id
FEEDBACK_FLAGS = "tongban.feedback.flags"  # writer: flags (the faust app); key: matter code
FEEDBACK_FACTS = "tongban.feedback.facts"  # writer: feedback; key: matter|division|party
FEEDBACK_CASEWORK = "tongban.feedback.casework"  # writer: the operator (the supervision desk); key: application id
CATALOGUE_CHANGES = "tongban.catalogue.changes"  # writer: routing; compacted; key: matter code
SLA_BREACHED = "tongban.sla.breached"  # writer: routing (the SLA ledger); key: application id
DATASHARING_ANCHORS = "tongban.datasharing.anchors"  # writer: the data-sharing providers; compacted; key: chain
DATASHARING_DISPUTES = "tongban.datasharing.disputes"  # writer: the data-sharing providers; key: application id
CONSULTATIONS = "tongban.consultation.recorded"  # writer: intake (异地视频会商收件); key: consultation id

# ---------------------------------------------------------------- schemas
SCHEMAS = "tongban.schemas"  # every writer publishes its schemas here; compacted

TOPICS = (
    APPLICATION_RECEIVED,
    APPLICATION_ROUTED,
    APPLICATION_VERIFIED,
    APPLICATION_ACCEPTED,
    APPLICATION_DECIDED,
    APPLICATION_DELIVERED,
    APPLICATION_NOTICES,
    FEEDBACK_RATINGS,
    FEEDBACK_RATINGS_HALL,
    FEEDBACK_RATINGS_PORTAL,
    FEEDBACK_RATINGS_MOBILE,
    FEEDBACK_RATINGS_WEBSITE,
    FEEDBACK_WORKORDERS,
    FEEDBACK_FLAGS,
    FEEDBACK_FACTS,
    FEEDBACK_CASEWORK,
    CATALOGUE_CHANGES,
    SLA_BREACHED,
    DATASHARING_ANCHORS,
    DATASHARING_DISPUTES,
    CONSULTATIONS,
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


def partner_submissions(partner_id: str) -> str:
    """Applications received at the partner's windows (writer: the partner itself)."""
    return f"tongban.partner.{partner_id}.submissions"


def partner_acknowledgements(partner_id: str) -> str:
    """Intake's answer to each submission: its application number or why not (writer: intake)."""
    return f"tongban.partner.{partner_id}.acknowledgements"


def partner_originals(partner_id: str) -> str:
    """资料寄递: original paper materials carried from the receiving window to the deciding
    authority (writer: the carrier)."""
    return f"tongban.partner.{partner_id}.originals"


PARTNER_STREAMS = (partner_assignments, partner_decisions, partner_dispatches, partner_receipts,
                   partner_submissions, partner_acknowledgements, partner_originals)

CARRIER = "ems"  # the postal carrier's partner id
POSTAL_DISPATCHES = partner_dispatches(CARRIER)
POSTAL_RECEIPTS = partner_receipts(CARRIER)
POSTAL_ORIGINALS = partner_originals(CARRIER)
WALLET = "wallet"  # the e-licence wallet's partner id
WALLET_ENTRIES = partner_dispatches(WALLET)
WALLET_RECEIPTS = partner_receipts(WALLET)


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
APPLICATION_UNDER_REVIEW_EVENT = "tongban.application.ApplicationUnderReview"  # on APPLICATION_ROUTED (review queue)
REVIEW_RESOLVED_EVENT = "tongban.application.ReviewResolved"  # on APPLICATION_ROUTED (routing's review queue)
BUNDLE_MEMBER_HELD_EVENT = "tongban.application.BundleMemberHeld"  # on APPLICATION_ROUTED (一件事一次办: waits)
BUNDLE_RELEASED_EVENT = "tongban.application.BundleReleased"  # on APPLICATION_ROUTED (一件事一次办: routed together)
# 一件事一次办 in delivery: a settled application tells its bundle; held results go out together.
BUNDLE_MEMBER_DECIDED_EVENT = "tongban.application.BundleMemberDecided"  # on APPLICATION_DECIDED (read back by bundle)
BUNDLE_RESULTS_RELEASED_EVENT = "tongban.application.BundleResultsReleased"  # on APPLICATION_DECIDED (results go out)
APPLICATION_VERIFIED_EVENT = "tongban.application.ApplicationVerified"  # on APPLICATION_VERIFIED
APPLICATION_VERIFICATION_FAILED_EVENT = "tongban.application.ApplicationVerificationFailed"  # on APPLICATION_VERIFIED
APPLICATION_ACCEPTED_EVENT = "tongban.application.ApplicationAccepted"  # on APPLICATION_ACCEPTED
APPLICATION_REFUSED_EVENT = "tongban.application.ApplicationRefused"  # on APPLICATION_ACCEPTED (不予受理)
APPLICATION_DECIDED_EVENT = "tongban.application.ApplicationDecided"  # on APPLICATION_DECIDED
APPLICATION_DELIVERED_EVENT = "tongban.application.ApplicationDelivered"  # on APPLICATION_DELIVERED
# Intake's part of the acceptance lifecycle: 撤回, 补正 materials, notices.
APPLICATION_WITHDRAWN_EVENT = "tongban.application.ApplicationWithdrawn"  # on APPLICATION_RECEIVED (撤回)
SUPPLEMENT_SUBMITTED_EVENT = "tongban.application.SupplementSubmitted"  # on APPLICATION_RECEIVED (补正 materials)
NOTICE_SERVED_EVENT = "tongban.application.NoticeServed"  # on APPLICATION_NOTICES
MATTER_ASSIGNED_EVENT = "tongban.partner.MatterAssigned"  # on partner_assignments
# The acceptance lifecycle (delivery): 补正, withdrawal, the authority's clock.
SUPPLEMENT_REQUESTED_EVENT = "tongban.application.SupplementRequested"  # on APPLICATION_ACCEPTED (补正告知)
MATERIALS_SUPPLEMENTED_EVENT = "tongban.application.MaterialsSupplemented"  # on APPLICATION_ACCEPTED and assignments
APPLICATION_CLOSED_EVENT = "tongban.application.ApplicationClosed"  # on APPLICATION_ACCEPTED (撤回, 补正 expired)
APPLICATION_CLOCK_CHANGED_EVENT = "tongban.application.ApplicationClockChanged"  # on APPLICATION_ACCEPTED (延期)
ASSIGNMENT_CANCELLED_EVENT = "tongban.partner.AssignmentCancelled"  # on partner_assignments
AUTHORITY_CLOCK_CHANGE_EVENT = "tongban.partner.AuthorityClockChange"  # on partner_decisions
COMMITMENT_CHECK_REQUESTED_EVENT = "tongban.partner.CommitmentCheckRequested"  # on partner_assignments (告知承诺)
COMMITMENT_CHECK_RESULT_EVENT = "tongban.partner.CommitmentCheckResult"  # on partner_decisions
RESULT_REVOKED_EVENT = "tongban.application.ResultRevoked"  # on APPLICATION_DECIDED (a failed 告知承诺 check)
LEG_COMPLETED_EVENT = "tongban.application.LegCompleted"  # on APPLICATION_DECIDED (多地联办: next leg assigned)
LEG_FAILED_EVENT = "tongban.application.LegFailed"  # on APPLICATION_DECIDED (多地联办: done legs undone)
AUTHORITY_ACCEPTANCE_EVENT = "tongban.partner.AuthorityAcceptance"  # on partner_decisions
AUTHORITY_DECISION_EVENT = "tongban.partner.AuthorityDecision"  # on partner_decisions
PARTNER_SUBMISSION_EVENT = "tongban.partner.PartnerSubmission"  # on partner_submissions
SUBMISSION_RECEIVED_EVENT = "tongban.partner.SubmissionReceived"  # on partner_acknowledgements
SUBMISSION_REFUSED_EVENT = "tongban.partner.SubmissionRefused"  # on partner_acknowledgements
POSTAL_DISPATCH_EVENT = "tongban.delivery.PostalDispatch"  # on POSTAL_DISPATCHES
POSTAL_RECEIPT_EVENT = "tongban.delivery.PostalReceipt"  # on POSTAL_RECEIPTS
MATERIALS_DISPATCHED_EVENT = "tongban.partner.MaterialsDispatched"  # on POSTAL_ORIGINALS (资料寄递)
MATERIALS_RECEIVED_EVENT = "tongban.partner.MaterialsReceived"  # on POSTAL_ORIGINALS (资料寄递)
WALLET_ENTRY_EVENT = "tongban.delivery.WalletEntry"  # on WALLET_ENTRIES
WALLET_RECEIPT_EVENT = "tongban.delivery.WalletReceipt"  # on WALLET_RECEIPTS
DELIVERY_PROGRESS_EVENT = "tongban.application.DeliveryProgress"  # on APPLICATION_DELIVERED
SERVICE_RATING_EVENT = "tongban.feedback.ServiceRating"  # on FEEDBACK_RATINGS
HOTLINE_WORK_ORDER_EVENT = "tongban.feedback.HotlineWorkOrder"  # on FEEDBACK_WORKORDERS
MATTER_FLAGGED_EVENT = "tongban.feedback.MatterFlagged"  # on FEEDBACK_FLAGS
MATTER_FLAG_CLEARED_EVENT = "tongban.feedback.MatterFlagCleared"  # on FEEDBACK_FLAGS
SUPERVISION_FACT_EVENT = "tongban.feedback.SupervisionFact"  # on FEEDBACK_FACTS
RECTIFICATION_OVERDUE_EVENT = "tongban.feedback.RectificationOverdue"  # on FEEDBACK_FACTS
APPEAL_DECIDED_EVENT = "tongban.feedback.AppealDecided"  # on FEEDBACK_CASEWORK (申诉复核)
RECTIFICATION_STEP_EVENT = "tongban.feedback.RectificationStepRecorded"  # on FEEDBACK_CASEWORK
MATTER_CHANGED_EVENT = "tongban.catalogue.MatterChanged"  # on CATALOGUE_CHANGES
SLA_BREACHED_EVENT = "tongban.sla.SlaBreached"  # on SLA_BREACHED
SLA_WARNING_EVENT = "tongban.sla.SlaWarning"  # on SLA_BREACHED (红黄牌)
EVIDENCE_AWAITED_EVENT = "tongban.application.EvidenceAwaited"  # on APPLICATION_VERIFIED: a provider is down
CHAIN_ANCHORED_EVENT = "tongban.datasharing.ChainAnchored"  # on DATASHARING_ANCHORS
EVIDENCE_DISPUTED_EVENT = "tongban.datasharing.EvidenceDisputed"  # on DATASHARING_DISPUTES (校核纠错)
# 异地视频会商收件: a window and the deciding authority agree the checklist (the video stays outside).
CONSULTATION_REQUESTED_EVENT = "tongban.consultation.ConsultationRequested"  # on CONSULTATIONS
CONSULTATION_RECORDED_EVENT = "tongban.consultation.ConsultationRecorded"  # on CONSULTATIONS
COMMAND_EVENT = "tongban.runtime.Command"  # on commands(group): a request a service's API accepted
TIMER_FIRED_EVENT = "tongban.runtime.TimerFired"  # never on a topic: the runtime stores it

EVENT_TYPES = (
    APPLICATION_RECEIVED_EVENT,
    APPLICATION_ROUTED_EVENT,
    APPLICATION_UNROUTABLE_EVENT,
    APPLICATION_UNDER_REVIEW_EVENT,
    REVIEW_RESOLVED_EVENT,
    BUNDLE_MEMBER_HELD_EVENT,
    BUNDLE_RELEASED_EVENT,
    BUNDLE_MEMBER_DECIDED_EVENT,
    BUNDLE_RESULTS_RELEASED_EVENT,
    APPLICATION_VERIFIED_EVENT,
    APPLICATION_VERIFICATION_FAILED_EVENT,
    APPLICATION_ACCEPTED_EVENT,
    APPLICATION_REFUSED_EVENT,
    APPLICATION_DECIDED_EVENT,
    APPLICATION_DELIVERED_EVENT,
    APPLICATION_WITHDRAWN_EVENT,
    SUPPLEMENT_SUBMITTED_EVENT,
    NOTICE_SERVED_EVENT,
    MATTER_ASSIGNED_EVENT,
    SUPPLEMENT_REQUESTED_EVENT,
    MATERIALS_SUPPLEMENTED_EVENT,
    APPLICATION_CLOSED_EVENT,
    APPLICATION_CLOCK_CHANGED_EVENT,
    ASSIGNMENT_CANCELLED_EVENT,
    AUTHORITY_CLOCK_CHANGE_EVENT,
    COMMITMENT_CHECK_REQUESTED_EVENT,
    COMMITMENT_CHECK_RESULT_EVENT,
    RESULT_REVOKED_EVENT,
    LEG_COMPLETED_EVENT,
    LEG_FAILED_EVENT,
    AUTHORITY_ACCEPTANCE_EVENT,
    AUTHORITY_DECISION_EVENT,
    PARTNER_SUBMISSION_EVENT,
    SUBMISSION_RECEIVED_EVENT,
    SUBMISSION_REFUSED_EVENT,
    POSTAL_DISPATCH_EVENT,
    POSTAL_RECEIPT_EVENT,
    MATERIALS_DISPATCHED_EVENT,
    MATERIALS_RECEIVED_EVENT,
    WALLET_ENTRY_EVENT,
    WALLET_RECEIPT_EVENT,
    DELIVERY_PROGRESS_EVENT,
    SERVICE_RATING_EVENT,
    HOTLINE_WORK_ORDER_EVENT,
    MATTER_FLAGGED_EVENT,
    MATTER_FLAG_CLEARED_EVENT,
    SUPERVISION_FACT_EVENT,
    RECTIFICATION_OVERDUE_EVENT,
    APPEAL_DECIDED_EVENT,
    RECTIFICATION_STEP_EVENT,
    MATTER_CHANGED_EVENT,
    SLA_BREACHED_EVENT,
    SLA_WARNING_EVENT,
    EVIDENCE_AWAITED_EVENT,
    CHAIN_ANCHORED_EVENT,
    EVIDENCE_DISPUTED_EVENT,
    CONSULTATION_REQUESTED_EVENT,
    CONSULTATION_RECORDED_EVENT,
    COMMAND_EVENT,
    TIMER_FIRED_EVENT,
)
