"""A lint of the Dockerfile's rules (no Docker engine here: the image cannot be built on this
machine, so these are static checks of what the build would do)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from tests.support.deploy import DOCKERFILE, DOCKERIGNORE, ROOT


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = re.sub(r"\s+", " ", rest).strip()
        if keyword == "FROM":
            parts = rest.split()
            base = parts[0]
            for name, default in args.items():
                base = base.replace("${" + name + "}", default)
            stages.append(Stage(base, parts[2] if len(parts) > 2 else None))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def final() -> Stage:
    return parse()[1][-1]


def test_multi_stage_on_a_slim_python_311_base() -> None:
    _args, stages = parse()
    assert len(stages) >= 2
    assert [s.name for s in stages] == ["build", "runtime"]
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base), stage.base
    # The runtime stage gets the built environment only, not the build tools.
    copies = final().all("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"]


def test_dependencies_install_from_the_lock_with_uv_before_the_source() -> None:
    build = parse()[1][0]
    runs = " ".join(build.all("RUN"))
    assert 'pip install "uv==${UV_VERSION}"' in runs
    assert re.fullmatch(r"UV_VERSION=\d+\.\d+\.\d+", build.all("ARG")[0]), "uv must be pinned"
    assert "uv pip sync" in runs and "--require-hashes requirements.lock" in runs
    keywords = [(kw, args) for kw, args in build.instructions if kw in {"COPY", "RUN"}]
    lock_copy = keywords.index(("COPY", "requirements.lock ./"))
    src_copy = keywords.index(("COPY", "src ./src"))
    sync = next(i for i, (kw, a) in enumerate(keywords) if "uv pip sync" in a)
    assert lock_copy < sync < src_copy  # the dependency layer survives code changes
    assert "--no-deps ." in runs  # the project itself, without re-resolving
    assert "UV_PYTHON_DOWNLOADS=never" in " ".join(build.all("ENV"))


def test_runs_as_a_non_root_user() -> None:
    stage = final()
    users = stage.all("USER")
    assert users == ["10001:10001"]
    runs = " ".join(stage.all("RUN"))
    assert "useradd --system --uid 10001" in runs
    # Nothing runs as root after the switch.
    position = [kw for kw, _ in stage.instructions].index("USER")
    assert all(kw != "RUN" for kw, _ in stage.instructions[position:])


def test_one_image_the_command_chooses_the_service_and_healthcheck_is_liveness() -> None:
    stage = final()
    assert not stage.all("ENTRYPOINT")
    (cmd,) = stage.all("CMD")
    assert json.loads(cmd) == ["paysys", "serve", "gateway", "--host", "0.0.0.0"]
    (health,) = stage.all("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"] and "/health/live" in argv[2]
    assert stage.all("EXPOSE") == ["8000"]
    env = " ".join(stage.all("ENV"))
    assert "PORT=8000" in env and "ENV=production" in env
    assert stage.all("STOPSIGNAL") == ["SIGTERM"]


def test_no_secret_is_baked_in() -> None:
    _args, stages = parse()
    suspicious = re.compile(r"(SECRET|PASSWORD|TOKEN|PRIVATE|API_KEY|DATABASE_URL|REDIS_URL)")
    for stage in stages:
        for keyword in ("ENV", "ARG", "LABEL"):
            for args in stage.all(keyword):
                assert not suspicious.search(args), f"{keyword} {args}"
        for args in stage.all("COPY"):
            assert ".env" not in shlex.split(args)
        assert not stage.all("ADD"), "ADD can fetch URLs and unpack archives: use COPY"
    assert ":latest" not in DOCKERFILE.read_text()


def test_dockerignore_lets_only_the_build_inputs_through() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # deny everything, then allow the inputs
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"requirements.lock", "pyproject.toml", "README.md", "src"}
    for name in allowed:
        assert (ROOT / name).exists()
    assert "**/.env" in lines and "**/__pycache__" in lines
    # Everything the build COPYs is in the context.
    copied = {
        part.rstrip("/") for args in parse()[1][0].all("COPY") for part in shlex.split(args)[:-1]
    }
    assert copied <= allowed, copied - allowed
