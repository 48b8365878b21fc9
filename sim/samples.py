"""Sample applications for the demo and the end-to-end tests, each with the terminal state
it must reach. Identity numbers are synthetic: valid check digits, no real person."""

from __future__ import annotations

from dataclasses import dataclass

from stdnum.cn import ric, uscc

from services.intake import intake_pb2

DENIED_MATTER = "KSTB-MKT-03"  # the simulated authorities deny 工业产品生产许可证发证 in the demo
SUPPLEMENT_MATTER = "KSTB-MKT-01"  # and ask for a 补正 on 公司设立登记 first (the demo's applicant supplements)
JOINT_MATTER = "KSTB-SOC-01"  # 企业职工基本养老保险关系转移接续 (多地联办): three legs, each answered in turn


def resident_id(region: str, birth: str, sequence: str) -> str:
    body = f"{region}{birth}{sequence}"
    return body + ric.calc_check_digit(body + "0")


def with_wrong_check_digit(id_number: str) -> str:
    return id_number[:-1] + ("1" if id_number[-1] == "0" else "0")


def credit_code(body17: str) -> str:
    return body17 + uscc.calc_check_digit(body17)


@dataclass(frozen=True)
class Sample:
    title: str
    expected: str  # the terminal stage, or REJECTED_AT_INTAKE when Submit itself refuses it
    request: intake_pb2.SubmitRequest


def _material(code: str, name: str, provided: bool = True) -> intake_pb2.Material:
    return intake_pb2.Material(code=code, name=name, provided=provided, original_checked=provided)


def _person(name: str, id_number: str) -> intake_pb2.Applicant:
    return intake_pb2.Applicant(kind="PERSON", name=name, id_number=id_number, phone="13800000000")


def _request(ref: str, matter: str, channel: str, received_in: str, home: str, applicant: intake_pb2.Applicant,
             materials: list[intake_pb2.Material], delivery: str = "ELECTRONIC", address: str = ""
             ) -> intake_pb2.SubmitRequest:
    return intake_pb2.SubmitRequest(
        client_reference=ref, source_system="hunan-portal", matter_code=matter, channel=channel,
        receiving_division=received_in, home_division=home, applicant=applicant, materials=materials,
        delivery_method=delivery, postal_address=address,
        # The registered window of the receiving county (tongban/windows.toml), whose authorisation intake checks.
        window_id=f"HN-{received_in}-KSTB-01" if channel == "WINDOW" else "")


def samples(run: str) -> list[Sample]:
    """One batch; `run` keeps client references unique per batch."""
    company = intake_pb2.Applicant(kind="COMPANY", name="长沙示例科技有限公司",
                                   id_number=credit_code("91430100MA4L00000"), phone="0731-80000000")
    return [
        Sample("跨省异地就医备案, online, decided in Hubei, electronic result", "DELIVERED", _request(
            f"{run}-1", "KSTB-MED-01", "PORTAL", "430102", "420106",
            _person("示例甲", resident_id("420106", "19850612", "341")),
            [_material("RESIDENT_ID", "居民身份证"), _material("RESIDENCE_PROOF", "异地居住证明")])),
        Sample("公司设立登记 at a Changsha window for Guangdong, licence by post", "DELIVERED", _request(
            f"{run}-2", "KSTB-MKT-01", "WINDOW", "430103", "440300", company,
            [_material("APPLICATION_FORM", "申请书"), _material("IDENTITY_PROOF", "身份证明"),
             _material("PREMISES_PROOF", "住所使用相关文件"), _material("ARTICLES", "公司章程")],
            "POST", "湖南省长沙市天心区示例路1号")),
        Sample("社会保障卡申领 received here, handled in Jiangxi, window pick-up", "DELIVERED", _request(
            f"{run}-3", "KSTB-SOC-02", "WINDOW", "430104", "360102",
            _person("示例乙", resident_id("360102", "19900307", "123")),
            [_material("RESIDENT_ID", "居民身份证"), _material("PHOTO", "近期免冠证件照")], "WINDOW")),
        Sample("户口迁移 at a 湘西 window for 济南 (point-to-point agreement)", "DELIVERED", _request(
            f"{run}-8", "KSTB-PSB-01", "WINDOW", "433101", "370102",
            _person("示例己", resident_id("370102", "19870203", "555")),
            [_material("RESIDENT_ID", "居民身份证"), _material("HOUSEHOLD_REGISTER", "户口簿"),
             _material("SETTLEMENT_PROOF", "准予迁入证明")], "WINDOW")),
        # Without named insured places the matter's own place, the new one (Guangzhou), is the
        # home division and the old one (Wuhan, where 示例甲 applies online) the receiving one.
        Sample("企业职工养老保险 moved from Hubei to Guangdong, online, three legs in turn", "DELIVERED", _request(
            f"{run}-9", JOINT_MATTER, "PORTAL", "420106", "440103",
            _person("示例甲", resident_id("420106", "19850612", "341")),
            [_material("RESIDENT_ID", "居民身份证"), _material("TRANSFER_APPLICATION", "养老保险关系转移接续申请表")])),
        Sample("工业产品生产许可证发证 denied by the Guangdong authority", "DENIED", _request(
            f"{run}-4", DENIED_MATTER, "PORTAL", "430105", "440100", company,
            [_material("APPLICATION_FORM", "申请书"), _material("COMMITMENT_LETTER", "告知承诺书"),
             _material("INSPECTION_REPORT", "产品检验合格报告")])),
        Sample("失业登记 with a resident ID whose check digit is wrong", "REJECTED_AT_INTAKE", _request(
            f"{run}-5", "KSTB-SOC-03", "MOBILE", "430102", "420106",
            _person("示例丙", with_wrong_check_digit(resident_id("420106", "19920101", "222"))),
            [_material("RESIDENT_ID", "居民身份证")])),
        Sample("a matter that is not in the 跨省通办 catalogue", "REJECTED", _request(
            f"{run}-6", "KSTB-XXX-99", "PORTAL", "430102", "420106",
            _person("示例丁", resident_id("420106", "19880808", "456")), [_material("FORM", "申请表")])),
        Sample("学历公证 by post without an address", "REJECTED_AT_INTAKE", _request(
            f"{run}-7", "KSTB-JUS-01", "PORTAL", "430102", "420106",
            _person("示例戊", resident_id("420106", "19950505", "789")), [_material("DIPLOMA", "毕业证书")], "POST")),
    ]
