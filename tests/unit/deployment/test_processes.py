"""Fail closed: certificate checks, the TLS probe of a SuperLink, and the command lines given to Flower."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedsynth.deployment import processes
from fedsynth.deployment.credentials import Credentials, make_credentials


def test_good_server_files_have_no_problem(creds: Credentials) -> None:
    assert processes.check_server_tls(creds.ca_cert, creds.server_cert, creds.server_key) == []


def test_expired_certificate_is_named_with_its_date_and_fix(tmp_path: Path) -> None:
    # Setup: certificates valid for 1 day from two years ago
    old = make_credentials(tmp_path, ["A"], valid_days=1, now=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))

    # Run
    problems = processes.check_server_tls(old.ca_cert, old.server_cert, old.server_key)

    # Assert
    text = "\n".join(map(str, problems))
    assert "--ssl-cert: the certificate expired on 2024-01-01" in text
    assert "fedsynth credentials --overwrite" in text


def test_certificate_from_another_ca_and_a_foreign_key_are_refused(creds: Credentials, other_creds: Credentials) -> None:
    problems = processes.check_server_tls(other_creds.ca_cert, creds.server_cert, other_creds.server_key)
    text = "\n".join(map(str, problems))
    assert "not issued by the CA given as --ssl-ca" in text
    assert "the key does not belong to the server certificate" in text


def test_missing_files_are_all_listed(tmp_path: Path) -> None:
    problems = processes.check_server_tls(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    assert [p.where for p in problems] == ["--ssl-ca", "--ssl-cert", "--ssl-key"]


def test_node_key_checks(creds: Credentials, tmp_path: Path) -> None:
    private, public = creds.node_keys["A"]
    assert processes.check_node_key(private) == []
    assert processes.check_public_key(public) == []
    assert "not an unencrypted OpenSSH private key" in str(processes.check_node_key(public)[0])
    assert "no file" in str(processes.check_public_key(tmp_path / "nope.pub")[0])


@pytest.fixture
def tls_server(creds: Credentials) -> Iterator[int]:
    """A TLS listener on 127.0.0.1 with the development server certificate (a stand-in SuperLink)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(creds.server_cert), str(creds.server_key))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    sock.close()


def test_probe_accepts_the_right_ca(tls_server: int, creds: Credentials) -> None:
    assert processes.probe_superlink(f"127.0.0.1:{tls_server}", creds.ca_cert) is None


def test_probe_refuses_a_wrong_ca_with_a_fix(tls_server: int, other_creds: Credentials) -> None:
    problem = processes.probe_superlink(f"127.0.0.1:{tls_server}", other_creds.ca_cert)
    assert problem is not None and problem.where == "--root-cert"
    assert "certificate was rejected" in problem.found
    assert "coordinator's ca.pem" in problem.fix


def test_probe_says_when_a_host_is_not_in_the_certificate(tls_server: int, creds: Credentials) -> None:
    # 127.0.0.2 is loopback too, but the certificate names only 127.0.0.1 and localhost
    try:
        probe = socket.create_connection(("127.0.0.2", tls_server), timeout=1)
        probe.close()
    except OSError:
        pytest.skip("127.0.0.2 is not routed to the loopback listener here")
    problem = processes.probe_superlink(f"127.0.0.2:{tls_server}", creds.ca_cert)
    assert problem is not None and "does not name 127.0.0.2" in problem.fix


def test_probe_says_nothing_listens(creds: Credentials) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    problem = processes.probe_superlink(f"127.0.0.1:{port}", creds.ca_cert)
    assert problem is not None and "nothing answers" in problem.found


