"""ACLs generated from infra/topics.toml, planned and applied with confluent-kafka's AdminClient.

    python -m tongban.ops acls list  [--namespace NS] [--principal NAME]   # what the declaration grants
    python -m tongban.ops acls plan  [--namespace NS]                      # differences with the broker
    python -m tongban.ops acls apply [--namespace NS]                      # create and revoke

What is granted (every binding ALLOW, host *, on the namespaced name):
- TOPIC, LITERAL: WRITE to the topic's `writer`, READ to each of its `readers` (both imply
  DESCRIBE, which is all the metadata a client needs);
- a service: GROUP READ on `<ns>tongban-<service>`, TRANSACTIONAL_ID WRITE on the prefix
  `<ns>tongban-<service>-` (the runtime's ids are `<ns>tongban-<service>-<partition>`);
- a partner or feed: GROUP READ on `<ns>partner-<id>` and the prefix `<ns>partner-<id>-`,
  TRANSACTIONAL_ID WRITE on `<ns>partner-<id>` and the prefix `<ns>partner-<id>-`;
- the operator: GROUP READ on `<ns>tongban-operator` and the prefix `<ns>tongban-operator-`;
- no CLUSTER rights: idempotent producers need only WRITE on some topic (Kafka 3.0+).

What is managed (and so revoked when no longer declared): bindings whose principal follows
Tongban's naming (User:tongban-*, User:partner-*) on a resource of the namespace, i.e. a
name that is the namespace followed by `tongban.`, `tongban-` or `partner-`. With the empty
namespace, `t1a2b3-tongban...` belongs to another namespace and is left alone. Bindings of
other principals on those resources are reported as foreign, never changed. Namespaces must
therefore not themselves start with `tongban` or `partner-`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tongban.ops.kafka_admin import TIMEOUT_S, admin_client, ops_settings
from tongban.ops.principals import MANAGED, Principal, declared
from tongban.ops.topics import load_declared, load_document

ROOTS = ("tongban.", "tongban-", "partner-")
ANY = "any"


@dataclass(frozen=True, order=True)
class Acl:
    principal: str  # "User:partner-420000"
    resource_type: str  # "TOPIC", "GROUP", "TRANSACTIONAL_ID" or "CLUSTER"
    pattern: str  # "LITERAL" or "PREFIXED"
    name: str
    operation: str  # "READ", "WRITE", ...
    permission: str = "ALLOW"
    host: str = "*"

    def __str__(self) -> str:
        host = "" if self.host == "*" else f" from {self.host}"
        return (f"{self.permission} {self.principal} {self.operation} {self.resource_type} "
                f"{self.pattern.lower()} {self.name}{host}")


@dataclass
class AclPlan:
    create: list[Acl] = field(default_factory=list)
    revoke: list[Acl] = field(default_factory=list)
    foreign: list[Acl] = field(default_factory=list)  # on our resources, not ours to change
    unchanged: int = 0

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.revoke)


# ------------------------------------------------------------------------------ generation


def _namespace(namespace: str | None) -> str:
    namespace = os.environ.get("TONGBAN_NAMESPACE", "") if namespace is None else namespace
    if namespace.startswith(("tongban", "partner-")):
        raise ValueError(f"namespace {namespace!r} would be mistaken for a Tongban resource name")
    return namespace


def generate(namespace: str | None = None, path: str | Path | None = None) -> set[Acl]:
    """Every binding the declaration grants in this namespace."""
    ns = _namespace(namespace)
    doc = load_document(path)
    principals = declared(path)
    services = {p.ref: p for p in principals if p.kind == "service"}
    outsiders = {p.ref: p for p in principals if p.kind in ("partner", "feed")}
    operator = next(p for p in principals if p.kind == "operator")
    group_service = dict(doc.get("groups", {}))

    def resolve(token: str, topic: str) -> list[Principal]:
        if token in ("", ANY):
            return []
        if token == "operator":
            return [operator]
        if token in services:
            return [services[token]]
        if token in group_service:
            return [services[group_service[token]]]
        ref = token.removeprefix("partner-")
        if ref in outsiders:
            return [outsiders[ref]]
        raise ValueError(f"{topic}: {token!r} names no service, group, partner, feed or operator")

    acls: set[Acl] = set()
    specs = load_declared(ns, path)
    for spec in specs:
        for p in resolve(spec.writer, spec.name):
            acls.add(Acl(p.acl, "TOPIC", "LITERAL", spec.name, "WRITE"))
        for token in spec.readers:
            for p in resolve(token, spec.name):
                acls.add(Acl(p.acl, "TOPIC", "LITERAL", spec.name, "READ"))
    writers = {a.principal for a in acls if a.operation == "WRITE"} - {operator.acl}
    readers = {a.principal for a in acls if a.operation == "READ"}
    for spec in specs:
        if spec.writer == ANY:
            acls |= {Acl(p, "TOPIC", "LITERAL", spec.name, "WRITE") for p in writers}
        if ANY in spec.readers:
            acls |= {Acl(p, "TOPIC", "LITERAL", spec.name, "READ") for p in readers}

    for p in services.values():
        acls.add(Acl(p.acl, "GROUP", "LITERAL", f"{ns}tongban-{p.ref}", "READ"))
        acls.add(Acl(p.acl, "TRANSACTIONAL_ID", "PREFIXED", f"{ns}tongban-{p.ref}-", "WRITE"))
    for p in outsiders.values():
        for pattern, name in (("LITERAL", f"{ns}{p.name}"), ("PREFIXED", f"{ns}{p.name}-")):
            acls.add(Acl(p.acl, "GROUP", pattern, name, "READ"))
            acls.add(Acl(p.acl, "TRANSACTIONAL_ID", pattern, name, "WRITE"))
    acls.add(Acl(operator.acl, "GROUP", "LITERAL", f"{ns}{operator.name}", "READ"))
    acls.add(Acl(operator.acl, "GROUP", "PREFIXED", f"{ns}{operator.name}-", "READ"))
    return acls


def in_scope(acl: Acl, namespace: str) -> bool:
    """The binding's resource belongs to this namespace (cluster rights: to the empty one)."""
    if acl.resource_type == "CLUSTER":
        return namespace == ""
    return acl.name.startswith(namespace) and acl.name[len(namespace):].startswith(ROOTS)


