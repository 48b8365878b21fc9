"""Every authority that routing can choose has its partner topics declared, and the carrier
is not mistaken for an authority."""

from services.routing.domain import PartnerRegistry
from tongban.ops.topics import load_declared
from tongban.partners import authorities


def test_every_routable_partner_has_assignment_and_decision_topics():
    registry = PartnerRegistry.load()
    declared = {spec.declared_name for spec in load_declared("")}
    for partner_id in authorities():
        assert registry.get(partner_id) is not None, f"{partner_id} has topics but routing does not know it"
        assert f"tongban.partner.{partner_id}.assignments" in declared
    for agreement in ("430000", "420000", "360000", "440000", "450000", "520000", "500000", "370100"):
        assert agreement in authorities()
    assert "ems" not in authorities()
