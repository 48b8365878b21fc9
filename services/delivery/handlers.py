"""Delivery service.

Inputs:  ApplicationReceived / Routed / Verified (the file, the deciding authority, the go);
         AuthorityAcceptance and AuthorityDecision on tongban.partner.<id>.decisions (only
         from the assigned authority); PostalReceipt on tongban.partner.ems.receipts and
         WalletReceipt on tongban.partner.wallet.receipts (each only for a dispatch it made);
         the commands of its API (COMMANDS: a window's arrival and pick-up, a redirect after
         a return, an operator's resolution) and the channels' timers (CHANNEL_TIMERS).
         Acceptance lifecycle (services/delivery/acceptance.py): ApplicationWithdrawn and
         SupplementSubmitted from intake on tongban.application.received; AuthorityClockChange
         on tongban.partner.<id>.decisions; the timers `supplement-deadline` and `deferred-promise`;
         告知承诺: the timer `commitment-check`, CommitmentCheckResult on the partner's decisions.
         一件事一次办 (services/delivery/bundles.py): BundleReleased on tongban.application.routed
         (the file's bundle), ApplicationVerificationFailed (FAILED settles it for its bundle) and
         ApplicationUnroutable (a bundle's application rejected on review settles it);
         its own BundleMemberDecided on tongban.application.decided, re-keyed to the bundle, and
         BundleResultsReleased there, by application; the bundle's timer `bundle-hold`.
Outputs: MatterAssigned on tongban.partner.<id>.assignments (a joint matter's legs in turn,
         each to its own party: LegCompleted on tongban.application.decided for each leg before
         the last; a failing leg gives LegFailed, AssignmentCancelled to the party of every leg
         done, and the application's denial); ApplicationAccepted/Refused on
         tongban.application.accepted; ApplicationDecided on tongban.application.decided;
         PostalDispatch on tongban.partner.ems.dispatches, WalletEntry on
         tongban.partner.wallet.dispatches; DeliveryProgress and ApplicationDelivered on
         tongban.application.delivered (the result channels: services/delivery/channels/).
         Acceptance lifecycle: SupplementRequested, MaterialsSupplemented, ApplicationClosed
         (WITHDRAWN, SUPPLEMENT_EXPIRED) and ApplicationClockChanged on
         tongban.application.accepted; on the partner's assignments topic the file's way
         back after 补正 (the same MaterialsSupplemented, the authority's copy) and
         AssignmentCancelled (withdrawn, or the supplement deadline passed).
         A withdrawal after the decision is dead-lettered with the reason. 告知承诺:
         CommitmentCheckRequested on the partner's assignments topic once the check is due;
         ResultRevoked on tongban.application.decided when a promise does not hold.
         一件事一次办: BundleMemberDecided (a file of a bundle is settled) and
         BundleResultsReleased (its held result goes out now) on tongban.application.decided.
State:   one file per application: what intake received, the routing decision, the
         assignment, the acceptance answer, the 补正 request (`supplement`), outstanding
         容缺 materials (`deferred`: code -> promised date; while any is outstanding a result
         does not go out, see acceptance.result_may_go_out), a close (`closed`), the decision
         and the result on its way (`result`: its channel, attempts and dispatch ids, status;
         a corrected address sealed for delivery alone). The applicant's personal fields stay
         sealed as intake sealed them (for verification and delivery); delivery opens them only
         to seal them again for the assigned partner or the carrier, and to scrub partner
         reasons, and drops them once the file is finished. A file of a bundle routed together
         keeps its `bundle` (whether it told the bundle it is settled, whether its result was
         released); the bundle, keyed bundles.key(bundle id), what is settled, held and released.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from datetime import datetime, timedelta

from services.delivery import acceptance, bundles, channels, domain, matters
from services.delivery.channels.base import (
    HAND_OVER,
    Channel,
    Context,
    Deployment,
    Redirection,
    ResultState,
    Step,
    known_dispatch,
    progress,
)
from services.delivery.channels.post import RETRY
from services.delivery.channels.window import REMINDER, REPORT
from tongban import topics
from tongban.codec import SchemaRegistry
from tongban.events import now_utc
from tongban.handling import Emit, Event, Handler, Outcome, Rejected, Timer
from tongban.pii import PiiCipher, open_record
from tongban.scrub import scrub

LIFECYCLE_INPUTS = [topics.APPLICATION_RECEIVED, topics.APPLICATION_ROUTED, topics.APPLICATION_VERIFIED]
RECEIPTS = topics.POSTAL_RECEIPTS
DISPATCHES = topics.POSTAL_DISPATCHES
WALLET_RECEIPTS = topics.WALLET_RECEIPTS
# Requests delivery's API (services/delivery/api.py) hands to the handlers as commands.
RECORD_ARRIVAL = "delivery.RecordArrival"  # a window: the result arrived here
CONFIRM_PICKUP = "delivery.ConfirmPickUp"  # a window: the applicant picked it up here
REDIRECT = "delivery.Redirect"  # a corrected address or window pick-up after a return; an operator's resolution
COMMANDS = (RECORD_ARRIVAL, CONFIRM_PICKUP, REDIRECT)
CHANNEL_TIMERS = (RETRY, REMINDER, REPORT)
BUNDLE_TIMERS = (bundles.HOLD_TIMER,)
CORRECTION = "tongban.delivery.AddressCorrection"  # what a corrected address is sealed as, in the file


def inputs(partner_ids: list[str]) -> list[str]:
    # The decided topic is delivery's own: it reads back its bundles' events there.
    return LIFECYCLE_INPUTS + [topics.partner_decisions(p) for p in partner_ids] + [RECEIPTS, WALLET_RECEIPTS,
                                                                                     topics.APPLICATION_DECIDED]


def keys() -> dict[str, Callable[[Event], str]]:
    """A settled file's news goes to its bundle's aggregate (one handler call sees one key)."""
    return {topics.BUNDLE_MEMBER_DECIDED_EVENT: lambda event: bundles.key(event.payload["bundle_id"])}


def _sender(event: Event) -> str:
    """The partner that wrote the record: the id in its topic, tongban.partner.<id>.<stream>,
    which the broker's ACLs let that partner alone write (a replay through the retry topic
    keeps its origin topic, and only operators may write there). The envelope's
    `source_partner` is the client's own claim: one that disagrees is dead-lettered."""
    sender = event.topic.split(".")[2]
    claimed = event.envelope.get("source_partner")
    if claimed is not None and claimed != sender:
        raise Rejected(f"the envelope names partner {claimed}, but the record came on partner {sender}'s topic")
    return sender


