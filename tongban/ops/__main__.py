"""python -m tongban.ops: the declared Kafka platform (infra/topics.toml), planned and applied.

    python -m tongban.ops plan|apply [--namespace NS]   # topics, principals, ACLs, quotas (make topics)
    python -m tongban.ops topics plan|apply|list [--namespace NS]
    python -m tongban.ops principals list|init|plan|apply|scram-args
    python -m tongban.ops principals rotate NAME
    python -m tongban.ops acls list|plan|apply [--namespace NS] [--principal NAME]
    python -m tongban.ops acls drop --namespace NS
    python -m tongban.ops quotas plan|apply
    python -m tongban.ops retention plan|purge [--service S] [--dry-run]   # the archives (infra/retention.toml)

Every command talks to TONGBAN_KAFKA_BOOTSTRAP (or --bootstrap) as the broker's `admin`
(from the secrets file) unless TONGBAN_KAFKA_USERNAME/_PASSWORD say otherwise. Principals
and quotas are cluster-wide; topics and ACLs belong to a namespace (TONGBAN_NAMESPACE or
--namespace). `apply` run twice changes nothing the second time. `retention` talks to the
store (TONGBAN_MONGO_URI), not the broker (tongban.ops.retention).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from tongban.ops import acls, principals, quotas, retention, topics
from tongban.ops.kafka_admin import admin_client, ops_settings


def _settings(args):
    return ops_settings(args.bootstrap)


def _print_acl_plan(plan: acls.AclPlan, namespace: str, done: bool) -> None:
    for acl in plan.create:
        print(f"grant    {acl}")
    for acl in plan.revoke:
        print(f"revoke   {acl}")
    for acl in plan.foreign:
        print(f"foreign  {acl}  (not a Tongban principal: left alone)")
    granted, revoked = ("granted", "revoked") if done else ("to grant", "to revoke")
    print(f"acls{' in ' + namespace if namespace else ''}: {len(plan.create)} {granted}, "
          f"{len(plan.revoke)} {revoked}, {plan.unchanged} unchanged, {len(plan.foreign)} foreign")


def cmd_principals(args) -> int:
    settings = _settings(args)
    if args.action == "list":
        values = principals.read_kafka_secrets(settings.kafka_secrets_file)
        for p in principals.declared(args.file):
            print(f"{p.name:24} {p.kind:9} {p.ref:10} {'secret' if p.name in values else 'NO SECRET'}")
        return 0
    if args.action == "init":
        added = principals.init(settings.kafka_secrets_file, args.file)
        print(f"principals: {len(added)} secrets added to {settings.kafka_secrets_file}"
              + (f" ({', '.join(added)})" if added else ""))
        return 0
    if args.action == "scram-args":
        print("\n".join(principals.scram_args(settings.kafka_secrets_file, args.file)))
        return 0
    if args.action == "rotate":
        if not args.name:
            raise SystemExit("rotate needs the principal's name")
        principals.rotate(args.name, settings, args.file)
        print(f"rotated  {args.name}: new secret on the broker and in {settings.kafka_secrets_file}; "
              "restart the processes that run as it")
        if args.name == principals.KAFKA_ADMIN:
            print("the broker itself logs in as admin (inter-broker): restart it now (make down up)")
        return 0
    changes = (principals.plan if args.action == "plan" else principals.apply)(settings, args.file)
    todo = [c for c in changes if c.action != "ok"]
    for c in todo:
        print(f"{c.action:8} {c.name}")
    verb = "to change" if args.action == "plan" else "changed"
    print(f"principals: {len(todo)} {verb}, {len(principals.declared(args.file))} declared")
    return 0


def cmd_acls(args) -> int:
    namespace = os.environ.get("TONGBAN_NAMESPACE", "") if args.namespace is None else args.namespace
    if args.action == "list":
        wanted = acls.generate(namespace, args.file)
        shown = acls.for_principal(wanted, args.principal) if args.principal else sorted(wanted)
        for acl in shown:
            print(acl)
        print(f"acls: {len(shown)} declared")
        return 0
    admin = admin_client(_settings(args))
    if args.action == "drop":
        plan = acls.drop(namespace, admin)
        print(f"acls: {len(plan.revoke)} revoked in {namespace}")
        return 0
    plan = (acls.plan if args.action == "plan" else acls.apply)(namespace, args.file, admin)
    _print_acl_plan(plan, namespace, done=args.action == "apply")
    return 0


def cmd_quotas(args) -> int:
    settings = _settings(args)
    if args.action == "list":
        for user, values in quotas.generate(args.file).items():
            print(user, " ".join(f"{k}={quotas.number(v)}" for k, v in sorted(values.items())))
        return 0
    changes = asyncio.run((quotas.plan if args.action == "plan" else quotas.apply)(settings, args.file))
    for c in changes:
        print(c)
    print(f"quotas: {len(changes)} {'to change' if args.action == 'plan' else 'changed'}")
    return 0


def cmd_all(args) -> int:
    """Topics, principals, ACLs and quotas, in the order a fresh cluster needs them."""
    argv = [args.action] + (["--namespace", args.namespace] if args.namespace is not None else [])
    argv += ["--bootstrap", args.bootstrap] if args.bootstrap else []
    argv += ["--file", args.file] if args.file else []
    rc = topics.main(argv)
    if _settings(args).kafka_security == "PLAINTEXT":
        print("principals, acls, quotas: skipped (TONGBAN_KAFKA_SECURITY=PLAINTEXT: no logins, no authorizer)")
        return rc
    for fn in (cmd_principals, cmd_acls, cmd_quotas):
        rc = rc or fn(replace_args(args, action=args.action))
    return rc


def replace_args(args, **changes):
    return argparse.Namespace(**{**vars(args), **changes})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "topics":
        return topics.main(argv[1:])
    if argv and argv[0] == "retention":
        return retention.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m tongban.ops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=None, help="default: $TONGBAN_KAFKA_BOOTSTRAP or the local broker")
    parser.add_argument("--file", default=None, help="declaration file (default: infra/topics.toml)")
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("plan", "apply"):
        p = sub.add_parser(name, help=f"{name} topics, principals, ACLs and quotas")
        p.add_argument("--namespace", default=None)
        p.set_defaults(fn=cmd_all, action=name)
    p = sub.add_parser("principals", help="secrets and SCRAM credentials")
    p.add_argument("action", choices=["list", "init", "plan", "apply", "rotate", "scram-args"])
    p.add_argument("name", nargs="?", help="the principal to rotate")
    p.set_defaults(fn=cmd_principals)
    p = sub.add_parser("acls", help="ACLs generated from the declaration")
    p.add_argument("action", choices=["list", "plan", "apply", "drop"])
    p.add_argument("--namespace", default=None, help="default: $TONGBAN_NAMESPACE")
    p.add_argument("--principal", default=None, help="list: only this principal's ACLs")
    p.set_defaults(fn=cmd_acls)
    p = sub.add_parser("quotas", help="client quotas per principal")
    p.add_argument("action", choices=["list", "plan", "apply"])
    p.set_defaults(fn=cmd_quotas)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
