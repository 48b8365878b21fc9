"""An installed wheel starts a service outside the checkout: `tongban-feedback` from a wheel
built from this tree and installed into a target directory, run from a temporary directory,
joins the real broker and store in the test's namespace and reports SERVING to the installed
`tongban-probe` (the pods' probe), then stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.launcher import free_port
from tongban.ops import certs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def build_and_install(tmp: Path) -> Path:
    tree, wheels, target = tmp / "tree", tmp / "wheels", tmp / "site"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", "var", ".git", "tests", "__pycache__",
                                                              "mutants", "build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], cwd=tree, check=True, capture_output=True)
    (wheel,) = wheels.glob("tongban-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    return target


def test_installed_service_starts_outside_the_checkout(namespace: str, tmp_path: Path):
    target = build_and_install(tmp_path)
    certs.setup(ROOT / "var" / "tls" / "grpc")  # idempotent, as make setup and the launcher do
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("TONGBAN_SCHEMAS_DIR", "TONGBAN_TOPICS_FILE", "TONGBAN_OVERLAYS_DIR")}
    env.update({"PYTHONPATH": str(target),  # ahead of the work tree's editable install
                "TONGBAN_NAMESPACE": namespace, "TONGBAN_VAR_DIR": str(ROOT / "var"),  # secrets and certificates
                "TONGBAN_STATE_STORE": "memory", "TONGBAN_SESSION_TIMEOUT_MS": "3000",
                "TONGBAN_GRPC_PORT_FEEDBACK": str(port), "TONGBAN_METRICS_PORT_FEEDBACK": "0"})
    log = tmp_path / "feedback.log"
    with open(log, "wb") as out:
        service = subprocess.Popen([str(target / "bin" / "tongban-feedback")], cwd=tmp_path, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while subprocess.run([str(target / "bin" / "tongban-probe"), "--port", str(port)], cwd=tmp_path, env=env,
                             capture_output=True).returncode != 0:
            assert service.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not SERVING after 90 s:\n" + log.read_text()[-3000:]
            time.sleep(0.5)  # the next probe, as a kubelet's period
    finally:
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert str(target) in subprocess.run(
        [sys.executable, "-c", "import services.feedback.handlers as h; print(h.__file__)"], cwd=tmp_path, env=env,
        capture_output=True, text=True, check=True).stdout
