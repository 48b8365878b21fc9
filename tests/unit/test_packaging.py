"""One wheel carries the code, the schemas and the declarations, and runs outside the checkout.

The wheel is built from a copy of the work tree (so the build leaves nothing in it), installed
with pip into a target directory and run from a temporary directory with no TONGBAN_* setting:
what it reads can come only from the wheel. Removing the packaged data then makes the same
commands fail, so they passed because the data is packaged, not because a checkout was found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tongban import paths

ROOT = Path(__file__).resolve().parents[2]
CODE = ("tongban", "services", "sim", "devtools")
SERVICES = ("intake", "routing", "verification", "delivery", "feedback", "datasharing")


def _tracked() -> list[str]:
    listed = subprocess.run(["git", "ls-files", *CODE, "schemas", "infra"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    return [f for f in listed if (ROOT / f).exists()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns(".venv", "var", ".git", "tests", "__pycache__", "mutants", "build", "*.egg-info")
    shutil.copytree(ROOT, source / "tree", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    # Not quiet: pip shows the build backend's warnings only then (test_the_build_warns_of_nothing).
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                            "-w", str(out)], cwd=source / "tree", check=True, capture_output=True, text=True)
    (out / "build.log").write_text(built.stdout + built.stderr)
    (whl,) = out.glob("tongban-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def _outside(target: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGBAN_")}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install of the work tree
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_wheel_holds_every_module_and_data_file_of_the_tree(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {"schemas/": "tongban/_packaged/schemas/", "infra/": "tongban/_packaged/infra/"}
    missing = []
    for file in _tracked():
        if file.startswith("infra/") and not (file == "infra/topics.toml" or file.startswith("infra/overlays/")):
            continue  # broker templates and scripts run the local platform, not an installed process
        inside = next((file.replace(prefix, to, 1) for prefix, to in packaged.items() if file.startswith(prefix)), file)
        if inside not in names:
            missing.append(file)
    assert missing == []
    assert "tongban/_packaged/schemas/released.lock" in names


def test_the_build_warns_of_nothing(wheel: Path):
    log = (wheel.parent / "build.log").read_text()
    assert "Successfully built tongban" in log
    # A data directory beside a module (services/datasharing/records/) once drew setuptools'
    # "Package ... is absent from the `packages` configuration" warning.
    assert "Warning" not in log, log


def test_entry_points_name_every_service_and_the_operator_command(wheel: Path):
    with zipfile.ZipFile(wheel) as whl:
        entry_points = whl.read("tongban-0.1.0.dist-info/entry_points.txt").decode()
    for name in ("tongban", "tongban-probe", *(f"tongban-{s}" for s in SERVICES)):
        assert f"\n{name} = " in entry_points


def test_installed_wheel_runs_from_outside_the_checkout_on_packaged_data(installed: Path, tmp_path: Path):
    probe = ("import tongban, services.routing.catalogue as c, services.intake.__main__;"
             "from tongban.ops.topics import load_declared; from tongban.codec import SchemaRegistry;"
             "print(tongban.__file__); print(len(load_declared(''))); print(len(SchemaRegistry.load().all_versions()))")
    ran = _outside(installed, tmp_path, sys.executable, "-c", probe)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, topics, schemas = ran.stdout.split()
    assert Path(where).is_relative_to(installed)
    assert int(topics) > 20
    assert int(schemas) > 40
    # The same verdict as in the checkout (where schemas being released may not be locked yet).
    checked = _outside(installed, tmp_path, str(installed / "bin" / "tongban"), "schemas", "check", "--json")
    here = subprocess.run([sys.executable, "-m", "tongban.ops.cli", "schemas", "check", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert checked.returncode in (0, 1), checked.stderr[-2000:]
    assert (checked.returncode, checked.stdout) == (here.returncode, here.stdout)
    for service in SERVICES:
        assert (installed / "bin" / f"tongban-{service}").exists()

    listed = _outside(installed, tmp_path, str(installed / "bin" / "tongban"), "schemas", "list", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert len(json.loads(listed.stdout)) == int(schemas)

    shutil.rmtree(installed / "tongban" / "_packaged")
    assert _outside(installed, tmp_path, sys.executable, "-c", probe).returncode != 0
    unlisted = _outside(installed, tmp_path, str(installed / "bin" / "tongban"), "schemas", "list", "--json")
    assert unlisted.returncode != 0 or json.loads(unlisted.stdout) == []


def test_installed_wheel_reads_the_providers_records_from_the_package(wheel: Path, installed: Path, tmp_path: Path):
    checkout = ROOT / "services" / "datasharing" / "records"
    providers = sorted(p.stem for p in checkout.glob("*.json"))
    assert providers
    inside = set(zipfile.ZipFile(wheel).namelist())
    assert {f"services/datasharing/records/{p}.json" for p in providers} <= inside
    probe = ("import json, sys, services.datasharing.records as r;"
             "print(r.HERE); print(json.dumps({p: len(r.RecordStore.load(p).evidence_types()) for p in sys.argv[1:]}))")
    ran = _outside(installed, tmp_path, sys.executable, "-c", probe, *providers)
    assert ran.returncode == 0, ran.stderr[-2000:]
    where, counts = ran.stdout.splitlines()
    assert Path(where).is_relative_to(installed)
    expected = {p: len({r["evidence"] for r in json.loads((checkout / f"{p}.json").read_text())["records"]})
                for p in providers}
    assert json.loads(counts) == expected
    assert all(expected.values())
    # Read from the package, not from a checkout: without the installed copy it fails.
    shutil.rmtree(installed / "services" / "datasharing" / "records")
    assert _outside(installed, tmp_path, sys.executable, "-c", probe, *providers).returncode != 0


def test_paths_follow_their_variables(tmp_path: Path):
    env = {"TONGBAN_SCHEMAS_DIR": str(tmp_path / "s"), "TONGBAN_TOPICS_FILE": str(tmp_path / "t.toml"),
           "TONGBAN_OVERLAYS_DIR": str(tmp_path / "o"), "TONGBAN_VAR_DIR": str(tmp_path / "v")}
    assert paths.schemas_dir(env) == tmp_path / "s"
    assert paths.topics_file(env) == tmp_path / "t.toml"
    assert paths.overlays_dir(env) == tmp_path / "o"
    assert paths.var_dir(env) == tmp_path / "v"
    assert paths.schemas_dir({}) == ROOT / "schemas"  # the work tree, which has no packaged copy
    assert paths.var_dir({}) == ROOT / "var"
