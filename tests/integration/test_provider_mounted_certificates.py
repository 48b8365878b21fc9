"""A data-sharing provider runs on the certificates a deployment mounts (deploy/compose.yaml:
the CA certificate, its server pair, the monitor's client pair; no CA key): it reports SERVING
to `tongban-probe` and leaves the mounted directory as it found it, instead of making a new
CA and certificates there as a local run without certificates does."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.launcher import free_port
from tongban.ops import certs, render
from tongban.sharing import endpoints

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "mps"
PROBE = str(Path(sys.executable).parent / "tongban-probe")  # the console script compose's healthcheck runs


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_provider_serves_on_mounted_certificates_and_writes_none(namespace: str, tmp_path: Path):
    issued = tmp_path / "issued"  # the operator's CA and certificates
    certs.setup(issued)
    endpoints.ensure_certificates(issued, [PROVIDER])
    mounted = tmp_path / "mounted"
    for _, path in render.tls_items(PROVIDER):  # what the compose file mounts for a provider
        (mounted / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(issued / path, mounted / path)
    before = snapshot(mounted)
    assert "ca.key" not in before

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TONGBAN_NAMESPACE": namespace,
           "TONGBAN_GRPC_TLS_DIR": str(mounted), endpoints.port_variable(PROVIDER): str(port)}
    log = tmp_path / "provider.log"
    with open(log, "wb") as out:
        provider = subprocess.Popen([sys.executable, "-m", "services.datasharing", "serve", PROVIDER], cwd=ROOT,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([PROBE, "--port", str(port)], cwd=ROOT, env=env, capture_output=True).returncode != 0:
            assert provider.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not SERVING after 60 s:\n" + log.read_text()[-3000:]
            time.sleep(0.5)  # the next probe, as compose's healthcheck interval
    finally:
        provider.send_signal(signal.SIGTERM)
        code = provider.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]
    assert snapshot(mounted) == before