class _Opener:
    """Opens the personal fields of the file's `received` part where intake sealed them (this
    application's ApplicationReceived), with delivery's own key."""

    def __init__(self, cipher: PiiCipher, registry: SchemaRegistry) -> None:
        self.cipher = cipher
        self.registry = registry

    def received(self, key: str, file: dict) -> dict:
        return open_record(self.registry, topics.APPLICATION_RECEIVED_EVENT, file["received"], self.cipher, key)

    def parties(self, key: str, file: dict) -> list[str]:
        """What names the application's parties, for scrubbing partner text."""
        sealed = file.get("received", {}).get("applicant", {})
        if not any(sealed.values()):
            return []
        return list(self._parties(key, tuple(sorted(sealed.items()))))

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one opener per process, for its lifetime)
    def _parties(self, key: str, sealed: tuple[tuple[str, str | None], ...]) -> tuple[str, ...]:
        # One event asks several times (the decision, its check and its dispatch), and every
        # ask decrypted the applicant again: the largest Python cost in delivery's profile.
        # The sealed values are the cache key, so a changed applicant is opened anew.
        applicant = open_record(self.registry, topics.APPLICATION_RECEIVED_EVENT, {"applicant": dict(sealed)},
                                self.cipher, key)["applicant"]
        return tuple(v for v in (applicant.get("name"), applicant.get("id_number"), applicant.get("phone")) if v)


def _finished(file: dict) -> dict:
    """The file once its work is done: the applicant's personal fields are no longer needed
    and are not archived. Only the sealed name stays while a 告知承诺 check is to come: the
    authority's findings are scrubbed of it before they travel."""
    received = file.get("received")
    if not received:
        return file
    finished = {**file, "received": {k: v for k, v in received.items() if k not in ("applicant", "postal_address")}}
    checking = acceptance.commitment_check_due(file) or file.get("commitment_check") == "REQUESTED"
    if checking and received.get("applicant", {}).get("name"):
        finished["received"]["applicant"] = {"name": received["applicant"]["name"]}
    if "result" in file:  # a corrected address given after a return
        finished["result"] = {k: v for k, v in file["result"].items() if k != "corrected_address"}
    return finished


def _ended(file: dict, emits: list[Emit] | None = None) -> Outcome:
    """The application ended without a result to deliver (refused, denied, failed its
    verification, unroutable): its file is finished, and no 容缺 material is waited for."""
    return Outcome(state=_finished(file), emits=emits or [], finished=True,
                   cancel_timers=[acceptance.DEFERRED_PROMISE])


def may_go_out(file: dict) -> bool:
    """An approved result goes out once nothing holds it: no 容缺 material is outstanding, and
    its bundle's other applications are settled (bundles.py)."""
    return acceptance.result_may_go_out(file) and not bundles.holds(file)


