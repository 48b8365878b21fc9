"""Routing's catalogue query API over real gRPC with mutual TLS, in-process: the real
servicer over the shipped catalogue and partner registry on a loopback port, certificates
from a CA made for this module."""

import grpc
import pytest

from services.routing import routing_pb2, routing_pb2_grpc
from services.routing.api import CatalogueServicer
from services.routing.catalogue import Catalogue
from services.routing.domain import PartnerRegistry
from tongban.grpc_tls import client_channel, server_credentials


@pytest.fixture
async def routing(tls):
    server = grpc.aio.server()
    routing_pb2_grpc.add_CatalogueServicer_to_server(CatalogueServicer(Catalogue.load(), PartnerRegistry.load()),
                                                     server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls, "routing"))
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def call(target, tls, method: str, message, caller: str = "hunan-portal"):
    async with client_channel(target, caller, tls) as channel:
        return await getattr(routing_pb2_grpc.CatalogueStub(channel), method)(message, timeout=5)


async def refused(target, tls, method: str, message, caller: str = "hunan-portal") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(target, tls, method, message, caller)
    return caught.value


async def test_a_portal_finds_matters_by_keyword_with_guide_and_legal_basis(routing, tls):
    reply = await call(routing, tls, "FindMatters", routing_pb2.FindMattersRequest(keyword="公积金"))
    assert {m.code for m in reply.matters} == {f"KSTB-HPF-0{n}" for n in range(1, 7)}
    assert reply.catalogue_edition == Catalogue.load().edition
    for matter in reply.matters:
        assert all((matter.guide, matter.legal_basis, matter.source))
        assert matter.department.startswith("住房和城乡建设")


async def test_filters_combine(routing, tls):
    request = routing_pb2.FindMattersRequest(mode="JOINT", subject="PERSON", department="人力资源")
    reply = await call(routing, tls, "FindMatters", request, caller="changsha-window")
    assert [m.code for m in reply.matters] == ["KSTB-SOC-01", "KSTB-SOC-05"]
    pension = reply.matters[0]
    assert pension.place == "INSURED_AFTER"
    assert ("CONTRIBUTION_CERTIFICATE", False, "DATA_CHECK") in {
        (m.code, m.essential, m.shared_evidence) for m in pension.materials}


async def test_by_division_each_matter_names_who_decides_there(routing, tls):
    reply = await call(routing, tls, "FindMatters", routing_pb2.FindMattersRequest(division="440103", keyword="婚姻"))
    assert reply.division_name == "荔湾区"
    assert [(m.code, m.deciding_partner) for m in reply.matters] == [("KSTB-CIV-01", "440000"),
                                                                     ("KSTB-CIV-02", "440000")]
    # a known division no agreement covers offers nothing
    none = await call(routing, tls, "FindMatters", routing_pb2.FindMattersRequest(division="110101"))
    assert list(none.matters) == []
    assert none.division_name == "东城区"


async def test_get_matter_answers_one_entry_or_not_found(routing, tls):
    matter = await call(routing, tls, "GetMatter", routing_pb2.GetMatterRequest(code="KSTB-NRA-01"))
    assert (matter.name, matter.place, matter.result_type) == ("不动产抵押登记", "PROPERTY", "E_LICENCE")
    error = await refused(routing, tls, "GetMatter", routing_pb2.GetMatterRequest(code="KSTB-XXX-99"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(("request_fields", "problem"), [
    ({"mode": "BY_PIGEON"}, "mode must be one of"),
    ({"subject": "ROBOT"}, "subject must be one of"),
    ({"division": "439999"}, "division is not a known GB/T 2260 code"),
])
async def test_a_filter_that_cannot_match_is_invalid_and_named(routing, tls, request_fields, problem):
    error = await refused(routing, tls, "FindMatters", routing_pb2.FindMattersRequest(**request_fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in error.details()
    assert "439999" not in error.details()


async def test_a_monitor_may_not_query(routing, tls):
    error = await refused(routing, tls, "FindMatters", routing_pb2.FindMattersRequest(), caller="tongban-monitor")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bundles_are_listed_with_their_matters(routing, tls):
    reply = await call(routing, tls, "ListBundles", routing_pb2.ListBundlesRequest(keyword="公积金"))
    assert [(b.code, [m.code for m in b.matters]) for b in reply.bundles] == [
        ("BUNDLE-ENTERPRISE-OPENING", ["KSTB-MKT-01", "KSTB-HPF-06"]),
        ("BUNDLE-RETIREMENT", ["KSTB-HPF-02", "KSTB-SOC-04"])]
    everything = await call(routing, tls, "ListBundles", routing_pb2.ListBundlesRequest())
    assert len(everything.bundles) == len(Catalogue.load().bundles())
