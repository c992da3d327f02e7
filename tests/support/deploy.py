"""Helpers for the deployment tests: the repository's deploy files, offline Kubernetes
validation, kustomize rendering, and a raw in-flight HTTP request for shutdown drills."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.servers import SERVICE_PORT_ENV, ServiceProcess, Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
LOCAL = K8S / "overlays" / "local"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The Kubernetes version the manifests are validated against (kubernetes-validate ships its
# schemas: no network). 1.30 is the oldest release still commonly supported by cloud vendors.
K8S_VERSION = "1.30.0"
SERVICES = ("gateway", "auth", "payments", "admin", "profile")
# Settings that hold secrets: they must come from the Secret, never the ConfigMap or image.
SECRET_VARS = frozenset(
    {
        "DATABASE_URL",
        "REDIS_URL",
        "JWT_ACCESS_SECRET",
        "JWT_REFRESH_SECRET",
        "JWT_ACCESS_SECRET_PREVIOUS",
        "JWT_REFRESH_SECRET_PREVIOUS",
        "PSP_WEBHOOK_SECRET",
        "STUDIO_SESSION_SECRET",
    }
)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks skipped), as kustomize reads `envs:` files."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        values[key.strip()] = value
    return values


def documented_unset(path: Path) -> set[str]:
    """Settings an env file documents as deliberately unset: `# KEY=` comment lines."""
    found = set()
    for raw in path.read_text().splitlines():
        line = raw.strip().lstrip("#").strip()
        key, sep, _value = line.partition("=")
        if raw.strip().startswith("#") and sep and key.isupper() and key.replace("_", "").isalnum():
            found.add(key)
    return found


def optional_settings() -> set[str]:
    """Settings whose default is None (may be left unset everywhere)."""
    from paysys.core.config import Settings

    return {name.upper() for name, f in Settings.model_fields.items() if f.default is None}


def validate_k8s(doc: dict[str, Any], version: str = K8S_VERSION) -> None:
    """Strict schema validation (unknown fields are errors) against `version`, offline."""
    import kubernetes_validate

    kubernetes_validate.validate(doc, version, strict=True)


def kustomize_command() -> list[str] | None:
    """`kustomize build` or `kubectl kustomize` (kustomize is built into kubectl), if any."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def prepared_overlay(tmp: Path) -> Path:
    """A copy of deploy/k8s whose local overlay has a secrets.env (from the example, with
    throw-away values) so it can be rendered; the repository itself is never written."""
    target = tmp / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("secrets.env"))
    example = (target / "overlays" / "local" / "secrets.env.example").read_text()
    (target / "overlays" / "local" / "secrets.env").write_text(
        example.replace("REPLACE_ME", "test-only-value-0123456789abcdef0123456789")
    )
    return target / "overlays" / "local"


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    command = kustomize_command()
    assert command is not None
    result = subprocess.run(
        [*command, str(kustomization_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomization_files(directory: Path) -> list[Path]:
    """Every local file a kustomization refers to (resources, generators), recursively."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found: list[Path] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            found.append(path / "kustomization.yaml")
            found.extend(kustomization_files(path))
        else:
            found.append(path)
    for generator in [
        *kustomization.get("configMapGenerator", []),
        *kustomization.get("secretGenerator", []),
    ]:
        for key in ("envs", "files"):
            for entry in generator.get(key, []):
                found.append((directory / entry.split("=")[-1]).resolve())
    return found


def assemble_without_kustomize(overlay: Path) -> list[dict[str, Any]]:
    """The overlay's objects without kustomize (no patches, names or namespace applied): its
    resource files plus the generated ConfigMaps and Secret built from their sources."""
    docs = [
        doc
        for path in kustomization_files(overlay)
        if path.suffix == ".yaml" and path.name != "kustomization.yaml"
        for doc in yaml_docs(path)
    ]
    base = overlay.parents[1] / "base"

    def generated(kind: str, name: str, data: dict[str, str]) -> dict[str, Any]:
        key = "stringData" if kind == "Secret" else "data"
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, key: data}

    docs.append(generated("ConfigMap", "paysys-config", read_env_file(base / "config.env")))
    script = (base / "wait_for_schema.py").read_text()
    docs.append(generated("ConfigMap", "paysys-scripts", {"wait_for_schema.py": script}))
    docs.append(generated("Secret", "paysys-secrets", read_env_file(overlay / "secrets.env")))
    return docs


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


# -- shutdown drills ------------------------------------------------------------------------
@dataclass
class InFlightRequest:
    """A POST whose body the server is waiting for: `Expect: 100-continue` makes uvicorn answer
    `100 Continue` exactly when the app starts reading the body, so after `open()` returns the
    request is provably in flight inside the application."""

    port: int
    path: str
    body: bytes
    sock: socket.socket | None = None
    pending: bytes = b""

    def open(self, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode())
        interim = self._read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim

    def finish(self) -> tuple[int, dict[str, str], bytes]:
        """Send the body; → (status, headers, body) of the complete response."""
        assert self.sock is not None
        self.sock.sendall(self.body)
        head = self._read_until(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        payload = self._read_exactly(length)
        return int(status_line.split()[1]), headers, payload

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _read_until(self, marker: bytes) -> bytes:
        assert self.sock is not None
        data = b""
        while marker not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"connection closed after {data!r}")
            data += chunk
        head, _, rest = data.partition(marker)
        self.pending = rest
        return head

    def _read_exactly(self, length: int) -> bytes:
        assert self.sock is not None
        data = self.pending
        while len(data) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def poll(condition: Any, timeout: float, interval: float = 0.05) -> bool:
    """True as soon as `condition()` is; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


@contextlib.contextmanager
def in_flight(port: int, path: str, body: bytes) -> Iterator[InFlightRequest]:
    request = InFlightRequest(port, path, body)
    request.open()
    try:
        yield request
    finally:
        request.close()


# -- multi-replica stacks --------------------------------------------------------------------
def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PORT", None)
    return env


@dataclass
class ReplicaStack:
    """Real processes on loopback with any number of replicas per service: `replicas` maps a
    service to its count; replicas are named `payments-1`, `payments-2`, ... (a count of 1 keeps
    the plain name). Every gateway gets ALL the URLs of each upstream (`PAYMENTS_SERVICE_URL=
    http://a,http://b`). Built on tests.support.servers (ServiceProcess / Stack)."""

    stack: Stack

    @classmethod
    def build(cls, logdir: Path, replicas: dict[str, int], **extra_env: str) -> ReplicaStack:
        logdir.mkdir(parents=True, exist_ok=True)
        names: dict[str, list[tuple[str, int]]] = {
            service: [
                (service if count == 1 else f"{service}-{index + 1}", free_port())
                for index in range(count)
            ]
            for service, count in replicas.items()
        }
        env = base_env()
        for service, var in SERVICE_PORT_ENV.items():
            if service in names:
                env[var] = ",".join(f"http://127.0.0.1:{port}" for _, port in names[service])
        env.update(extra_env)
        stack = Stack(env, logdir)
        for service, members in names.items():
            for name, port in members:
                stack.services[name] = ServiceProcess(
                    service, port, {**env, "PORT": str(port)}, logdir / f"{name}.log"
                )
        return cls(stack)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.stack.services[name]

    def named(self, service: str) -> list[ServiceProcess]:
        return [p for p in self.stack.services.values() if p.name == service]

    def start(self, timeout: float = 90.0) -> None:
        """Backends first, then the gateways (generous timeout: a busy 2-core machine can take
        tens of seconds to import a service)."""
        for gateways in (False, True):
            chosen = [p for p in self.stack.services.values() if (p.name == "gateway") == gateways]
            for process in chosen:
                process.start()
            for process in chosen:
                process.wait_ready(timeout)

    def stop(self) -> None:
        self.stack.stop()


def terminate(process: ServiceProcess, sig: int, timeout: float = 30.0) -> tuple[int, float]:
    """Send `sig`, wait for the exit; → (return code, seconds until it exited)."""
    assert process.proc is not None
    started = time.monotonic()
    os.kill(process.proc.pid, sig)
    code = process.proc.wait(timeout)
    process.proc = None
    return code, time.monotonic() - started
