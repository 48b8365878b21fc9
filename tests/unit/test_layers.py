"""Layers point one way (DESIGN §2, "Shape of the code").

- `tongban/` is the shared package: it never imports a service, `sim/` or `devtools/`.
- A service never imports another service: services exchange events, not code.

Read from the source (AST), so an import inside a function or a relative import counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
NOT_FOR_TONGBAN = ("services", "sim", "devtools")


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    return imports(path.read_text(), package, str(path))


def imports(source: str, package: str, filename: str = "<probe>") -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in the source of a module in `package`,
    including the names imported from a package (`from services import intake` yields
    `services.intake`) and `importlib.import_module("...")` with a literal name."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def top(module: str) -> str:
    return module.split(".")[0]


def test_the_scan_sees_every_kind_of_import():
    source = ("import sim.partners\nfrom services import routing\nfrom ..delivery import domain\n"
              "def f():\n    from devtools.launcher import ROOT\n    importlib.import_module('services.feedback')\n")
    found = {module for _, module in imports(source, "services.intake")}
    assert {"sim.partners", "services.routing", "services.delivery.domain", "devtools.launcher",
            "services.feedback"} <= found


@pytest.mark.parametrize("path", sources("tongban"), ids=lambda p: str(p.relative_to(ROOT)))
def test_tongban_imports_no_service_sim_or_devtools(path):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for line, module in imported_modules(path) if top(module) in NOT_FOR_TONGBAN]
    assert not wrong, "tongban/ is the shared package; move the code that needs these out of it:\n" + "\n".join(wrong)


@pytest.mark.parametrize("service", SERVICES)
def test_services_never_import_each_other(service):
    wrong = []
    for path in sources(f"services/{service}"):
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, f"services.{service} must exchange events, not code, with other services:\n" + "\n".join(wrong)


def test_there_is_something_to_check():
    assert len(SERVICES) >= 5
    assert len(sources("tongban")) > 5
