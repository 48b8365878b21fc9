"""`make mutate`: mutation testing of the rules and the runtime against the fast unit tests.

Runs mutmut 3 (configured in pyproject.toml, [tool.mutmut]) over services/*/domain.py,
services/*/handlers.py and the Kafka-free runtime (tongban/runtime/core.py, state.py, timers.py,
memory.py; service.py and archive.py need the real broker and store, see docs/testing.md), with
tests/unit only, then writes the kill rate per module and every survivor with its diff to
var/mutate/latest.json. Not part of `make test`.

    .venv/bin/python infra/scripts/mutate.py            # fresh run (deletes mutants/ first)
    .venv/bin/python infra/scripts/mutate.py --keep     # reuse mutmut's cached results
    .venv/bin/python infra/scripts/mutate.py --report   # only rewrite the report

Exit status: 0 when the domain modules (services/*/domain.py) and the mutated runtime modules
each reach --target (85 % unless told), 1 when one does not, 2 when
mutmut itself failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "var" / "mutate" / "latest.json"
# Groups reported together; the kill-rate target applies to the pure rules and the runtime.
GROUPS = {"domain": "services/*/domain.py", "handlers": "services/*/handlers.py", "runtime": "tongban/runtime/*.py"}
TARGETED = ("domain", "runtime")
# mutmut's exit-code vocabulary (mutmut.__main__.status_by_exit_code), kept here so the
# report does not depend on mutmut internals beyond the .meta files.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          35: "suspicious", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", 2: "interrupted", -11: "segfault", -9: "segfault", None: "not checked"}


def _run_mutmut(max_children: int) -> int:
    """Run mutmut in a child interpreter with the pytest 9 shim (see _mutmut_main)."""
    return subprocess.call([sys.executable, __file__, "--_mutmut", str(max_children)], cwd=ROOT)


def _mutmut_main(max_children: int) -> None:
    # mutmut 3.7 reads `item._nodeid`, which pytest 9 no longer has (it is `nodeid`).
    import _pytest.nodes

    if not hasattr(_pytest.nodes.Node, "_nodeid"):
        _pytest.nodes.Node._nodeid = property(lambda node: node.nodeid)  # type: ignore[attr-defined]
    _keep_the_parent_free_of_rocksdb()
    from mutmut.__main__ import cli

    cli(["run", "--max-children", str(max_children)])


def _keep_the_parent_free_of_rocksdb() -> None:
    """mutmut runs its stats and clean-test runs inside its own process, then forks one child per
    mutant. RocksDB is not fork-safe: in a child forked from a process whose RocksDB thread pool
    has started, the flush on close waits forever for a thread that only exists in the parent
    (every RocksStore mutant would time out). So those runs happen in a forked child that hands
    the stats back, and the parent never starts RocksDB."""
    import pickle

    import mutmut
    from mutmut.__main__ import PytestRunner
    from mutmut.state import state

    def in_child(run: Callable[[], int]) -> int:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            code = 2
            try:
                code = run()
            finally:
                found = (code, dict(mutmut.duration_by_test), dict(mutmut.tests_by_mangled_function_name),
                         dict(state().function_dependencies))
                with os.fdopen(write, "wb") as out:
                    pickle.dump(found, out)
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as received:
            code, durations, tests, dependencies = pickle.load(received)
        os.waitpid(pid, 0)
        mutmut.duration_by_test.clear()
        mutmut.duration_by_test.update(durations)
        mutmut.tests_by_mangled_function_name.clear()
        mutmut.tests_by_mangled_function_name.update(tests)
        state().function_dependencies.clear()
        state().function_dependencies.update(dependencies)
        return code

    run_stats, run_tests = PytestRunner.run_stats, PytestRunner.run_tests

    def isolated_stats(self: PytestRunner, *, tests: Iterable[str]) -> int:
        code = in_child(lambda: run_stats(self, tests=tests))
        # Import what the tests import (collecting them runs none), as the in-process runs used
        # to: otherwise every mutant's child imports it all again.
        self.list_all_tests()
        return code

    def isolated_tests(self: PytestRunner, *, mutant_name: str | None, tests: Iterable[str]) -> int:
        if mutant_name is not None:  # already in mutmut's child for that mutant
            return run_tests(self, mutant_name=mutant_name, tests=tests)
        return in_child(lambda: run_tests(self, mutant_name=None, tests=tests))  # clean and forced-fail runs

    PytestRunner.run_stats = isolated_stats  # type: ignore[method-assign]
    PytestRunner.run_tests = isolated_tests  # type: ignore[method-assign]


def _mutated_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    modules = []
    for source in config["source_paths"]:
        for path in sorted((ROOT / source).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative and any(fnmatch.fnmatch(relative, p) for p in config["only_mutate"]):
                modules.append(relative)
    return modules


def _diff(mutant: str, module: str) -> str:
    try:
        from mutmut.__main__ import get_diff_for_mutant

        return get_diff_for_mutant(mutant, path=module)
    except Exception as exc:  # the report still lists the survivor without its diff
        return f"(no diff: {type(exc).__name__})"


def report() -> dict:
    os.chdir(ROOT)
    modules: dict[str, dict] = {}
    survivors = []
    for module in _mutated_modules():
        meta = ROOT / "mutants" / (module + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        counts: dict[str, int] = {}
        for mutant, code in sorted(codes.items()):
            status = STATUS.get(code, "suspicious")
            counts[status] = counts.get(status, 0) + 1
            if status not in ("killed", "caught by type check"):
                survivors.append({"module": module, "mutant": mutant, "status": status, "diff": _diff(mutant, module)})
        killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
        total = sum(counts.values())
        modules[module] = {"killed": killed, "survived": total - killed, "total": total,
                           "kill_rate": round(killed / total, 4) if total else None,
                           "by_status": counts}
    groups = {}
    for group, pattern in GROUPS.items():
        members = [m for m in modules if fnmatch.fnmatch(m, pattern)]
        killed = sum(modules[m]["killed"] for m in members)
        total = sum(modules[m]["total"] for m in members)
        groups[group] = {"modules": members, "killed": killed, "total": total,
                         "kill_rate": round(killed / total, 4) if total else None}
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tool": "mutmut " + _version(),
        "tests": "tests/unit",
        "modules": modules,
        "groups": groups,
        "targeted": list(TARGETED),
        "survivors": survivors,
    }


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ and mutmut's cached results")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from mutants/")
    parser.add_argument("--target", type=float, default=0.85, help="kill rate the domain modules must reach")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--_mutmut", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._mutmut is not None:
        _mutmut_main(args._mutmut)
        return 0

    if not args.report:
        if not args.keep:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        if not any((ROOT / "tongban" / "runtime").glob("*.py")):
            print("mutate: tongban/runtime/ does not exist yet; mutating the services only")
        code = _run_mutmut(args.max_children)
        if code != 0:
            print(f"mutate: mutmut failed with exit status {code}", file=sys.stderr)
            return 2

    result = report()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    width = max(len(m) for m in result["modules"]) if result["modules"] else 10
    print(f"\n{'module':<{width}}  killed/total  kill rate")
    for module, row in result["modules"].items():
        rate = "-" if row["kill_rate"] is None else f"{row['kill_rate']:.1%}"
        print(f"{module:<{width}}  {row['killed']:>6}/{row['total']:<5}  {rate}")
    print()
    short = []
    for group, row in result["groups"].items():
        rate = row["kill_rate"]
        targeted = group in result["targeted"]
        verdict = ""
        if targeted and rate is not None:
            verdict = f"  (target {args.target:.0%}{'' if rate >= args.target else ': NOT MET'})"
            if rate < args.target:
                short.append(group)
        print(f"{group:<9} {row['killed']:>5}/{row['total']:<5} "
              f"{'no mutants' if rate is None else f'{rate:.1%}'}{verdict}")
    print(f"{len(result['survivors'])} survivors; report in {REPORT.relative_to(ROOT)}")
    if result["groups"]["domain"]["kill_rate"] is None:
        short.append("domain (no mutants)")
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())
