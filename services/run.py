"""Console scripts of the services (pyproject.toml [project.scripts]): `tongban-intake` is
`python -m services.intake`, and so on. Each service's `__main__` stays its one wiring; these
only run it, so an installed wheel starts a service without a checkout or `-m`."""

from __future__ import annotations

import runpy


def _run(service: str) -> None:
    runpy.run_module(f"services.{service}", run_name="__main__", alter_sys=True)


def intake() -> None:
    _run("intake")


def routing() -> None:
    _run("routing")


def verification() -> None:
    _run("verification")


def delivery() -> None:
    _run("delivery")


def feedback() -> None:
    _run("feedback")