@pytest.mark.parametrize("address", ["localhost", "host:port", ":9093", "h:70000"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(processes.ValidationError, match="is not HOST:PORT"):
        processes.split_address(address)


def test_superlink_command_turns_on_tls_auth_and_no_runtime_install(creds: Credentials) -> None:
    tls = processes.ServerTLS(creds.ca_cert, creds.server_cert, creds.server_key)
    cmd = processes.superlink_command(host="127.0.0.1", port=9093, tls=tls)
    assert Path(cmd[0]).name == "flower-superlink"
    for flag in ("--enable-supernode-auth", "--disable-runtime-dependency-installation", "--ssl-ca-certfile",
                 "--ssl-certfile", "--ssl-keyfile"):
        assert flag in cmd
    assert "--insecure" not in cmd
    insecure = processes.superlink_command(host="127.0.0.1", port=9093, tls=None, node_auth=False)
    assert "--insecure" in insecure and "--enable-supernode-auth" not in insecure


def test_node_config_is_parsed_back_by_flower() -> None:
    from flwr.common.config import parse_config_args

    config = {"site-name": "A", "data-path": "/data/with space/a.csv", "seed": 3, "audit-log": "C:\\x\\o'k.jsonl",
              "schema-path": 'say "hi".yaml'}
    text = processes.node_config_text(config)
    assert parse_config_args([text]) == config
    with pytest.raises(processes.ValidationError, match="holds both"):
        processes.node_config_text({"data-path": "a'b\"c.csv"})


def test_flowers_printed_exit_code_is_found() -> None:
    output = "INFO ...\n\x1b[91mERROR \x1b[0m:     Exit Code: 305\nFailed to initialize the connection\n"
    assert processes.flower_exit_code(output) == 305
    assert processes.flower_exit_code("all fine") is None


def test_stop_ends_what_the_process_started_in_a_session_of_its_own(tmp_path: Path) -> None:
    # Setup: a stand-in for the SuperLink, whose helper (SuperExec) runs in a new session and starts a child there
    # (the ServerApp), as Flower starts them
    import os
    import sys
    import time

    if not Path("/proc").is_dir():
        pytest.skip("stop() finds a process's descendants in /proc (Linux)")
    pids = tmp_path / "pids"
    (tmp_path / "app.py").write_text("import time\ntime.sleep(300)\n")
    (tmp_path / "superexec.py").write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, {str(tmp_path / 'app.py')!r}])\n"
        f"open({str(pids)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n")
    (tmp_path / "superlink.py").write_text(
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'superexec.py')!r}], start_new_session=True)\n"
        "time.sleep(300)\n")
    proc = processes.start([sys.executable, str(tmp_path / "superlink.py")])
    t0 = time.monotonic()
    while not (pids.is_file() and pids.read_text()):
        assert time.monotonic() - t0 < 60 and proc.poll() is None
        time.sleep(0.1)
    grandchild = int(pids.read_text())

    # Run
    processes.stop(proc, grace=5)

    # Assert: the helper's own session is ended with it (the grandchild is gone or a zombie about to be reaped)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        try:
            state = Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state == "Z":
            break
        time.sleep(0.1)
    else:
        os.killpg(os.getpgid(grandchild), 9)  # the stand-in SuperExec's group, with its child
        raise AssertionError("a process started in a session of its own outlived stop()")


def test_sigterm_stops_a_foreground_flower_process_and_its_wrapper(tmp_path: Path) -> None:
    # Setup: `fedsynth server start` / `site start` run Flower in the foreground through run_foreground; docker,
    # systemd and `kill` stop them with SIGTERM. A stand-in child that prints once, then sleeps.
    import signal
    import subprocess
    import sys

    script = tmp_path / "wrapper.py"
    script.write_text(
        "import sys\n"
        "from fedsynth.deployment import processes\n"
        "code, _ = processes.run_foreground([sys.executable, '-c', "
        "\"import time; print('ready', flush=True); time.sleep(600)\"])\n"
        "print('wrapper done', code, flush=True)\n"
    )
    wrapper = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        assert wrapper.stdout is not None
        assert wrapper.stdout.readline().strip() == "ready"

        # Run
        wrapper.send_signal(signal.SIGTERM)
        try:
            out, _ = wrapper.communicate(timeout=120)  # a hang guard, not a timing assertion
        except subprocess.TimeoutExpired:
            pytest.fail("the wrapper did not end after SIGTERM (its handler deadlocked on the child's wait)")
    finally:
        if wrapper.poll() is None:
            os.killpg(wrapper.pid, signal.SIGKILL)
            wrapper.wait()

    # Assert: the wrapper ended after its child, which ended by the forwarded SIGTERM
    assert f"wrapper done -{signal.SIGTERM.value}" in out
