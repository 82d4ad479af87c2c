"""The Dockerfile refers to things that exist: its COPY sources, the `reason ui` command, its pinned versions."""
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def args_of(keyword: str) -> list[str]:
    return [rest for kw, rest in instructions() if kw == keyword]


def env_values() -> dict[str, str]:
    values = {}
    for rest in args_of("ENV"):
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            values[key] = value
    return values


def test_base_image_is_python_311_slim_with_a_build_arg_for_cuda():
    assert "BASE_IMAGE=python:3.11-slim" in args_of("ARG")
    assert args_of("FROM") == ["${BASE_IMAGE}"]
    assert "VARIANT=cpu" in args_of("ARG")
    run = " ".join(args_of("RUN"))
    assert '".[gpu]"' in run and "download.pytorch.org/whl/cpu" in run
    assert "build-essential" in run and "cmake" in run


def test_cmd_runs_reason_ui_on_all_interfaces():
    (cmd,) = args_of("CMD")
    argv = json.loads(cmd)
    assert argv[:4] == ["reason", "ui", "--host", "0.0.0.0"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["reason"] == "app.cli:main"


def test_the_cli_has_the_ui_command_with_the_flags_the_image_uses():
    from app.cli import cli

    ui = cli.commands.get("ui")
    if ui is None:
        pytest.fail("app/cli.py has no `reason ui` command (the Dockerfile's CMD runs it)")
    argv = json.loads(args_of("CMD")[0])
    flags = {opt for param in ui.params for opt in param.opts}
    assert {a for a in argv[2:] if a.startswith("--")} <= flags


def test_copied_files_exist():
    for rest in args_of("COPY"):
        *sources, _ = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the project"


def test_state_lives_in_a_volume_at_reason_home():
    home = env_values()["REASON_HOME"]
    volumes = [v for rest in args_of("VOLUME") for v in (json.loads(rest) if rest.startswith("[") else rest.split())]
    assert home in volumes


def test_pins_match_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    run = " ".join(args_of("RUN"))
    for name in ("torch", "llama-cpp-python"):
        pin = next(d for d in deps if d.startswith(name + "=="))
        assert f'"{pin.split(";")[0].split()[0]}"' in run, f"{name}: the Dockerfile must install {pin}"
