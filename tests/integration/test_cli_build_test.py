"""`paysys build`, `paysys test`, `paysys --help` and argument checks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paysys import SERVICES
from paysys.cli import main
from paysys.cli.main import app, pytest_selection

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def test_help_documents_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("infra", "setup", "dev", "db", "build", "test", "check", "api", "serve"):
        assert command in result.output
    groups = {
        "infra": ("start", "stop", "status", "logs"),
        "db": ("generate", "migrate", "deploy", "seed", "studio", "reset", "format", "validate"),
        "check": ("health",),
        "api": ("register", "login", "payments-list", "payments-create"),
    }
    for group, commands in groups.items():
        output = runner.invoke(app, [group, "--help"]).output
        for command in commands:
            assert command in output, (group, command)
        for command in commands:
            sub = runner.invoke(app, [group, command, "--help"])
            assert sub.exit_code == 0, (group, command)
            assert "Usage" in sub.output


def test_build_makes_a_wheel_whose_apps_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "dist"
    result = runner.invoke(app, ["build", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    wheels = list(out.glob("paysys-*.whl"))
    assert len(wheels) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "paysys/db/migrations/versions/0001_foundation.py" in names
    for service in SERVICES:
        assert f"paysys/{service}/app.py" in names
        assert f"{service}: imports and builds its app from the wheel" in result.output


def test_build_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pyproject here: the build fails
    result = runner.invoke(app, ["build", "--out-dir", str(tmp_path / "dist")])
    assert result.exit_code == 1
    assert "wheel build failed" in result.output
    assert runner.invoke(app, ["build", "nope"]).exit_code == 2


def test_build_catches_a_broken_service_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wheel whose service app cannot start fails the import check."""
    project = tmp_path / "proj"
    import shutil

    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    app_file = project / "src" / "paysys" / "profile" / "app.py"
    app_file.write_text(app_file.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["build", "profile", "--out-dir", str(tmp_path / "dist")])
    assert result.exit_code == 1
    assert "import check failed" in result.output
    assert "broken on purpose" in result.output
    assert "gateway" not in result.output  # only the named service is checked


def test_test_selections() -> None:
    root = ROOT / "tests"
    assert pytest_selection(None, root) == [str(root)]
    assert pytest_selection("e2e", root) == [str(root / "e2e")]
    libs = pytest_selection("libs", root)
    assert libs[0] == str(root / "unit")
    assert str(root / "integration" / "test_foundation_http.py") in libs
    auth = pytest_selection("auth", root)
    assert auth and all(Path(p).name.startswith("test_auth_") for p in auth)
    assert pytest_selection("nothing-here", root) == []


def test_test_runs_pytest_on_the_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny project: `paysys test <target>` runs pytest there and passes its exit code on."""
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "integration").mkdir()
    (tmp_path / "tests" / "unit" / "test_money_x.py").write_text("def test_a():\n    pass\n")
    (tmp_path / "tests" / "integration" / "test_auth_x.py").write_text(
        "def test_b():\n    assert False\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["-q", "-p", "no:cacheprovider", "-p", "no:cov"]
    failed = runner.invoke(app, ["test", "auth", *args])
    assert failed.exit_code == 1  # pytest's own exit code (a test failed)
    assert "$ pytest tests/integration/test_auth_x.py -q" in failed.output
    assert runner.invoke(app, ["test", "nope"]).exit_code == 2


def test_test_without_tests_for_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(main, "pytest_selection", lambda target: [])
    result = runner.invoke(app, ["test", "gateway"])
    assert result.exit_code == 1 and "no tests for gateway" in result.output


def test_unknown_service_is_refused() -> None:
    for args in (["serve", "nope"], ["dev", "nope"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2
        assert "unknown service" in result.output
