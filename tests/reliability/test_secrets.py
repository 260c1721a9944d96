"""Secrets of the infra/ scripts: the database password is never on a command line (any local user reads every
process's argv, e.g. with `ps`), and the files holding it are mode 0600 from their creation."""

import re
import socket
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from orchestration.deployments import REPO_ROOT
from tests.conftest import child_env

INFRA = REPO_ROOT / "infra"


def run(script: str, *args: str, state: Path, umask: str = "022", **env: str) -> subprocess.CompletedProcess:
    """An infra script as a user would run it, under a permissive umask (the scripts must not rely on the caller's)."""
    environ = child_env(FLIGHTLINE_STATE_DIR=str(state), **env)
    for var in ("FLIGHTLINE_PG_PASSWORD", "MLFLOW_BACKEND_STORE_URI"):
        environ.pop(var, None)
    command = f'umask {umask} && exec bash "$0" "$@"'
    return subprocess.run(
        ["bash", "-c", command, str(INFRA / script), *args],
        env=environ,
        cwd=state,
        capture_output=True,
        text=True,
        timeout=300,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def code_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]


def test_no_script_puts_a_backend_store_uri_or_a_password_on_a_command_line():
    scripts = sorted(INFRA.glob("*.sh"))
    assert {p.name for p in scripts} >= {"stack.sh", "postgres.sh", "mlflow-server.sh"}
    # A URI with the password may only be printed (echo is a builtin: no process gets it as argv).
    offending = [
        f"{p.name}: {line.strip()}"
        for p in scripts
        for line in code_lines(p)
        if "--backend-store-uri" in line
        or "--password" in line
        or (":$(password)@" in line and not line.lstrip().startswith("echo "))
    ]
    assert offending == []
    # what initdb reads, and the env file: never opened to others, not even for a moment
    assert [
        f"{p.name}: {line.strip()}"
        for p in scripts
        for line in code_lines(p)
        if re.search(r"chmod [0-7]?[0-7][4-7][4-7]", line)
    ] == []
    assert "pwfile=$(umask 077 && mktemp)" in (INFRA / "postgres.sh").read_text()
    assert "(umask 077 && head -c 18 /dev/urandom" in (INFRA / "postgres.sh").read_text()


def test_the_generated_password_file_is_private_even_under_a_permissive_umask(tmp_path):
    url = run("postgres.sh", "url", "mlflow", state=tmp_path)
    assert url.returncode == 0, url.stderr
    password = (tmp_path / "postgres.password").read_text().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", password)
    assert url.stdout.strip() == f"postgresql+psycopg2://flightline:{password}@127.0.0.1:55432/mlflow"
    assert mode(tmp_path / "postgres.password") == 0o600

    (tmp_path / "postgres.password").chmod(0o644)  # written by an older version of the script
    assert run("postgres.sh", "url", "dagster", state=tmp_path).returncode == 0
    assert mode(tmp_path / "postgres.password") == 0o600
    assert (tmp_path / "postgres.password").read_text().strip() == password  # kept, not regenerated


def test_the_env_file_is_private_and_replaced_not_rewritten_in_place(tmp_path):
    (tmp_path / "infra.env").write_text("# an old one\n")
    (tmp_path / "infra.env").chmod(0o644)
    written = run("stack.sh", "env", state=tmp_path, MLFLOW_SERVER_PORT="5999")
    assert written.returncode == 0, written.stderr
    password = (tmp_path / "postgres.password").read_text().strip()
    assert mode(tmp_path / "infra.env") == 0o600 and mode(tmp_path / "postgres.password") == 0o600
    env = subprocess.run(
        ["bash", "-c", f"source '{tmp_path / 'infra.env'}' && env -0"], capture_output=True, check=True
    ).stdout.decode()
    exported = dict(item.split("=", 1) for item in env.split("\0") if "=" in item)
    assert (
        exported["FLIGHTLINE_DAGSTER_PG_URL"] == f"postgresql+psycopg2://flightline:{password}@127.0.0.1:55432/dagster"
    )
    assert exported["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["infra.env", "postgres.password"]  # no temporary file left


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdlines_containing(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:  # gone meanwhile
                continue
            if marker.encode() in argv:
                found.append(f"{proc.name}: {argv.replace(bytes(1), b' ').decode(errors='replace')}")
    return found


@pytest.mark.reliability  # starts a real MLflow server: make test-reliability
def test_the_mlflow_server_gets_its_backend_store_uri_through_the_environment_only(tmp_path):
    """A real server through infra/mlflow-server.sh: it uses the store it was given, and no process has the URI in its
    argv (a PostgreSQL URI holds the password; here a unique marker in a sqlite path stands for it)."""
    marker = f"secret-{uuid.uuid4().hex}"
    store = tmp_path / f"{marker}.db"
    port = str(free_port())
    env = {
        "MLFLOW_SERVER_PORT": port,
        "MLFLOW_SERVER_BACKEND_URI": f"sqlite:///{store}",
        "MLFLOW_SERVER_START_TIMEOUT": "240",
    }
    started = run("mlflow-server.sh", "start", state=tmp_path, **env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.strip().endswith(
            f"http://127.0.0.1:{port}, backend sqlite, artifacts {tmp_path}/mlflow-server/artifacts"
        )
        pid = int((tmp_path / "mlflow-server" / "server.pid").read_text().split()[0])
        group = subprocess.run(["ps", "-o", "pid=", "-g", str(pid)], capture_output=True, text=True).stdout.split()
        assert len(group) >= 2  # the mlflow CLI and its uvicorn worker are up ...
        assert store.is_file() and store.stat().st_size > 0  # ... on the store given through the environment
        assert not (tmp_path / "mlflow.db").exists()  # not MLflow's default store in the working folder
        assert cmdlines_containing(marker) == []
    finally:
        stopped = run("mlflow-server.sh", "stop", state=tmp_path, **env)
    assert stopped.returncode == 0 and stopped.stdout.strip().startswith("mlflow server stopped (pid ")
