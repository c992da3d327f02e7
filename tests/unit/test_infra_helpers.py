"""Small decisions of `paysys infra` that the real-server tests do not reach."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from paysys.cli import infra


def test_corrupt_state_file_reads_as_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSYS_STATE_DIR", str(tmp_path))
    assert infra.load_state() == {}
    (tmp_path / "state.json").write_text("{not json")
    assert infra.load_state() == {}
    (tmp_path / "state.json").write_text("[1, 2]")
    assert infra.load_state() == {}
    infra.save_state({"redis": {"strategy": "local"}})
    assert infra.load_state() == {"redis": {"strategy": "local"}}


def test_postgres_found_in_debian_paths_when_not_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for version in ("9", "16", "14"):
        bindir = tmp_path / "postgresql" / version / "bin"
        bindir.mkdir(parents=True)
        for tool in ("initdb", "pg_ctl"):
            (bindir / tool).touch()
    (tmp_path / "postgresql" / "17" / "bin").mkdir(parents=True)  # incomplete: skipped
    monkeypatch.setattr(infra.shutil, "which", lambda name: None)
    monkeypatch.setattr(infra, "POSTGRES_SEARCH_GLOBS", (str(tmp_path / "postgresql/*/bin"),))
    assert infra.find_postgres_bin() == tmp_path / "postgresql" / "16" / "bin"
    monkeypatch.setattr(infra, "POSTGRES_SEARCH_GLOBS", (str(tmp_path / "none/*/bin"),))
    assert infra.find_postgres_bin() is None
    assert infra.find_redis_server() is None


def test_unprivileged_user_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra.os, "geteuid", lambda: 1000)
    assert infra.run_as() is None
    monkeypatch.setattr(infra.os, "geteuid", lambda: 0)
    assert infra.run_as() in infra.UNPRIVILEGED_USERS
    monkeypatch.setattr(infra, "UNPRIVILEGED_USERS", ("no-such-user-here",))
    with pytest.raises(infra.InfraError, match="no unprivileged user"):
        infra.run_as()


def test_commands_run_as_another_user(monkeypatch: pytest.MonkeyPatch) -> None:
    assert infra._as_user(["initdb", "-D", "x"], None) == ["initdb", "-D", "x"]
    monkeypatch.setattr(infra.shutil, "which", lambda name: "/usr/sbin/runuser")
    assert infra._as_user(["initdb"], "postgres") == ["runuser", "-u", "postgres", "--", "initdb"]
    monkeypatch.setattr(infra.shutil, "which", lambda name: None)
    assert infra._as_user(["pg_ctl", "-D", "a b"], "postgres") == [
        "su",
        "postgres",
        "-s",
        "/bin/sh",
        "-c",
        "pg_ctl -D 'a b'",
    ]


class Completed:
    def __init__(self, code: int) -> None:
        self.returncode = code
        self.stdout = ""
        self.stderr = "boom"


def test_docker_detection_and_compose_flavours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra.shutil, "which", lambda name: None)
    assert not infra.docker_available()  # no docker CLI at all

    def hangs(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("docker info", 15)

    monkeypatch.setattr(infra.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(infra.subprocess, "run", hangs)
    assert not infra.docker_available()  # an engine that does not answer

    monkeypatch.setattr(infra.subprocess, "run", lambda *a, **k: Completed(1))
    assert infra.compose_command() == ["docker-compose"]  # the standalone v1 binary
    monkeypatch.setattr(infra.shutil, "which", lambda name: None)
    with pytest.raises(infra.InfraError, match="neither"):
        infra.compose_command()
    monkeypatch.setattr(infra.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(infra.InfraError, match="boom"):
        infra.compose(["up", "-d"])


def test_wait_until_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(infra.InfraError, match="did not become ready"):
        infra.wait_until(lambda: False, 0.3, "thing")
