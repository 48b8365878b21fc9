"""Where Tongban finds its declarations, schemas and working files.

Each path comes from its variable when set; otherwise from the installed wheel, which carries
the schemas and the Kafka declarations as package data under ``tongban/_packaged/``; otherwise
from the checkout (``schemas/``, ``infra/``, ``var/``), where the work tree is the source.

| variable | what | default |
|---|---|---|
| ``TONGBAN_SCHEMAS_DIR`` | released Avro schemas and ``released.lock`` | packaged, else ``schemas/`` |
| ``TONGBAN_TOPICS_FILE`` | the declared topics, principals and quotas | packaged, else ``infra/topics.toml`` |
| ``TONGBAN_OVERLAYS_DIR`` | environment overlays of the declaration | packaged, else ``infra/overlays/`` |
| ``TONGBAN_RETENTION_FILE`` | how long each service's archive is kept | packaged, else ``infra/retention.toml`` |
| ``TONGBAN_VAR_DIR`` | keys, secrets, certificates, local state | ``var/`` of the checkout, else ``./var`` |

Data files that live inside a package (``services/routing/catalogue.toml``,
``tongban/gb2260.tsv``, ...) are read beside their module and need no setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PACKAGED = PACKAGE / "_packaged"  # filled by the wheel build (pyproject.toml); absent in a checkout
CHECKOUT = PACKAGE.parent  # the work tree, when running from one


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _data(variable: str, packaged: str, checkout: str, env: Mapping[str, str] | None) -> Path:
    value = _env(env).get(variable)
    if value:
        return Path(value)
    installed = PACKAGED / packaged
    return installed if installed.exists() else CHECKOUT / checkout


def in_checkout() -> bool:
    """Running from the work tree (an editable install or the sources), not from a wheel."""
    return not PACKAGED.exists() and (CHECKOUT / "pyproject.toml").exists()


def schemas_dir(env: Mapping[str, str] | None = None) -> Path:
    return _data("TONGBAN_SCHEMAS_DIR", "schemas", "schemas", env)


def topics_file(env: Mapping[str, str] | None = None) -> Path:
    return _data("TONGBAN_TOPICS_FILE", "infra/topics.toml", "infra/topics.toml", env)


def overlays_dir(env: Mapping[str, str] | None = None) -> Path:
    return _data("TONGBAN_OVERLAYS_DIR", "infra/overlays", "infra/overlays", env)


def retention_file(env: Mapping[str, str] | None = None) -> Path:
    return _data("TONGBAN_RETENTION_FILE", "infra/retention.toml", "infra/retention.toml", env)


def var_dir(env: Mapping[str, str] | None = None) -> Path:
    """Working files: secrets, keys, certificates, state. An installed process has no checkout
    to keep them in, so without TONGBAN_VAR_DIR they go to ./var of its working directory."""
    value = _env(env).get("TONGBAN_VAR_DIR")
    if value:
        return Path(value)
    return CHECKOUT / "var" if in_checkout() else Path.cwd() / "var"