def managed(acl: Acl) -> bool:
    return acl.principal.startswith("User:") and bool(MANAGED.match(acl.principal[5:]))


def compare(wanted: Iterable[Acl], actual: Iterable[Acl], namespace: str) -> AclPlan:
    wanted = set(wanted)
    ours = {a for a in actual if in_scope(a, namespace)}
    plan = AclPlan()
    plan.create = sorted(wanted - ours)
    plan.revoke = sorted(a for a in ours - wanted if managed(a))
    plan.foreign = sorted(a for a in ours - wanted if not managed(a))
    plan.unchanged = len(wanted & ours)
    return plan


# ------------------------------------------------------------------------------ the broker


def _from_binding(b) -> Acl:
    restype = "CLUSTER" if b.restype.name == "BROKER" else b.restype.name
    return Acl(b.principal, restype, b.resource_pattern_type.name, b.name, b.operation.name,
               b.permission_type.name, b.host)


def _to_binding(acl: Acl, filter: bool = False):
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    cls = AclBindingFilter if filter else AclBinding
    restype = ResourceType.BROKER if acl.resource_type == "CLUSTER" else ResourceType[acl.resource_type]
    return cls(restype, acl.name, ResourcePatternType[acl.pattern], acl.principal, acl.host,
               AclOperation[acl.operation], AclPermissionType[acl.permission])


def describe(admin) -> set[Acl]:
    """Every binding on the broker."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    # None matches any name, principal and host (AclBindingFilter's docstring); its annotations say str.
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,  # type: ignore[arg-type]
                                  AclOperation.ANY, AclPermissionType.ANY)
    return {_from_binding(b) for b in admin.describe_acls(everything, request_timeout=TIMEOUT_S).result()}


def plan(namespace: str | None = None, path: str | Path | None = None, admin=None) -> AclPlan:
    ns = _namespace(namespace)
    return compare(generate(ns, path), describe(admin or admin_client(ops_settings())), ns)


def _execute(admin, plan: AclPlan) -> None:
    errors = []
    if plan.create:
        for acl, future in zip(plan.create, admin.create_acls([_to_binding(a) for a in plan.create],
                                                              request_timeout=TIMEOUT_S).values(), strict=True):
            try:
                future.result()
            except Exception as exc:
                errors.append(f"create {acl}: {exc}")
    if plan.revoke:
        futures = admin.delete_acls([_to_binding(a, filter=True) for a in plan.revoke], request_timeout=TIMEOUT_S)
        for acl, future in zip(plan.revoke, futures.values(), strict=True):
            try:
                future.result()
            except Exception as exc:
                errors.append(f"revoke {acl}: {exc}")
    if errors:
        raise RuntimeError("ACL changes failed: " + "; ".join(errors))


def _settle(admin, done, timeout: float = 10.0) -> None:
    """Wait until the broker's authorizer shows the changes (KRaft applies them a moment after
    the controller accepted them), so what follows, a plan or a client, sees them."""
    deadline = time.monotonic() + timeout
    while not done(describe(admin)) and time.monotonic() < deadline:
        time.sleep(0.1)


def apply(namespace: str | None = None, path: str | Path | None = None, admin=None) -> AclPlan:
    """Create what the declaration grants and revoke what it no longer does; returns the plan
    that was carried out, once the broker shows it (a second apply finds nothing to do)."""
    admin = admin or admin_client(ops_settings())
    todo = plan(namespace, path, admin)
    _execute(admin, todo)
    if todo.changes:
        _settle(admin, lambda now: set(todo.create) <= now and not set(todo.revoke) & now)
    return todo


def drop(namespace: str, admin=None) -> AclPlan:
    """Revoke every managed binding of a (test) namespace, as when its topics are deleted."""
    if not namespace:
        raise ValueError("drop needs a namespace: the default one is changed with apply only")
    admin = admin or admin_client(ops_settings())
    todo = compare(set(), describe(admin), _namespace(namespace))
    _execute(admin, todo)
    if todo.changes:
        _settle(admin, lambda now: not set(todo.revoke) & now)
    return todo


def for_principal(acls: Iterable[Acl], name: str) -> list[Acl]:
    return sorted(a for a in acls if a.principal == f"User:{name}")
