"""The catalogue of 跨省通办 matters: what each matter is, needs and promises, and where it
is handled. Pure data and its checks; the data file (`catalogue.toml`) sits next to this
module and is validated at load: every error names the file, the entry and the field.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FULLY_ONLINE = "FULLY_ONLINE"
RECEIVE_HERE_HANDLE_THERE = "RECEIVE_HERE_HANDLE_THERE"
JOINT = "JOINT"
MODES = (FULLY_ONLINE, RECEIVE_HERE_HANDLE_THERE, JOINT)
SUBJECTS = ("PERSON", "COMPANY")
# 办理层级: the level of the authority that decides.
LEVELS = ("NATIONAL", "PROVINCE", "CITY", "COUNTY", "TOWNSHIP")
RESULT_TYPES = ("PAPER_LICENCE", "E_LICENCE", "REGISTRATION")
# Places of handling: which of the applicant's divisions decides. The kinds are the keys of
# ApplicationReceived v2 `places`; ANYWHERE (全国通办) is decided where the file is received.
HOUSEHOLD = "HOUSEHOLD"  # 户籍地
RESIDENCE = "RESIDENCE"  # 经常居住地
INSURED_BEFORE = "INSURED_BEFORE"  # 转出地 (insured place before a transfer)
INSURED_AFTER = "INSURED_AFTER"  # 转入地 (insured place after it)
ENTERPRISE = "ENTERPRISE"  # 登记地 of the enterprise
PROPERTY = "PROPERTY"  # 不动产所在地
ANYWHERE = "ANYWHERE"
PLACE_KINDS = (HOUSEHOLD, RESIDENCE, INSURED_BEFORE, INSURED_AFTER, ENTERPRISE, PROPERTY)
PLACES = (*PLACE_KINDS, ANYWHERE)
# How a material can be had without the applicant bringing it (共享获取): an electronic
# licence (电子证照) or a record checked against another authority's data (数据核验).
EVIDENCE_TYPES = ("E_LICENCE", "DATA_CHECK")

_HERE = Path(__file__).parent
DEFAULT_PATH = _HERE / "catalogue.toml"


@dataclass(frozen=True)
class MaterialRequirement:
    code: str
    name: str
    essential: bool  # false: 容缺受理 may accept the file without it, the result waiting for it
    commitment: bool = False  # a signed 告知承诺 may replace it, checked later
    shared_evidence: str = ""  # one of EVIDENCE_TYPES when data sharing can supply it


@dataclass(frozen=True)
class LegTemplate:
    step: str
    working_days: int
    place: str = ""  # the place whose authority runs the leg; empty: the matter's place


class InvalidMatter(ValueError):
    """A catalogue entry breaks a rule: each problem names its field."""

    def __init__(self, entry: str, problems: list[tuple[str, str]], where: str = "") -> None:
        self.entry = entry
        self.problems = problems
        super().__init__(f"{where}matter {entry}: " + "; ".join(f"{f}: {p}" for f, p in problems))


@dataclass(frozen=True)
class Matter:
    code: str
    name: str
    subject: str
    modes: tuple[str, ...]
    promised_working_days: int
    statutory_working_days: int
    postal_delivery: bool
    required_materials: tuple[MaterialRequirement, ...]
    legs: tuple[LegTemplate, ...]
    place: str = HOUSEHOLD
    source: str = ""
    invented: bool = True  # the code is Tongban's, not the national 基本编码
    department: str = ""
    level: str = "COUNTY"
    legal_basis: tuple[str, ...] = ()
    acceptance_conditions: tuple[str, ...] = ()
    fee: str = "不收费"
    result_type: str = "REGISTRATION"
    guide: str = ""
    keywords: tuple[str, ...] = ()
    note: str = ""  # what the entry is unsure of, said rather than invented

    def __post_init__(self) -> None:
        problems = [*self._field_problems(), *self._leg_problems()]
        if problems:
            raise InvalidMatter(self.code, problems)

    def _field_problems(self) -> Iterable[tuple[str, str]]:
        if self.subject not in SUBJECTS:
            yield "subject", f"subject must be one of {SUBJECTS}"
        if not self.modes or any(m not in MODES for m in self.modes):
            yield "modes", f"modes must be a non-empty subset of {MODES}"
        if not 0 <= self.promised_working_days <= self.statutory_working_days:
            yield "promised_working_days", "need 0 <= promised_working_days <= statutory_working_days"
        if self.place not in PLACES:
            yield "place", f"place must be one of {PLACES}"
        if self.level not in LEVELS:
            yield "level", f"level must be one of {LEVELS}"
        if self.result_type not in RESULT_TYPES:
            yield "result_type", f"result_type must be one of {RESULT_TYPES}"
        codes = [m.code for m in self.required_materials]
        if len(codes) != len(set(codes)):
            yield "required_materials", "material codes repeat"
        for m in self.required_materials:
            if m.shared_evidence and m.shared_evidence not in EVIDENCE_TYPES:
                yield "required_materials", f"{m.code}: shared_evidence must be one of {EVIDENCE_TYPES}"

    def _leg_problems(self) -> Iterable[tuple[str, str]]:
        if self.is_joint:
            # joint handling does not depend on the channel, so no other mode applies
            if self.modes != (JOINT,):
                yield "modes", "a JOINT matter lists JOINT alone"
            # legs run one after another, so together they make the promise
            if sum(leg.working_days for leg in self.legs) != self.promised_working_days:
                yield "legs", "legs must add up to promised_working_days"
            if self.place == ANYWHERE:
                yield "place", "a JOINT matter is decided at a named place, not ANYWHERE"
            for leg in self.legs:
                if leg.place and leg.place not in PLACE_KINDS:
                    yield "legs", f"{leg.step}: place must be one of {PLACE_KINDS}"
        elif self.legs:
            yield "legs", "only JOINT matters have legs"

    @property
    def is_joint(self) -> bool:
        return JOINT in self.modes

    @property
    def version(self) -> str:
        """A digest of the entry: it changes whenever anything a consumer sees changes."""
        canonical = json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def leg_place(self, leg: LegTemplate) -> str:
        return leg.place or self.place


@dataclass(frozen=True)
class Bundle:
    """一件事一次办: matters applied for together and routed together."""

    code: str
    name: str
    matters: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    """What a portal searches by; empty fields do not filter."""

    keyword: str = ""
    mode: str = ""
    department: str = ""
    subject: str = ""


class Catalogue:
    def __init__(self, matters: Iterable[Matter], bundles: Iterable[Bundle] = (), edition: str = "") -> None:
        self.edition = edition
        self._matters: dict[str, Matter] = {}
        for matter in matters:
            if matter.code in self._matters:
                raise ValueError(f"matter code {matter.code} appears twice")
            self._matters[matter.code] = matter
        self._bundles: dict[str, Bundle] = {}
        for bundle in bundles:
            unknown = [code for code in bundle.matters if code not in self._matters]
            if unknown or len(bundle.matters) < 2:
                raise ValueError(f"bundle {bundle.code}: matters must be two or more catalogue codes"
                                 + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
            self._bundles[bundle.code] = bundle

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        path = path or DEFAULT_PATH
        with open(path, "rb") as f:
            data = tomllib.load(f)
        where = f"{path}: "
        matters = [_matter_from_toml(raw, i, where) for i, raw in enumerate(data.get("matter", []))]
        bundles = [_bundle_from_toml(raw, i, where) for i, raw in enumerate(data.get("bundle", []))]
        try:
            return cls(matters, bundles, str(data.get("catalogue", {}).get("edition", "")))
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None

    def get(self, code: str) -> Matter | None:
        return self._matters.get(code)

    def all(self) -> list[Matter]:
        return list(self._matters.values())

    def bundle(self, code: str) -> Bundle | None:
        return self._bundles.get(code)

    def bundles(self) -> list[Bundle]:
        return list(self._bundles.values())

    def search(self, query: Query) -> list[Matter]:
        """了解政策、查找事项: matters whose name, department, keywords or guide hold the
        keyword, offered in the mode, by the department, for the subject."""
        return [m for m in self._matters.values() if _matches(m, query)]


def _matches(matter: Matter, query: Query) -> bool:
    text = " ".join((matter.name, matter.department, matter.guide, *matter.keywords))
    return ((not query.keyword or query.keyword in text)
            and (not query.mode or query.mode in matter.modes)
            and (not query.department or query.department in matter.department)
            and (not query.subject or query.subject == matter.subject))


# ---------------------------------------------------------------- the data file

class _Entry:
    """One TOML table read field by field; problems are collected, not raised one by one."""

    def __init__(self, raw: Any, entry: str) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.entry = entry
        self.problems: list[tuple[str, str]] = [] if isinstance(raw, Mapping) else [("(entry)", "must be a table")]

    def get(self, name: str, kind: type, default: Any = None, required: bool = True) -> Any:
        if name not in self.raw:
            if required:
                self.problems.append((name, "missing"))
            return default
        value = self.raw[name]
        # bool is an int in Python; a limit written `true` is still wrong
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problems.append((name, f"must be {kind.__name__}, got {type(value).__name__}"))
            return default
        return value

    def strings(self, name: str, required: bool = True, non_empty: bool = False) -> tuple[str, ...]:
        values = self.get(name, list, [], required)
        if not all(isinstance(v, str) and v for v in values):
            self.problems.append((name, "must be a list of non-empty strings"))
            return ()
        if non_empty and name in self.raw and not values:
            self.problems.append((name, "must not be empty"))
        return tuple(values)

    def tables(self, name: str, required: bool = True) -> list[_Entry]:
        values = self.get(name, list, [], required)
        entries = [_Entry(v, f"{name}[{i}]") for i, v in enumerate(values)]
        return entries

    def absorb(self, inner: _Entry) -> None:
        self.problems += [(f"{inner.entry}.{f}", p) for f, p in inner.problems]

    def fail_if_any(self, where: str) -> None:
        if self.problems:
            raise InvalidMatter(self.entry, self.problems, where)


def _material(entry: _Entry) -> MaterialRequirement:
    return MaterialRequirement(entry.get("code", str, ""), entry.get("name", str, ""),
                               entry.get("essential", bool, True),
                               entry.get("commitment", bool, False, required=False),
                               entry.get("shared_evidence", str, "", required=False))


def _leg(entry: _Entry) -> LegTemplate:
    return LegTemplate(entry.get("step", str, ""), entry.get("working_days", int, 0),
                       entry.get("place", str, "", required=False))


def _matter_from_toml(raw: Any, index: int, where: str) -> Matter:
    code = raw.get("code") if isinstance(raw, Mapping) else None
    entry = _Entry(raw, code if isinstance(code, str) and code else f"#{index + 1}")
    materials = []
    for inner in entry.tables("required_materials"):
        materials.append(_material(inner))
        entry.absorb(inner)
    legs = []
    for inner in entry.tables("legs", required=False):
        legs.append(_leg(inner))
        entry.absorb(inner)
    values = dict(
        code=entry.get("code", str, ""), name=entry.get("name", str, ""),
        subject=entry.get("subject", str, ""), modes=entry.strings("modes"),
        promised_working_days=entry.get("promised_working_days", int, 0),
        statutory_working_days=entry.get("statutory_working_days", int, 0),
        postal_delivery=entry.get("postal_delivery", bool, False),
        required_materials=tuple(materials), legs=tuple(legs),
        place=entry.get("place", str, HOUSEHOLD), source=entry.get("source", str, ""),
        invented=entry.get("invented", bool, True), department=entry.get("department", str, ""),
        level=entry.get("level", str, "COUNTY"), legal_basis=entry.strings("legal_basis", non_empty=True),
        acceptance_conditions=entry.strings("acceptance_conditions"), fee=entry.get("fee", str, ""),
        result_type=entry.get("result_type", str, "REGISTRATION"), guide=entry.get("guide", str, ""),
        keywords=entry.strings("keywords", required=False), note=entry.get("note", str, "", required=False),
    )
    for name in ("name", "source", "department", "fee", "guide"):
        if name in entry.raw and values[name] == "":
            entry.problems.append((name, "must not be empty"))
    known = {*values, "code"}
    entry.problems += [(name, "unknown field") for name in entry.raw if name not in known]
    entry.fail_if_any(where)
    try:
        return Matter(**values)
    except InvalidMatter as exc:
        raise InvalidMatter(entry.entry, exc.problems, where) from None


def _bundle_from_toml(raw: Any, index: int, where: str) -> Bundle:
    code = raw.get("code") if isinstance(raw, Mapping) else None
    entry = _Entry(raw, code if isinstance(code, str) and code else f"#{index + 1}")
    bundle = Bundle(entry.get("code", str, ""), entry.get("name", str, ""), entry.strings("matters"))
    if entry.problems:
        raise ValueError(f"{where}bundle {entry.entry}: " + "; ".join(f"{f}: {p}" for f, p in entry.problems))
    return bundle