def make_handlers(cipher: PiiCipher, registry: SchemaRegistry | None = None,
                  supplement_period: timedelta = acceptance.SUPPLEMENT_PERIOD,
                  commitment_check_after: timedelta = acceptance.COMMITMENT_CHECK_AFTER,
                  results: Deployment | None = None, clock: Callable[[], datetime] = now_utc,
                  bundle_hold: timedelta = bundles.HOLD) -> dict[str, Handler]:
    """Handlers by event type, by timer name for the acceptance lifecycle's, the result
    channels' and the bundles' timers, and by command (COMMANDS). `results` is how the
    channels are deployed (without one: no dispatch secret, and the catalogue's postal
    matters); `bundle_hold` how long a bundle's results wait for its other applications."""
    opener = _Opener(cipher, registry or SchemaRegistry.load())
    deployment = results or Deployment(secret=b"", matters=matters.catalogue())

    def assign(key: str, file: dict) -> Outcome:
        if not domain.ready_to_assign(file):
            return Outcome(state=file)
        return Outcome(state=file, emits=[assign_leg(key, file, 1)])

    def assign_leg(key: str, file: dict, number: int) -> Emit:
        """Leg `number` goes to its party; `file` takes it as its current assignment."""
        received, routed = file["received"], file["routed"]
        leg = domain.leg(routed, number)
        file["assignment"] = domain.assignment_of(key, routed, number)
        assigned = {
            "assignment_id": file["assignment"]["assignment_id"],
            "application_id": key,
            "matter_code": routed["matter_code"],
            "mode": routed["mode"],
            "deciding_division": leg.division_code,
            # Opened here, sealed again by the runtime for this partner only.
            "applicant": opener.received(key, file)["applicant"],
            "materials": received["materials"],
            "promised_working_days": leg.working_days,
            "due_at": routed["due_at"],
            "step": leg.step, "leg": leg.number, "legs": leg.count,
        }
        return Emit(topics.partner_assignments(leg.partner_id), topics.MATTER_ASSIGNED_EVENT, key, assigned)

    def leg_body(key: str, file: dict) -> dict:
        assignment, leg = file["assignment"], domain.current_leg(file)
        return {"application_id": key, "assignment_id": assignment["assignment_id"], "partner_id": leg.partner_id,
                "step": leg.step, "leg": leg.number, "legs": leg.count}

    def leg_done(key: str, file: dict, reference: str | None, at: datetime) -> list[Emit]:
        """A joint leg before the last is done: routing's ledger closes its clock, and the next
        leg goes to its own party."""
        done = leg_body(key, file)
        file["legs_done"] = [*file.get("legs_done", []),
                             {k: done[k] for k in ("assignment_id", "partner_id", "step")}]
        completed = Emit(topics.APPLICATION_DECIDED, topics.LEG_COMPLETED_EVENT, key,
                         {**done, "result_reference": reference, "completed_at": at}, qualifier=str(done["leg"]))
        return [completed, assign_leg(key, file, done["leg"] + 1)]

    def leg_failed(key: str, file: dict, reason: str, at: datetime) -> Outcome:
        """A joint leg failed: the application ends denied with the reason, and the party of
        every leg already done is told to undo its part (nothing is left dangling)."""
        failed, done = leg_body(key, file), file.get("legs_done", [])
        why = f"leg {failed['leg']} of {failed['legs']} ({failed['step']}) failed: {reason}"
        emits = [Emit(topics.APPLICATION_DECIDED, topics.LEG_FAILED_EVENT, key,
                      {**failed, "reason": reason, "compensated": done, "failed_at": at})]
        emits += [cancel(key, leg, f"{why}; undo {leg['step']}", at, done=True) for leg in done]
        decided = {"application_id": key, "deciding_partner": failed["partner_id"], "outcome": "DENIED",
                   "result_reference": None, "reason": why, "decided_at": at}
        emits.append(Emit(topics.APPLICATION_DECIDED, topics.APPLICATION_DECIDED_EVENT, key, decided))
        return _ended({**file, "decision": "DENIED", "failed_leg": failed["leg"]}, emits)

    async def on_received(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        received = {k: p[k] for k in ("applicant", "materials", "delivery_method", "postal_address")}
        received |= {k: p.get(k) or "" for k in ("window_id", "receiving_division")}  # where a result may wait
        first = "received" not in (state or {})
        file = {**(state or {}), "received": received}
        # 容缺: the promised materials do not stop acceptance; the result waits for them.
        deferred = p.get("deferred_materials") or {}
        if deferred and first:
            file["deferred"] = dict(sorted(deferred.items()))
        if p.get("commitments") and first:  # 告知承诺: checked after an approval
            file["commitments"] = sorted(p["commitments"])
        outcome = assign(event.key, file)
        promise = acceptance.next_promise(file.get("deferred", {}), _occurred(event))
        if promise is not None and first:
            outcome.timers.append(promise_timer(promise))
        return outcome

    async def on_routed(event: Event, state: dict | None) -> Outcome:
        return assign(event.key, {**(state or {}), "routed": event.payload})

    async def on_verified(event: Event, state: dict | None) -> Outcome:
        return assign(event.key, {**(state or {}), "verified": True})

    def in_order(key: str, file: dict | None, rule: Callable[[], None]) -> None:
        """Apply one acceptance-lifecycle rule; a step out of order is dead-lettered. The
        reason may quote a partner's words, so it is scrubbed of the applicant."""
        try:
            rule()
        except acceptance.OutOfOrder as exc:
            raise Rejected(scrub(str(exc), opener.parties(key, file or {}))) from exc

    async def on_acceptance(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        assignment = _check(event, state)
        assert state is not None  # _check refuses a file without an assignment
        if assignment.get("leg", 1) > 1:
            return later_leg_answer(event, state)
        partner = assignment["partner_id"]
        missing = p.get("missing_materials") or {}
        in_order(event.key, state, lambda: acceptance.check_answer(state, p["outcome"], missing))
        # The partner's words travel unsealed and reach Track: nothing of the applicant.
        parties = opener.parties(event.key, state) if p["reason"] or p.get("remedy") or missing else []
        if p["outcome"] == "SUPPLEMENT_REQUIRED":
            request = acceptance.request_supplement({c: scrub(r, parties) for c, r in missing.items()},
                                                    p["accepted_at"], supplement_period)
            body = {"application_id": event.key, "deciding_partner": partner, "cause": acceptance.AUTHORITY_NOTICE,
                    "missing_materials": request["missing"], "requested_at": p["accepted_at"],
                    "supplement_by": request["supplement_by"]}
            notice = Emit(topics.APPLICATION_ACCEPTED, topics.SUPPLEMENT_REQUESTED_EVENT, event.key, body)
            return Outcome(state={**state, "supplement": request}, emits=[notice],
                           timers=[Timer(acceptance.SUPPLEMENT_DEADLINE, request["supplement_by"])])
        file = {**state, "acceptance": p["outcome"]}
        if p["outcome"] == "ACCEPTED":
            body = {"application_id": event.key, "deciding_partner": partner, "accepted_at": p["accepted_at"]}
            return Outcome(state=file, emits=[Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_ACCEPTED_EVENT,
                                                   event.key, body)])
        body = {"application_id": event.key, "deciding_partner": partner,
                "reason": scrub(p["reason"], parties) or "refused", "remedy": scrub(p.get("remedy") or "", parties)}
        return _ended(file, [Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_REFUSED_EVENT, event.key, body)])

    def later_leg_answer(event: Event, file: dict) -> Outcome:
        """A later leg's party takes up work the application's acceptance already covers: it
        confirms, or refuses its leg, which fails it. The 补正 notice is the accepting
        authority's, once (一次性告知), so a later leg cannot send one."""
        p = event.payload
        if p["outcome"] == "ACCEPTED":
            if file["assignment"].get("accepted"):
                raise Rejected("this leg's party already took it up")
            return Outcome(state={**file, "assignment": {**file["assignment"], "accepted": True}})
        if p["outcome"] == "REFUSED":
            reason = scrub(p["reason"] or "", opener.parties(event.key, file)) or "refused"
            return leg_failed(event.key, file, reason, p["accepted_at"])
        raise Rejected(f"acceptance outcome {p['outcome']!r} is not open to a later leg of a joint matter "
                       "(ACCEPTED or REFUSED; 补正 was the accepting authority's)")

    async def on_decision(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        assignment = _check(event, state)
        assert state is not None  # _check refuses a file without an assignment
        in_order(event.key, state, lambda: acceptance.check_decision(state, p["outcome"]))
        if domain.is_joint(state["routed"]):
            if p["outcome"] != "APPROVED":
                reason = scrub(p["reason"] or "", opener.parties(event.key, state)) or "denied"
                return leg_failed(event.key, dict(state), reason, p["decided_at"])
            if not domain.current_leg(state).last:
                file = dict(state)
                return Outcome(state=file, emits=leg_done(event.key, file, p["result_reference"], p["decided_at"]))
        file = {**state, "decision": p["outcome"], "result_reference": p["result_reference"]}
        if p["outcome"] == "APPROVED":
            check_result(event.key, file)
        parties = opener.parties(event.key, file) if p["reason"] or p["result_reference"] else []
        decided = {
            "application_id": event.key,
            "deciding_partner": assignment["partner_id"],
            "outcome": p["outcome"],
            "result_reference": p["result_reference"],
            "reason": scrub(p["reason"], parties) if p["reason"] is not None else None,
            "decided_at": p["decided_at"],
        }
        emits = [Emit(topics.APPLICATION_DECIDED, topics.APPLICATION_DECIDED_EVENT, event.key, decided)]
        if p["outcome"] == "APPROVED" and may_go_out(file):
            emits += dispatch(event.key, file)
        if p["outcome"] != "APPROVED":
            return _ended(file, emits)
        # An approved result is done when its channel delivers it (a result held for 容缺
        # materials waits for them first).
        check = [Timer(acceptance.COMMITMENT_CHECK, p["decided_at"] + commitment_check_after)] \
            if acceptance.commitment_check_due(file) else []
        return Outcome(state=file, emits=emits, timers=check)

    # ------------------------------------------------------------ result channels (channels/)
    def context(key: str, file: dict) -> Context:
        received, routed = file["received"], file.get("routed", {})
        reference = file.get("result_reference")
        parties = opener.parties(key, file) if reference else []
        matter, now = routed.get("matter_code", ""), clock()
        # The receiving window if it may hand the result over, else one in its county that may
        # (an online application, or a window that only receives).
        window_id = received.get("window_id", "")
        if not window_id or deployment.authorised(window_id, matter, HAND_OVER, now):
            window_id = deployment.window_for(received.get("receiving_division", ""), matter, now) or ""
        return Context(
            application_id=key, matter_code=matter, deciding_partner=file.get("assignment", {}).get("partner_id", ""),
            window_id=window_id, result_reference=reference, item=scrub(f"result {reference or ''}".strip(), parties),
            now=now,
            policy=deployment.policy, secret=deployment.secret, suite=cipher.suite.name,
            holder=lambda: opener.received(key, file)["applicant"],
            postal_address=lambda result: address_of(key, file, result),
            authorised=deployment.authorised, matter=deployment.matters(matter))

    def address_of(key: str, file: dict, result: ResultState) -> str | None:
        """The corrected address if the applicant gave one after a return, else the one received."""
        if "corrected_address" in result:
            return cipher.open(result["corrected_address"], record=CORRECTION, path="address", subject=key)
        address: str | None = opener.received(key, file)["postal_address"]
        return address

    def chosen(ctx: Context, file: dict) -> tuple[Channel, str | None]:
        """The applicant's channel if the matter allows it, else the fallback and why."""
        wanted = channels.channel(file["received"]["delivery_method"])
        refusal = wanted.refusal(ctx)
        return (channels.channel(channels.FALLBACK), refusal) if refusal else (wanted, None)

    def check_result(key: str, file: dict) -> None:
        """A decision whose result its channel cannot carry (an e-licence without a valid
        identifier) is refused before anything goes out."""
        ctx = context(key, file)
        chosen(ctx, file)[0].check_result(ctx)

    def dispatch(key: str, file: dict) -> list[Emit]:
        """The approved result goes out by its channel; `file` takes the channel's `result`."""
        ctx = context(key, file)
        channel, refusal = chosen(ctx, file)
        step = channel.start(ctx, None)
        file["result"], file["dispatch_id"] = step.result, step.result["dispatch_id"]
        if refusal is None:
            return step.emits
        wanted = file["received"]["delivery_method"]
        told = progress(ctx, step.result, f"{wanted}_REFUSED", f"{refusal}; the result goes by {channel.method}")
        return [told, *step.emits]

    def advance(key: str, file: dict, ctx: Context, step: Step) -> Outcome:
        """A channel's step as the outcome: the next channel started if it switches, the
        result delivered (and the file finished) if it arrived."""
        emits, timers, result = list(step.emits), list(step.timers), step.result
        if step.switch_to is not None:
            following = channels.channel(step.switch_to)
            refusal = following.refusal(ctx)
            if refusal:
                raise Rejected(refusal)
            started = following.start(ctx, result)
            emits, timers, result = [*emits, *started.emits], [*timers, *started.timers], started.result
        file = {**file, "result": result, "dispatch_id": result["dispatch_id"]}
        if step.delivered is None:
            return Outcome(state=file, emits=emits, timers=timers, cancel_timers=step.cancel_timers)
        delivered = step.delivered
        body = {"application_id": key, "method": result["method"], "dispatch_id": delivered.dispatch_id,
                "tracking_number": delivered.tracking_number, "delivered_at": delivered.at}
        emits.append(Emit(topics.APPLICATION_DELIVERED, topics.APPLICATION_DELIVERED_EVENT, key, body))
        return Outcome(state=_finished({**file, "delivered": True}), emits=emits, finished=True,
                       cancel_timers=list(CHANNEL_TIMERS))

    def on_the_way(key: str, state: dict | None) -> tuple[dict, ResultState]:
        if state is None or "result" not in state:
            raise Rejected("no result of this application is on its way")
        return state, state["result"]

    async def on_receipt(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        _sender(event)  # the carrier's own topic, and an envelope that agrees
        state = _posted_before_channels(state)
        if state is None or not known_dispatch(state.get("result", {}), p["dispatch_id"]):
            raise Rejected("receipt for a dispatch this service did not make")
        if state.get("delivered"):
            return Outcome()  # late news of a delivered result
        ctx = context(event.key, state)
        result = state["result"]
        return advance(event.key, state, ctx, channels.channel(result["method"]).on_carrier(ctx, result, p))

    async def on_wallet_receipt(event: Event, state: dict | None) -> Outcome:
        p = event.payload
        _sender(event)  # the wallet's own topic
        if state is None or not known_dispatch(state.get("result", {}), p["dispatch_id"]):
            raise Rejected("wallet receipt for a delivery this service did not make")
        if state.get("delivered"):
            return Outcome()
        ctx = context(event.key, state)
        # The wallet's words reach Track: nothing of the applicant.
        receipt = {**p, "reason": scrub(p["reason"], opener.parties(event.key, state)) if p["reason"] else None}
        result = state["result"]
        return advance(event.key, state, ctx, channels.channel(result["method"]).on_wallet(ctx, result, receipt))

    async def on_arrival(event: Event, state: dict | None) -> Outcome:
        file, result = on_the_way(event.key, state)
        if file.get("delivered") and result.get("window_id") == event.payload["window_id"]:
            # Recorded and picked up already: a window system that restarted between the two
            # acts and its own record of them does both again.
            return Outcome()
        ctx = context(event.key, file)
        return advance(event.key, file, ctx,
                       channels.channel(result["method"]).on_arrival(ctx, result, event.payload["window_id"]))

    async def on_pickup(event: Event, state: dict | None) -> Outcome:
        file, result = on_the_way(event.key, state)
        if file.get("delivered"):
            return Outcome()  # confirmed already
        ctx = context(event.key, file)
        return advance(event.key, file, ctx,
                       channels.channel(result["method"]).on_pickup(ctx, result, event.payload["window_id"]))

    async def on_redirect(event: Event, state: dict | None) -> Outcome:
        """A corrected address or window pick-up after a return (the applicant, through a
        window or the portal), or an operator resolving a result in manual handling."""
        file, result = on_the_way(event.key, state)
        p = event.payload
        address = p.get("address") or None
        # Kept sealed for delivery alone, like what intake sealed.
        sealed = cipher.seal(address, record=CORRECTION, path="address", subject=event.key,
                             recipients=["delivery"]) if address else None
        ctx = context(event.key, file)
        to = Redirection(p["method"], sealed, p.get("reason", ""))
        step = channels.channel(result["method"]).on_redirect(ctx, result, to, p["operator"])
        return advance(event.key, file, ctx, step)

    async def on_channel_timer(event: Event, state: dict | None) -> Outcome:
        if state is None or "result" not in state or state.get("delivered"):
            return Outcome()
        ctx = context(event.key, state)
        result = state["result"]
        fired = event.payload
        return advance(event.key, state, ctx,
                       channels.channel(result["method"]).on_timer(ctx, result, fired["name"], fired["payload"] or {}))

    # ------------------------------------------------------------ acceptance lifecycle
    def promise_timer(due_at: datetime) -> Timer:
        """Watches the next 容缺 promise; it carries its own time, so a late firing judges the
        promise it was set for."""
        return Timer(acceptance.DEFERRED_PROMISE, due_at, {"due_at": due_at.isoformat()})

    def cancel(key: str, assignment: dict, reason: str, at: datetime, done: bool = False) -> Emit:
        """The party stops work on its assignment, or (`done`) undoes a joint leg it has done;
        those are told apart by their assignment in the event id."""
        body = {"assignment_id": assignment["assignment_id"], "application_id": key, "reason": reason,
                "cancelled_at": at}
        return Emit(topics.partner_assignments(assignment["partner_id"]), topics.ASSIGNMENT_CANCELLED_EVENT, key, body,
                    qualifier=assignment["assignment_id"] if done else "")

    def close(key: str, file: dict, status: acceptance.Stage, reason: str, at: datetime) -> Outcome:
        """The application ends without a decision; assigned work is cancelled, and a joint
        matter's legs already done are undone."""
        emits = [cancel(key, leg, reason, at, done=True) for leg in file.get("legs_done", [])]
        emits += [cancel(key, file["assignment"], reason, at)] if "assignment" in file else []
        body = {"application_id": key, "status": status.value, "reason": reason, "closed_at": at}
        emits.append(Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_CLOSED_EVENT, key, body))
        return Outcome(state=_finished({**file, "closed": status.value}), emits=emits, finished=True,
                       cancel_timers=[acceptance.SUPPLEMENT_DEADLINE, acceptance.DEFERRED_PROMISE])

    async def on_withdrawn(event: Event, state: dict | None) -> Outcome:
        in_order(event.key, state, lambda: acceptance.check_withdrawal(state))
        # The applicant's own words stay with intake: the close says only what happened.
        return close(event.key, state or {}, acceptance.Stage.WITHDRAWN, "withdrawn by the applicant before the "
                     "decision", _occurred(event))

    async def on_supplement_deadline(event: Event, state: dict | None) -> Outcome:
        if acceptance.stage(state) is not acceptance.Stage.SUPPLEMENTING:
            return Outcome()  # supplemented or ended meanwhile
        assert state is not None
        by = state["supplement"]["supplement_by"]
        return close(event.key, state, acceptance.Stage.SUPPLEMENT_EXPIRED,
                     f"the materials asked for were not supplemented by {by.isoformat()}", by)

    async def on_supplement_submitted(event: Event, state: dict | None) -> Outcome:
        """补正 (the file goes back once every listed material is in) or a 容缺 material
        arriving (the result may go out once none is outstanding)."""
        file = dict(state or {})
        in_order(event.key, file, lambda: acceptance.check_supplement(file))
        codes = list(event.payload["materials"])
        current = acceptance.stage(file)
        back: list[str] = []
        timers: list[Timer] = []
        cancel: list[str] = []
        if current is acceptance.Stage.SUPPLEMENTING:
            file["supplement"] = acceptance.supplement(file["supplement"], codes)
            if file["supplement"]["returned"]:
                back, cancel = file["supplement"]["supplemented"], [acceptance.SUPPLEMENT_DEADLINE]
        deferred = file.get("deferred", {})
        arrived = sorted(set(codes) & set(deferred))
        if arrived:
            file["deferred"] = {c: d for c, d in deferred.items() if c not in arrived}
            back = sorted({*back, *arrived})
            promise = acceptance.next_promise(file["deferred"], _occurred(event))
            if promise is None:
                cancel.append(acceptance.DEFERRED_PROMISE)
            else:
                timers.append(promise_timer(promise))
        if current is acceptance.Stage.UNASSIGNED and not arrived:
            return Outcome()  # before hand-over a supplement answers intake's or verification's checks
        if current is not acceptance.Stage.SUPPLEMENTING and not arrived:
            raise Rejected(f"no supplement was asked for this application (it is {current.value})")
        emits = []
        if back and "assignment" in file:
            assignment = file["assignment"]
            body = {"application_id": event.key, "assignment_id": assignment["assignment_id"],
                    "deciding_partner": assignment["partner_id"], "materials": back,
                    "supplemented_at": event.payload["submitted_at"]}
            emits += [Emit(topics.APPLICATION_ACCEPTED, topics.MATERIALS_SUPPLEMENTED_EVENT, event.key, body),
                      Emit(topics.partner_assignments(assignment["partner_id"]), topics.MATERIALS_SUPPLEMENTED_EVENT,
                           event.key, body, qualifier="authority")]
        if file.get("decision") == "APPROVED" and "dispatch_id" not in file and may_go_out(file):
            # The result held for the 容缺 materials goes out now (its channel delivers it later).
            emits += dispatch(event.key, file)
        return Outcome(state=file, emits=emits, timers=timers, cancel_timers=cancel)

    async def on_deferred_promise(event: Event, state: dict | None) -> Outcome:
        """A 容缺 promise date passed: the applicant is asked for the material; the result keeps
        waiting, and the next promise is watched."""
        deferred = (state or {}).get("deferred", {})
        now = datetime.fromisoformat(event.payload["payload"]["due_at"])  # the promise that ran out
        late = acceptance.overdue(deferred, now)
        if not late or acceptance.stage(state) in acceptance.ENDED_UNDECIDED:
            return Outcome()
        assert state is not None
        body = {"application_id": event.key, "deciding_partner": state.get("routed", {}).get("deciding_partner", ""),
                "cause": acceptance.DEFERRED_PROMISE_MISSED,
                "missing_materials": {c: f"容缺: promised by {by}" for c, by in late.items()},
                "requested_at": now, "supplement_by": now + supplement_period}
        promise = acceptance.next_promise(deferred, now)
        return Outcome(emits=[Emit(topics.APPLICATION_ACCEPTED, topics.SUPPLEMENT_REQUESTED_EVENT, event.key, body)],
                       timers=[promise_timer(promise)] if promise else [])

    async def on_commitment_check(event: Event, state: dict | None) -> Outcome:
        """告知承诺: the check falls due; the approving authority is asked to make it."""
        if state is None or not acceptance.commitment_check_due(state):
            return Outcome()
        assignment = state["assignment"]
        body = {"assignment_id": assignment["assignment_id"], "application_id": event.key,
                "matter_code": state["routed"]["matter_code"], "commitments": state["commitments"],
                "requested_at": _occurred(event)}
        # A delivered file stays finished; one whose result is still on its way does not.
        return Outcome(state={**state, "commitment_check": "REQUESTED"}, finished=bool(state.get("delivered")),
                       emits=[Emit(topics.partner_assignments(assignment["partner_id"]),
                                   topics.COMMITMENT_CHECK_REQUESTED_EVENT, event.key, body)])

    async def on_commitment_result(event: Event, state: dict | None) -> Outcome:
        """The authority's finding: a promise that does not hold revokes the result (撤销)."""
        p = event.payload
        assignment = _check(event, state)
        assert state is not None  # _check refuses a file without an assignment
        in_order(event.key, state, lambda: acceptance.check_commitment_result(state))
        finished = bool(state.get("delivered"))

        def concluded(file: dict) -> dict:  # a delivered file now lets go of the name too
            return _finished(file) if finished else file

        if p["passed"]:
            return Outcome(state=concluded({**state, "commitment_check": "PASSED"}), finished=finished)
        parties = opener.parties(event.key, state)
        failed = {code: scrub(why, parties) for code, why in sorted(p["failed_commitments"].items())}
        body = {"application_id": event.key, "deciding_partner": assignment["partner_id"],
                "reason": scrub(p["reason"], parties) or "a promise made under 告知承诺 does not hold",
                "failed_commitments": failed, "revoked_at": p["checked_at"]}
        return Outcome(state=concluded({**state, "commitment_check": "FAILED", "revoked": True}), finished=finished,
                       emits=[Emit(topics.APPLICATION_DECIDED, topics.RESULT_REVOKED_EVENT, event.key, body)])

    async def on_clock_change(event: Event, state: dict | None) -> Outcome:
        """延期 or an excluded period, relayed for routing's SLA ledger."""
        p = event.payload
        assignment = _check(event, state)
        in_order(event.key, state, lambda: acceptance.check_clock_change(state or {}, p["kind"], p["working_days"]))
        body = {"application_id": event.key, "deciding_partner": assignment["partner_id"], "kind": p["kind"],
                "working_days": p["working_days"], "reason": scrub(p["reason"], opener.parties(event.key, state or {})),
                "changed_at": p["changed_at"]}
        return Outcome(emits=[Emit(topics.APPLICATION_ACCEPTED, topics.APPLICATION_CLOCK_CHANGED_EVENT, event.key,
                                   body)])

    # ------------------------------------------------------------ 一件事一次办 (bundles.py)
    def reporting(handler: Handler) -> Handler:
        """Whatever settles a file of a bundle tells its bundle, once: a decision, a denial, a
        refusal, a close, a failed verification, or the bundle becoming known to a file settled
        before. Every handler of a file goes through here, so no way of settling is missed."""

        async def handle(event: Event, state: dict | None) -> Outcome:
            outcome = await handler(event, state)
            file = outcome.state
            if file is None or not bundles.report_due(file):
                return outcome
            body = bundles.report(event.key, file, _occurred(event))
            told = Emit(topics.APPLICATION_DECIDED, topics.BUNDLE_MEMBER_DECIDED_EVENT, event.key, body)
            return dataclasses.replace(outcome, state={**file, "bundle": {**file["bundle"], "reported": True}},
                                       emits=[*outcome.emits, told])

        return handle

    async def on_bundle_released(event: Event, state: dict | None) -> Outcome:
        """The file learns its bundle, if routed together; a file settled before (withdrawn
        while the bundle waited) stays finished, and tells the bundle at once."""
        member = bundles.membership(event.payload)
        if member is None or "bundle" in (state or {}):
            return Outcome()
        file = {**(state or {}), "bundle": member}
        return Outcome(state=file, finished=bundles.ended(file))

    async def on_verification_failed(event: Event, state: dict | None) -> Outcome:
        """A file that failed verification goes no further: it is finished (the applicant's
        personal fields dropped) and its bundle must not wait for it. A 补正 asked for at
        verification is not an end (the file is verified once it is back)."""
        if event.payload.get("outcome", "FAILED") != "FAILED" or bundles.settlement(state or {}) is not None:
            return Outcome()
        return _ended({**(state or {}), "verification_failed": True})

    async def on_unroutable(event: Event, state: dict | None) -> Outcome:
        """An application that ends unroutable (refused at once, or rejected on review) goes no
        further: its file, kept since it was received, is finished without personal fields."""
        if state is None or bundles.settlement(state) is not None:
            return Outcome()
        return _ended({**state, "unroutable": True})

    async def on_results_released(event: Event, state: dict | None) -> Outcome:
        """The bundle lets the file's held result go out, by the file's own channel."""
        bundle = (state or {}).get("bundle")
        if state is None or bundle is None or bundle["released"]:
            return Outcome()
        file = {**state, "bundle": {**bundle, "released": True}}
        ready = file.get("decision") == "APPROVED" and "dispatch_id" not in file and may_go_out(file)
        return Outcome(state=file, emits=dispatch(event.key, file) if ready else [])

    def release(bundle: dict, at: datetime, timers: list[Timer] | None = None) -> Outcome:
        """The bundle's state after a change, its held results released if they may go now;
        the bundle is done once every application of it is settled."""
        out = bundles.to_release(bundle)
        bundle = bundles.released(bundle, out)
        emits = [Emit(topics.APPLICATION_DECIDED, topics.BUNDLE_RESULTS_RELEASED_EVENT, application_id,
                      bundles.release_body(bundle, application_id, at), qualifier=application_id,
                      correlation_id=application_id) for application_id in out]
        done = bundles.complete(bundle)
        return Outcome(state=bundle, emits=emits, timers=[] if done else timers or [],
                       cancel_timers=[bundles.HOLD_TIMER] if done else [], finished=done)

    async def on_member_decided(event: Event, state: dict | None) -> Outcome:
        """The bundle (key bundles.key) takes in one settled application; the hold starts with
        the first."""
        bundle = bundles.joined(state, event.payload)
        if bundle is state:
            return Outcome()  # told already
        at = _occurred(event)
        hold = [Timer(bundles.HOLD_TIMER, at + bundle_hold)] if state is None else []
        return release(bundle, at, hold)

    async def on_bundle_hold(event: Event, state: dict | None) -> Outcome:
        """The hold ran out: what is held goes out, and from now on each application as it is
        settled."""
        if state is None or bundles.complete(state):
            return Outcome()
        return release({**state, "expired": True}, _occurred(event))

    files: dict[str, Handler] = {
        topics.APPLICATION_WITHDRAWN_EVENT: on_withdrawn,
        topics.SUPPLEMENT_SUBMITTED_EVENT: on_supplement_submitted,
        topics.AUTHORITY_CLOCK_CHANGE_EVENT: on_clock_change,
        acceptance.SUPPLEMENT_DEADLINE: on_supplement_deadline,
        acceptance.DEFERRED_PROMISE: on_deferred_promise,
        acceptance.COMMITMENT_CHECK: on_commitment_check,
        topics.COMMITMENT_CHECK_RESULT_EVENT: on_commitment_result,
        topics.APPLICATION_RECEIVED_EVENT: on_received,
        topics.APPLICATION_ROUTED_EVENT: on_routed,
        topics.APPLICATION_VERIFIED_EVENT: on_verified,
        topics.AUTHORITY_ACCEPTANCE_EVENT: on_acceptance,
        topics.AUTHORITY_DECISION_EVENT: on_decision,
        topics.POSTAL_RECEIPT_EVENT: on_receipt,
        topics.WALLET_RECEIPT_EVENT: on_wallet_receipt,
        RECORD_ARRIVAL: on_arrival,
        CONFIRM_PICKUP: on_pickup,
        REDIRECT: on_redirect,
        **{name: on_channel_timer for name in CHANNEL_TIMERS},
        topics.BUNDLE_RELEASED_EVENT: on_bundle_released,
        topics.APPLICATION_VERIFICATION_FAILED_EVENT: on_verification_failed,
        topics.APPLICATION_UNROUTABLE_EVENT: on_unroutable,
        topics.BUNDLE_RESULTS_RELEASED_EVENT: on_results_released,
    }
    return {**{name: reporting(handler) for name, handler in files.items()},
            topics.BUNDLE_MEMBER_DECIDED_EVENT: on_member_decided, bundles.HOLD_TIMER: on_bundle_hold}


def _posted_before_channels(file: dict | None) -> dict | None:
    """A parcel posted before the result channels (a file with a dispatch id and no `result`)
    goes on as the first attempt of a POST result, so its receipts, returns included, count."""
    if file is None or "result" in file or "dispatch_id" not in file or file.get("delivered"):
        return file
    dispatch_id = file["dispatch_id"]
    return {**file, "result": {"method": "POST", "attempt": 1, "dispatch_id": dispatch_id, "dispatches": [dispatch_id],
                               "status": "DISPATCHED"}}


def _occurred(event: Event) -> datetime:
    """When the input happened: its envelope's time; a timer's is now."""
    occurred = event.envelope.get("occurred_at")
    return occurred if isinstance(occurred, datetime) else now_utc()


def _check(event: Event, state: dict | None) -> dict:
    try:
        return domain.check_sender(state, _sender(event), event.payload["assignment_id"])
    except domain.NotAssigned as exc:
        raise Rejected(str(exc)) from exc
