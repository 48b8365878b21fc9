"""Start, stop and kill Tongban's processes: used by `make run`/`make demo` and the tests.

Every service is its own OS process (`python -m services.<name>`), as in production; the
launcher only passes environment, waits for the gRPC health check and keeps logs.
gRPC is mutual TLS: the launcher makes sure the local CA and certificates exist (as `make
setup` does) and checks health as `tongban-monitor`, a caller with no role in any API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tongban.grpc_tls import client_channel, listen_address, tls_dir
from tongban.ops import certs
from tongban.sharing.endpoints import PROVIDERS, ensure_certificates

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("intake", "routing", "verification", "delivery", "feedback")
MONITOR = "tongban-monitor"  # the caller health checks are made as
INSTANCE = "@"  # "intake@2": a further instance of a service, in the same consumer group


def instance(service: str, number: int) -> str:
    """The launcher's name for instance `number` (1 is the service's own name)."""
    return service if number == 1 else f"{service}{INSTANCE}{number}"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and never handed out before by this process. The kernel
    picks a fresh ephemeral port at random for each bind, so two picks for one stack can be
    the same port; the service started second would then fail to bind it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class Stack:
    """The five services, the data-sharing providers and the partner simulator, sharing one namespace."""

    def __init__(self, env: dict[str, str], log_dir: Path, sim_args: tuple[str, ...] = (),
                 ports: dict[str, int] | None = None) -> None:
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log_dir = log_dir
        self.sim_args = sim_args
        # the data-sharing providers (verification queries them) get ports of their own
        self.ports = {**{p: free_port() for p in PROVIDERS}, **(ports or {s: free_port() for s in SERVICES})}
        self.processes: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def grpc_target(self, service: str) -> str:
        host = self.env.get("TONGBAN_GRPC_HOST") or "127.0.0.1"
        return listen_address("127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host, self.ports[service])

    def add_instance(self, service: str, number: int) -> str:
        """A further instance of a service: the same consumer group, its own gRPC port and its
        own local state (two RocksDB stores of one task must not share a directory)."""
        name = instance(service, number)
        self.ports.setdefault(name, free_port())
        return name

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        service, _, number = name.partition(INSTANCE)
        module = "sim" if name == "sim" else "services.datasharing" if name in PROVIDERS else f"services.{service}"
        args = [sys.executable, "-m", module,
                *(self.sim_args if name == "sim" else ("serve", name) if name in PROVIDERS else ())]
        env = {**self.env, **{f"TONGBAN_GRPC_PORT_{s.upper()}": str(p) for s, p in self.ports.items()
                              if INSTANCE not in s}}
        if number:
            state = Path(self.env.get("TONGBAN_STATE_DIR") or ROOT / "var" / "state")
            env.update({f"TONGBAN_GRPC_PORT_{service.upper()}": str(self.ports[name]),
                        "TONGBAN_STATE_DIR": str(state / f"instance-{number}")})
        env.update(extra_env or {})
        with open(self.log_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_all(self) -> None:
        certs.setup(tls_dir(self.env), [self.env.get("TONGBAN_GRPC_HOST", "")])  # idempotent, like make setup
        ensure_certificates(tls_dir(self.env), PROVIDERS, [self.env.get("TONGBAN_GRPC_HOST", "")])
        for name in (*PROVIDERS, *SERVICES, "sim"):
            self.start(name)

    # devtools/bench calls this with `timeout=`; rename to `within` (like wait_exit) together with those calls.
    async def wait_healthy(self, names: tuple[str, ...] = (*SERVICES, *PROVIDERS), timeout: float = 60.0) -> None:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        for name in names:
            async with client_channel(self.grpc_target(name), MONITOR, tls_dir(self.env)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"{name} exited with {self.processes[name].returncode}; "
                                           f"see {self.log_dir / (name + '.log')}")
                    try:
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        if reply.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.aio.AioRpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} did not become healthy in {timeout:.0f}s")
                    await asyncio.sleep(0.2)

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL if it hangs."""
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    async def wait_exit(self, name: str, within: float = 60.0) -> int:
        deadline = time.monotonic() + within
        while (code := self.processes[name].poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still running after {within:.0f}s")
            await asyncio.sleep(0.1)
        return code
