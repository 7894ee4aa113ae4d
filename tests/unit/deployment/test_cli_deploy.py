"""The deployment commands: fail closed with one actionable message (exit 2), and what they write."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsynth.cli import app
from fedsynth.deployment import flower_config
from fedsynth.deployment.credentials import Credentials

runner = CliRunner()


def _smoke():  # type: ignore[no-untyped-def]
    from fedsynth.experiments.config import load_config

    return load_config("configs/smoke.yaml")


def _smoke_schema():  # type: ignore[no-untyped-def]
    from fedsynth.cohort.datasets import NAMED_COHORTS

    return NAMED_COHORTS["mds-iwgpm"].schema_factory()


def test_credentials_command_writes_every_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["credentials", "--out", str(tmp_path / "c"), "--sites", "A,B", "--format", "json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)
    assert Path(files["ca"]).is_file() and Path(files["nodes"]["B"]["public"]).is_file()


def test_server_refuses_to_start_without_certificates() -> None:
    result = runner.invoke(app, ["server", "start", "--dry-run"])
    assert result.exit_code == 2
    assert "does not start without TLS" in result.stderr and "--insecure" in result.stderr
    assert "Traceback" not in result.output


def test_server_start_with_credentials_builds_the_secure_command(creds: Credentials) -> None:
    result = runner.invoke(app, ["server", "start", "--credentials", str(creds.ca_cert.parent), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--enable-supernode-auth" in result.stdout and "--ssl-certfile" in result.stdout


def test_server_insecure_is_allowed_and_said(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "start", "--insecure", "--dry-run"])
    assert result.exit_code == 0
    assert "WITHOUT TLS" in result.stderr and "--insecure" in result.stdout


def _site_files(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "a.csv"
    data.write_text("AGE,SEX\n50,F\n60,M\n")
    schema = tmp_path / "schema.yaml"
    schema.write_text("name: t\ncolumns:\n- {name: AGE, kind: integer, role: clinical}\n"
                      "- {name: SEX, kind: categorical, role: clinical}\n")
    return data, schema


def test_site_refuses_to_start_without_a_root_certificate(tmp_path: Path) -> None:
    data, schema = _site_files(tmp_path)
    result = runner.invoke(app, ["site", "start", "--superlink", "127.0.0.1:9", "--data", str(data),
                                 "--schema", str(schema), "--name", "A", "--dry-run"])
    assert result.exit_code == 2
    assert "does not connect without TLS" in result.stderr and "--insecure" in result.stderr


def test_site_hands_its_holdout_to_its_node_given_or_found_beside_the_data(tmp_path: Path) -> None:
    # Setup: something listening where the SuperLink would be (the site probes it before a dry run)
    import socket

    data, schema = _site_files(tmp_path)
    holdout = tmp_path / "a.holdout.csv"
    holdout.write_text(data.read_text())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        args = ["site", "start", "--superlink", address, "--data", str(data), "--schema", str(schema), "--name", "A",
                "--insecure", "--dry-run"]

        # Run: the holdout beside the data is found; an explicit one that does not exist is refused
        found = runner.invoke(app, args)
        missing = runner.invoke(app, [*args, "--holdout", str(tmp_path / "none.csv")])

    # Assert
    assert found.exit_code == 0, found.output
    assert f"holdout-path='{holdout.resolve()}'" in " ".join(shlex.split(found.stdout))
    assert missing.exit_code == 2 and "--holdout: no file" in missing.stderr


def test_site_dry_run_prints_one_line_a_shell_reads_back_as_the_command(tmp_path: Path, creds: Credentials) -> None:
    # Setup: a long path (the printed command is wider than any terminal) and something listening
    import socket

    folder = tmp_path / ("hospital-" + "a" * 60)
    folder.mkdir()
    data, schema = _site_files(folder)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"

        # Run
        result = runner.invoke(app, ["site", "start", "--superlink", address, "--data", str(data), "--schema",
                                     str(schema), "--name", "A", "--insecure", "--port", "9200", "--dry-run"])

    # Assert: one line; --node-config is one argument holding every key, as Flower reads it
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])
    node_config = argv[argv.index("--node-config") + 1]
    assert node_config.startswith("site-name='A' ") and f"data-path='{data.resolve()}'" in node_config
    assert argv[argv.index("--port") + 1] == "9200" and "--insecure" in argv


def test_site_lists_every_input_problem_at_once(tmp_path: Path, creds: Credentials) -> None:
    result = runner.invoke(app, ["site", "start", "--superlink", "127.0.0.1:9", "--data", str(tmp_path / "a.pkl"),
                                 "--schema", str(tmp_path / "none.yaml"), "--name", "bad name",
                                 "--root-cert", str(tmp_path / "ca.pem"), "--key", str(creds.node_keys["A"][1])])
    assert result.exit_code == 2
    for piece in ("--name", "--schema: no file", "--data: no file", "--root-cert: no file",
                  "--key", "5 problems"):
        assert piece in result.stderr, piece


def test_site_refuses_pickle(tmp_path: Path) -> None:
    _, schema = _site_files(tmp_path)
    pkl = tmp_path / "a.pkl"
    pkl.write_bytes(b"x")
    result = runner.invoke(app, ["site", "start", "--superlink", "127.0.0.1:9", "--data", str(pkl),
                                 "--schema", str(schema), "--name", "A", "--insecure", "--dry-run"])
    assert result.exit_code == 2 and "pickle is never read" in result.stderr


def test_site_reports_nothing_listening(tmp_path: Path, creds: Credentials) -> None:
    import socket

    data, schema = _site_files(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = runner.invoke(app, ["site", "start", "--superlink", f"127.0.0.1:{port}", "--data", str(data),
                                 "--schema", str(schema), "--name", "A", "--root-cert", str(creds.ca_cert),
                                 "--key", str(creds.node_keys["A"][0]), "--dry-run"])
    assert result.exit_code == 2 and "nothing answers" in result.stderr


def test_site_audit_json(tmp_path: Path) -> None:
    from fedsynth.deployment.audit import append_entry

    log = tmp_path / "a.jsonl"
    append_entry(log, {"time": "t", "site": "A", "run_id": 1, "message_type": "query.hello", "round": "hello",
                       "error": False, "bytes": 5, "fields": {"info": {"kind": "identity", "bytes": 5}}})
    result = runner.invoke(app, ["site", "audit", str(log), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["by_kind"] == {"identity": {"fields": 1, "bytes": 5}}
    missing = runner.invoke(app, ["site", "audit", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "audit.jsonl" in missing.stderr


def test_connection_entry_is_read_back_by_flower(flwr_home: Path, creds: Credentials) -> None:
    from flwr.cli.flower_config import read_superlink_connection

    path = flower_config.write_connection("lab", "127.0.0.1:9093", root_cert=creds.ca_cert)
    conn = read_superlink_connection("lab")
    assert path == flwr_home / "config.toml"
    assert conn.address == "127.0.0.1:9093" and conn.root_certificates == str(creds.ca_cert.resolve())
    assert conn.insecure is False
    flower_config.write_connection("lab", "127.0.0.1:9999", root_cert=None, insecure=True)
    assert read_superlink_connection("lab").insecure is True


def test_connection_needs_a_certificate_or_insecure(flwr_home: Path) -> None:
    with pytest.raises(flower_config.ValidationError, match="no root certificate given"):
        flower_config.write_connection("lab", "127.0.0.1:9093", root_cert=None)


def test_run_config_crosses_into_kebab_case_with_json_mappings(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    from fedsynth.strategies.records import decode_payload

    path = flower_config.write_run_config(tmp_path / "rc.toml", {"min_sites": 2, "generator_params": {"a": 1},
                                                                  "model_dir": tmp_path, "skip": None})
    parsed = parse_config_args([str(path)])
    assert parsed == {"min-sites": 2, "generator-params": parsed["generator-params"], "model-dir": str(tmp_path)}
    assert decode_payload(parsed["generator-params"]) == {"a": 1}


def test_shipped_app_is_a_valid_flower_app_naming_fedsynths_apps() -> None:
    from flwr.cli.config_utils import load_and_validate

    config, errors = load_and_validate(flower_config.app_dir() / "pyproject.toml", check_module=True)
    assert errors == []
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "fedsynth.experiments.deployed:app",
                          "clientapp": "fedsynth.federation.client_app:app"}
    # every key the ServerApp reads has a default Flower can override (Flower drops keys without one)
    from fedsynth.experiments.deployed import run_config_settings

    written = set(flower_config.run_config(run_config_settings(_smoke(), _smoke_schema(), num_sites=3)))
    assert written == set(config["tool"]["flwr"]["app"]["config"])


def test_run_federation_submits_the_shipped_app_with_the_experiments_settings(
    tmp_path: Path, flwr_home: Path, creds: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Setup: flwr run replaced by a stand-in that records its command and writes what the ServerApp would
    from flwr.common.config import parse_config_args

    from fedsynth.deployment import processes

    calls: list[list[str]] = []

    submitted: dict[str, object] = {}

    def fake_run(cmd: list[str], **_: object) -> tuple[int, str]:
        from fedsynth.experiments.deployed import read_run_config

        calls.append(cmd)
        submitted.update(parse_config_args([cmd[cmd.index("--run-config") + 1]]))
        config = read_run_config(submitted).config
        run_dir = Path(config.output.dir) / str(config.output.run_id)
        run_dir.mkdir(parents=True)
        (run_dir / "manifest.json").write_text(json.dumps({
            "status": "finished", "sites": [{"name": "A", "n_rows": 10}],
            "dropped": [{"site": "C", "round": "counts-002", "message_type": "query.counts",
                         "reason": "no reply within 5 s"}]}))
        return 0, ""

    monkeypatch.setattr(processes, "run_foreground", fake_run)

    # Run
    result = runner.invoke(app, ["run", "configs/smoke.yaml", "--federation", "lab", "--superlink", "127.0.0.1:9093",
                                 "--root-cert", str(creds.ca_cert), "--out", str(tmp_path / "r"),
                                 "--set", "output.run_id=x", "--set", "strategy.params.request_timeout=5"])

    # Assert: Flower's connection written, flwr run called on the shipped app, settings in kebab case
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "r" / "x"
    assert "Run directory (on this machine, the coordinator's)" in result.stdout and "left out" in result.stderr
    # the path is on the line it names, whatever the terminal's width (a user copies it)
    assert f"Run directory (on this machine, the coordinator's): {run_dir}\n" in result.stdout
    cmd = calls[0]
    assert Path(cmd[0]).name == "flwr" and cmd[1:4] == ["run", str(flower_config.app_dir()), "lab"]
    from fedsynth.experiments.deployed import read_run_config

    settings = read_run_config(submitted)
    assert settings.num_sites == 3 and not settings.resume
    assert settings.config.strategy.name == "two_step_bn" and settings.config.strategy.params == {"request_timeout": 5}
    assert settings.config.output.dir == str((tmp_path / "r").resolve()) and settings.config.output.run_id == "x"
    assert settings.schema.model_columns == _smoke_schema().model_columns
    assert "site C in counts-002" in " ".join(result.stderr.split())
    assert f"Report:{(run_dir / 'report.html').resolve()}" in "".join(result.stdout.split())
    assert 'address = "127.0.0.1:9093"' in (flwr_home / "config.toml").read_text()
