"""Dockerfile and compose.yaml agree with the CLI; the image itself is built only where a docker daemon runs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import click
import pytest
import typer
import yaml

from fedsynth.cli import app

ROOT = Path(__file__).resolve().parents[3]


def _compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _parse(argv: list[str]) -> dict[str, object]:
    """Parse ``fedsynth ARGV`` as the CLI would (click raises on an unknown command or option); the leaf's params."""
    command: click.Command = typer.main.get_command(app)
    ctx = command.make_context("fedsynth", list(argv))
    while isinstance(command, click.Group):
        rest = [*getattr(ctx, "protected_args", []), *ctx.args]
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)
    return dict(ctx.params)


def _container_paths(argv: list[str]) -> list[PurePosixPath]:
    """Absolute paths a command reads or writes; ``--credentials DIR`` stands for the three files read from it."""
    paths = []
    for i, arg in enumerate(argv):
        if not arg.startswith("/"):
            continue
        if i and argv[i - 1] == "--credentials":
            paths += [PurePosixPath(arg) / f for f in ("ca.pem", "server.pem", "server.key")]
        else:
            paths.append(PurePosixPath(arg))
    return paths


def _is_mounted(path: PurePosixPath, mounts: list[PurePosixPath]) -> bool:
    return any(path == m or m in path.parents for m in mounts)


def _mount_targets(service: dict) -> list[PurePosixPath]:  # type: ignore[type-arg]
    return [PurePosixPath(v.split(":")[1]) for v in service.get("volumes", [])]


def test_every_compose_command_is_one_the_cli_accepts() -> None:
    # Setup
    services = _compose()["services"]
    commands = {name: s["command"] for name, s in services.items() if "command" in s}

    # Run: parse each as the image's entry point (fedsynth) would
    params = {name: _parse(cmd) for name, cmd in commands.items()}

    # Assert: the coordinator listens where the sites and the registrations connect, and the port is published
    link = params["superlink"]
    published = {p.split(":")[1] for p in services["superlink"]["ports"]}
    assert str(link["port"]) in published
    for name in ("site-A", "site-B", "site-C", "register-A", "register-B", "register-C"):
        assert params[name]["superlink"] == f"superlink:{link['port']}", name
    assert {params[f"site-{s}"]["name"] for s in "ABC"} == set("ABC")


def test_every_container_path_in_a_command_is_mounted() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        if "command" not in service:
            continue
        mounts = _mount_targets(service)
        for path in _container_paths(service["command"]):
            assert _is_mounted(path, mounts), f"{name}: {path} is not mounted ({mounts})"


def test_the_documented_coordinator_run_is_one_the_cli_accepts() -> None:
    # Setup: the `docker compose run --rm coordinator ...` line in compose.yaml's header
    header = [line.lstrip("# ").rstrip() for line in (ROOT / "compose.yaml").read_text().splitlines()
              if line.startswith("#")]
    start = next(i for i, line in enumerate(header) if "docker compose run --rm coordinator" in line)
    text = header[start].split("docker compose run --rm coordinator", 1)[1] + " " + header[start + 1]

    # Run
    params = _parse(shlex.split(text))

    # Assert: its paths lie in the coordinator service's mounts
    mounts = _mount_targets(_compose()["services"]["coordinator"])
    for path in (params["config"], params["root_cert"]):
        assert _is_mounted(PurePosixPath(str(path)), mounts), path
    assert params["federation"] and params["num_sites"] == 3


def test_dockerfile_runs_the_cli_and_ships_what_the_deployed_app_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fedsynth"]' in text
    assert "torch==2.13.0" in text  # pinned, as in pyproject.toml: an unpinned torch pulls CUDA builds
    assert "COPY src ./src" in text and "pip install ." in text


def _docker_daemon() -> str | None:
    """Why docker cannot be used here, or ``None`` when a daemon answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          check=False, timeout=60)
    if done.returncode != 0 or not done.stdout.strip():
        return "no docker daemon answers (`docker info` failed): the image is built only where docker runs"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_docker_daemon() is not None, reason=str(_docker_daemon()))
def test_image_builds_and_its_entry_point_checks_inputs(tmp_path: Path) -> None:
    # Setup: the image (needs the network for python:3.11-slim and the CPU torch wheel)
    subprocess.run(["docker", "build", "-t", "fedsynth-test", str(ROOT)], check=True, timeout=3600)

    # Run: fail closed inside the image too, and a dry run of the SuperLink command
    refused = subprocess.run(["docker", "run", "--rm", "fedsynth-test", "server", "start", "--dry-run"],
                             capture_output=True, text=True, check=False, timeout=300)
    insecure = subprocess.run(["docker", "run", "--rm", "fedsynth-test", "server", "start", "--insecure",
                               "--dry-run"], capture_output=True, text=True, check=False, timeout=300)

    # Assert
    assert refused.returncode == 2 and "does not start without TLS" in refused.stderr
    assert insecure.returncode == 0 and "flower-superlink" in insecure.stdout
