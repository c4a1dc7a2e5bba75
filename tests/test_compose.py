"""Static checks of the container tracking stack (docker-compose.yml, Dockerfiles,
.env.example). No Docker engine is needed; `docker-compose config` only parses
and interpolates the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
MLFLOW_DOCKERFILE = ROOT / "docker" / "mlflow.Dockerfile"
INIT_DIR = ROOT / "docker" / "postgres-init"

SECRET_KEY_RE = re.compile(r"PASSWORD|SECRET|TOKEN", re.IGNORECASE)
# A reference that must come from the environment: ${VAR} or ${VAR:?message}.
REQUIRED_REF_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
URL_CREDS_RE = re.compile(r"://(\$\{[^}]*\}|[^:/@\s]*):(\$\{[^}]*\}|[^@\s/]*)@")
PLACEHOLDERS = {"change-me", "changeme", "change_me", "replace-me", "your-password-here", ""}


# ----------------------------------------------------------------- helpers


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict:
    return load_compose()["services"]


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"malformed line in {path.name}: {line!r}"
        env[key.strip()] = value.strip().strip("'\"")
    return env


def env_dict(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_strings(service: dict) -> list[str]:
    out = []
    for key in ("command", "entrypoint"):
        value = service.get(key)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(str(v) for v in value)
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, str):
        out.append(test)
    elif isinstance(test, list):
        out.extend(str(v) for v in test)
    return out


def depends_condition(service: dict, dep: str) -> str | None:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return "service_started" if dep in deps else None
    entry = deps.get(dep)
    return None if entry is None else (entry or {}).get("condition", "service_started")


def image_is_pinned(ref: str) -> bool:
    if re.search(r"@sha256:[0-9a-f]{64}$", ref):
        return True
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def dockerfile_base_images(path: Path) -> list[str]:
    text = path.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    images = []
    for ref in re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", text, re.MULTILINE):
        ref = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), ref)
        images.append(ref)
    return images


def compose_cmd() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def run_compose(args: list[str], env_file: Path) -> subprocess.CompletedProcess:
    cmd = compose_cmd()
    if cmd is None:
        pytest.skip("neither `docker-compose` nor `docker compose` is installed")
    example = parse_env_file(ENV_EXAMPLE)
    # Start from a clean slate for the stack's variables so the caller's shell
    # (or a developer's real .env) cannot mask a missing one.
    env = {k: v for k, v in os.environ.items() if k not in example and not k.startswith("COMPOSE_")}
    env.update(parse_env_file(env_file))
    return subprocess.run(
        [*cmd, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# ------------------------------------------------------- compose validates


def test_compose_config_validates_with_env_example():
    # `docker-compose config -q` accepts the file when .env.example provides the variables,
    # with no profile and with every profile active.
    proc = run_compose(["config", "-q"], ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    proc = run_compose(["--profile", "gpu", "--profile", "cpu", "--profile", "dashboard", "config", "-q"], ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_compose_refuses_to_start_without_password(tmp_path):
    # A missing POSTGRES_PASSWORD is a hard error (no silent default password).
    env = parse_env_file(ENV_EXAMPLE)
    env.pop("POSTGRES_PASSWORD")
    env_file = tmp_path / "no-password.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    proc = run_compose(["config", "-q"], env_file)
    assert proc.returncode != 0
    assert "POSTGRES_PASSWORD" in proc.stderr + proc.stdout


def test_resolved_ports_bind_loopback():
    # After interpolation with the example env, every published port is on 127.0.0.1.
    proc = run_compose(["--profile", "dashboard", "config"], ENV_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)["services"]
    seen = 0
    for name, svc in resolved.items():
        for port in svc.get("ports") or []:
            seen += 1
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r}"
    assert seen >= 2


# ---------------------------------------------------------- service layout


def test_required_services_exist():
    # The stack defines postgres, mlflow, the GPU and CPU workers and the optional optuna-dashboard.
    assert {"postgres", "mlflow", "worker", "worker-cpu", "optuna-dashboard"} <= set(services())


def test_plain_up_starts_only_postgres_and_mlflow():
    # Without a profile, `docker compose up` starts postgres and mlflow only: nothing reserves a GPU.
    plain = {name for name, svc in services().items() if not svc.get("profiles")}
    assert plain == {"postgres", "mlflow"}
    assert services()["worker"].get("profiles") == ["gpu"]
    assert services()["worker-cpu"].get("profiles") == ["cpu"]
    for name in plain:
        assert "deploy" not in services()[name], name


def test_cpu_worker_is_the_gpu_worker_without_the_reservation():
    # worker-cpu shares image, build, env and dependencies with worker, and reserves no device.
    gpu, cpu = services()["worker"], services()["worker-cpu"]
    for key in ("build", "image", "environment", "depends_on", "volumes", "shm_size"):
        assert gpu.get(key) == cpu.get(key), key
    assert "deploy" not in cpu and "container_name" not in cpu and not cpu.get("ports")


def test_cpu_worker_default_study_runs_on_an_empty_machine():
    # The cpu profile's default study reads synthetic data, so it needs nothing in ./data.
    import tomllib

    cmd = " ".join(services()["worker-cpu"]["command"])
    m = re.fullmatch(r"hvit-sweep worker --study \$\{HVIT_CPU_STUDY:-([\w.-]+)\}", cmd)
    assert m, cmd
    default = m.group(1)
    spec = tomllib.loads((ROOT / "studies" / f"{default}.toml").read_text())
    assert spec["fixed"]["data.dataset"] == "synthetic"
    assert parse_env_file(ENV_EXAMPLE)["HVIT_CPU_STUDY"] == default


def test_postgres_and_mlflow_have_healthchecks():
    # postgres (pg_isready) and mlflow (/health) have healthchecks others can wait on.
    svcs = services()
    pg = " ".join(command_strings({"healthcheck": svcs["postgres"].get("healthcheck")}))
    ml = " ".join(command_strings({"healthcheck": svcs["mlflow"].get("healthcheck")}))
    assert "pg_isready" in pg and "POSTGRES_USER" in pg
    assert "/health" in ml and "5000" in ml


def test_mlflow_waits_for_healthy_postgres():
    # mlflow starts only once postgres is healthy.
    assert depends_condition(services()["mlflow"], "postgres") == "service_healthy"


def test_worker_waits_for_healthy_mlflow_and_postgres():
    # Workers start only once both mlflow and postgres are healthy.
    worker = services()["worker"]
    assert depends_condition(worker, "mlflow") == "service_healthy"
    assert depends_condition(worker, "postgres") == "service_healthy"


def test_dashboard_is_opt_in_profile_on_optuna_db():
    # optuna-dashboard only starts with --profile dashboard and reads the optuna database.
    dash = services()["optuna-dashboard"]
    assert dash.get("profiles") == ["dashboard"]
    storage = env_dict(dash)["OPTUNA_STORAGE"]
    assert re.search(r"^postgresql\+psycopg2://.*@postgres:5432/\$\{OPTUNA_DB:-optuna\}$", storage)
    # Its entry point gets the URL from that variable, not from compose's command line.
    script = " ".join(command_strings(dash))
    assert 'os.environ["OPTUNA_STORAGE"]' in script and "optuna_dashboard._cli import main" in script


def test_every_image_is_pinned():
    # Every compose image and Dockerfile base image has an explicit non-latest tag or digest.
    refs = [svc["image"] for svc in services().values() if "image" in svc]
    refs += dockerfile_base_images(DOCKERFILE) + dockerfile_base_images(MLFLOW_DOCKERFILE)
    assert len(refs) >= 6
    unpinned = [r for r in refs if not image_is_pinned(r)]
    assert not unpinned, f"unpinned images: {unpinned}"
    for name, svc in services().items():
        assert "image" in svc or "build" not in svc, f"{name}: built image needs a tag"


def test_published_ports_bind_loopback_by_default():
    # Published ports use 127.0.0.1 or a ${VAR:-127.0.0.1} bind address, never a bare "5000:5000".
    bind = re.compile(r"^(127\.0\.0\.1|\$\{[A-Z_]+:-127\.0\.0\.1\}):(\d+|\$\{[A-Z_]+(:-\d+)?\}):\d+(/tcp)?$")
    seen = 0
    for name, svc in services().items():
        for port in svc.get("ports") or []:
            seen += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port!r}"
            else:
                assert bind.match(str(port)), f"{name} publishes {port!r}"
    assert seen >= 3


def test_no_inline_secrets():
    # No password literal appears in env values, commands or as a ${VAR:-default}.
    text = COMPOSE_FILE.read_text()
    defaulted = re.findall(r"\$\{([A-Za-z0-9_]*(?:PASSWORD|SECRET|TOKEN)[A-Za-z0-9_]*)[:]?-", text)
    assert not defaulted, f"secret variables with inline defaults: {defaulted}"
    assert not re.search(r"(?i)password\s*=\s*(?!\$\{)\S", text)
    urls_checked = 0
    for name, svc in services().items():
        env = env_dict(svc)
        for key, value in env.items():
            if SECRET_KEY_RE.search(key):
                assert REQUIRED_REF_RE.match(value), f"{name}.{key} is not a ${{VAR:?}} reference"
        for value in [*env.values(), *command_strings(svc)]:
            for user, password in URL_CREDS_RE.findall(value):
                assert REQUIRED_REF_RE.match(password), f"{name}: inline password in {value!r}"
                assert REQUIRED_REF_RE.match(user), f"{name}: inline user in {value!r}"
                urls_checked += 1
    # mlflow backend, dashboard storage and worker HVIT_STORAGE all carry credentials.
    assert urls_checked >= 3


def test_worker_is_scalable_gpu_service():
    # GPU workers (profile gpu) reserve an NVIDIA GPU and have no container_name or host ports (so --scale works).
    worker = services()["worker"]
    assert worker.get("profiles") == ["gpu"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and (d.get("count") or d.get("device_ids"))
        for d in devices
    )
    assert "build" in worker


def test_worker_points_at_stack_services():
    # Workers run `hvit-sweep worker`, store trials in the optuna DB and track to http://mlflow:5000.
    worker = services()["worker"]
    cmd = worker["command"]
    cmd = cmd if isinstance(cmd, str) else " ".join(cmd)
    assert re.match(r"^hvit-sweep worker --study \$\{HVIT_STUDY(:-[\w.-]+)?\}$", cmd)
    env = env_dict(worker)
    assert re.match(r"^postgresql\+psycopg2://.+@postgres:5432/\$\{OPTUNA_DB:-optuna\}$", env["HVIT_STORAGE"])
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "./data:/app/data:ro" in worker.get("volumes", [])


def test_mlflow_server_command():
    # mlflow uses the mlflow DB via psycopg2, serves artifacts from a named volume and binds 0.0.0.0:5000.
    compose = load_compose()
    mlflow_svc = compose["services"]["mlflow"]
    args = mlflow_svc["command"]
    assert args[:2] == ["mlflow", "server"]

    def opt(flag):
        return args[args.index(flag) + 1]

    # SQLAlchemy 2.1 maps bare postgresql:// to psycopg v3; the image ships psycopg2.
    assert "--backend-store-uri" not in args  # from MLFLOW_BACKEND_STORE_URI, off the command line
    backend = env_dict(mlflow_svc)["MLFLOW_BACKEND_STORE_URI"]
    assert re.match(r"^postgresql\+psycopg2://.+@postgres:5432/\$\{MLFLOW_DB:-mlflow\}$", backend)
    assert "--serve-artifacts" in args
    dest = opt("--artifacts-destination")
    assert any(v.split(":")[:2] == ["mlartifacts", dest] for v in mlflow_svc["volumes"])
    assert "mlartifacts" in compose["volumes"]
    assert opt("--host") == "0.0.0.0" and str(opt("--port")) == "5000"
    assert "psycopg2-binary==" in MLFLOW_DOCKERFILE.read_text()


def test_mlflow_allowed_hosts_admit_workers_and_localhost():
    # The default --allowed-hosts lets workers (Host: mlflow:5000) and localhost in, but not arbitrary hosts.
    security = pytest.importorskip("mlflow.server.security_utils")
    args = services()["mlflow"]["command"]
    value = args[args.index("--allowed-hosts") + 1]
    m = re.match(r"^\$\{MLFLOW_ALLOWED_HOSTS:-([^}]*)\}$", value)
    assert m, value
    allowed = [h.strip() for h in m.group(1).split(",")]
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000", "192.168.1.20:5000", "172.18.0.3:5000"):
        assert security.is_allowed_host_header(allowed, host), host
    for host in ("evil.example.com", "172.32.0.1:5000", "8.8.8.8:5000"):
        assert not security.is_allowed_host_header(allowed, host), host


def test_postgres_creates_mlflow_and_optuna_databases():
    # postgres creates the mlflow DB itself and the optuna DB via a mounted init script.
    pg = services()["postgres"]
    env = env_dict(pg)
    assert env["POSTGRES_DB"] == "${MLFLOW_DB:-mlflow}"
    assert env["OPTUNA_DB"] == "${OPTUNA_DB:-optuna}"
    assert "./docker/postgres-init:/docker-entrypoint-initdb.d:ro" in pg["volumes"]
    assert any(v.startswith("pgdata:/var/lib/postgresql/data") for v in pg["volumes"])
    scripts = sorted(INIT_DIR.glob("*.sh")) + sorted(INIT_DIR.glob("*.sql"))
    assert scripts
    body = "\n".join(s.read_text() for s in scripts)
    assert "CREATE DATABASE" in body and "OPTUNA_DB" in body
    if shutil.which("bash"):
        for script in INIT_DIR.glob("*.sh"):
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script


# ------------------------------------------------------- env and build files


def test_env_example_has_only_placeholders_and_all_required_vars():
    # .env.example sets every ${VAR:?} the compose file requires, with placeholder secrets only.
    env = parse_env_file(ENV_EXAMPLE)
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", COMPOSE_FILE.read_text()))
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD"} <= required
    assert required <= set(env), f"missing from .env.example: {required - set(env)}"
    secrets = {k: v for k, v in env.items() if SECRET_KEY_RE.search(k)}
    assert secrets
    for key, value in secrets.items():
        assert value.lower() in PLACEHOLDERS, f"{key} in .env.example looks like a real secret"


def test_dotenv_is_git_and_docker_ignored():
    # The real .env is ignored by git and kept out of the docker build context.
    gitignore = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".env" in gitignore or "/.env" in gitignore
    dockerignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    for entry in (".env", ".venv", "mlruns", "data", "checkpoints", ".git"):
        assert entry in dockerignore, entry
    assert any("__pycache__" in line for line in dockerignore)


def test_worker_dockerfile_layout():
    # The worker image installs the package into /app with studies/ beside it and runs as non-root.
    text = DOCKERFILE.read_text()
    assert re.search(r"^WORKDIR /app$", text, re.MULTILINE)
    for src in ("pyproject.toml", "README.md", "hvit_sweeps/", "studies/"):
        assert re.search(rf"^COPY .*{re.escape(src)}", text, re.MULTILINE), src
    assert re.search(r"pip install --no-cache-dir .*\.\s", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r'^CMD \["hvit-sweep", "--help"\]$', text, re.MULTILINE)
    assert any("cuda" in ref for ref in dockerfile_base_images(DOCKERFILE))


def test_mlflow_image_runs_unprivileged():
    # The MLflow server image switches to a non-root user that owns /mlartifacts.
    text = MLFLOW_DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"chown .*/mlartifacts", text)


def test_dashboard_runs_unprivileged():
    # The dashboard only reads the database; it runs as nobody.
    user = str(services()["optuna-dashboard"].get("user", ""))
    assert user and user.split(":")[0] not in {"root", "0"}


def test_no_secret_on_any_command_line():
    # `ps` shows command lines to every local user: no credential or secret variable is interpolated into
    # a command, entrypoint or healthcheck (a shell's own $$VAR stays a reference inside the container).
    for name, svc in services().items():
        for arg in command_strings(svc):
            assert not URL_CREDS_RE.search(arg), f"{name}: credentials URL on the command line: {arg!r}"
            assert not re.search(r"(?<!\$)\$\{?\w*(PASSWORD|SECRET|TOKEN)", arg), f"{name}: secret in {arg!r}"


def test_mlflow_server_reads_the_backend_store_from_its_environment():
    # The variable compose sets is the one `mlflow server --backend-store-uri` reads.
    cli = pytest.importorskip("mlflow.cli")
    option = next(p for p in cli.server.params if "--backend-store-uri" in p.opts)
    assert option.envvar == "MLFLOW_BACKEND_STORE_URI"
    assert "MLFLOW_BACKEND_STORE_URI" in env_dict(services()["mlflow"])


def test_security_opt_uses_the_equals_form():
    # Docker documents `no-new-privileges=true`; the `:` form is a deprecated alias.
    seen = 0
    for name, svc in services().items():
        for opt in svc.get("security_opt") or []:
            seen += 1
            assert opt == "no-new-privileges=true", f"{name}: {opt!r}"
    assert seen >= 4


def test_postgres_refuses_the_placeholder_password(tmp_path):
    # The postgres entrypoint guard exits 2 with one line for .env.example's password and execs the image's
    # entrypoint otherwise (run here with sh and a fake docker-entrypoint.sh).
    pg = services()["postgres"]
    assert pg["entrypoint"][:2] == ["sh", "-c"] and pg["command"] == ["postgres"]
    script = pg["entrypoint"][2].replace("$$", "$")
    fake = tmp_path / "docker-entrypoint.sh"
    fake.write_text('#!/bin/sh\necho "started $*"\n')
    fake.chmod(0o755)

    def start(password: str) -> subprocess.CompletedProcess:
        env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "POSTGRES_PASSWORD": password}
        args = ["sh", "-c", script, *pg["entrypoint"][3:], *pg["command"]]
        return subprocess.run(args, env=env, capture_output=True, text=True)

    refused = start(parse_env_file(ENV_EXAMPLE)["POSTGRES_PASSWORD"])
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "placeholder" in refused.stderr
    started = start("3f9c0a7d41b2")
    assert started.returncode == 0 and started.stdout == "started postgres\n"


# ------------------------------------------------------ docker/check_env.py

CHECK_ENV = ROOT / "docker" / "check_env.py"


def _check_env(tmp_path: Path, *extra: str, **values: str) -> subprocess.CompletedProcess:
    env = {**parse_env_file(ENV_EXAMPLE), **values}
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return subprocess.run(
        ["python3", str(CHECK_ENV), "--env-file", str(env_file), *extra], capture_output=True, text=True, timeout=60
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


def test_check_env_refuses_the_placeholder_password(tmp_path):
    # .env.example copied unchanged: one line naming the placeholder and how to make a real one.
    ports = {"POSTGRES_PORT": str(_free_port()), "MLFLOW_PORT": str(_free_port())}
    (line,) = _error_lines(_check_env(tmp_path, **ports))
    assert "POSTGRES_PASSWORD is the placeholder 'change-me'" in line and "openssl rand" in line


def test_check_env_names_a_taken_port_and_a_free_one(tmp_path):
    # A port held by another program (here a listening socket, like a host PostgreSQL): one line with the fix.
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        proc = _check_env(
            tmp_path, POSTGRES_PASSWORD="3f9c0a7d41b2", POSTGRES_PORT=str(taken), MLFLOW_PORT=str(_free_port())
        )
    (line,) = _error_lines(proc)
    assert f"POSTGRES_PORT={taken} is taken on 127.0.0.1" in line
    suggested = int(re.search(r"e\.g\. POSTGRES_PORT=(\d+)", line).group(1))
    assert suggested > taken


def test_check_env_passes_a_real_env_and_checks_the_dashboard_port_on_request(tmp_path):
    import socket

    values = {"POSTGRES_PASSWORD": "3f9c0a7d41b2", "POSTGRES_PORT": str(_free_port()), "MLFLOW_PORT": str(_free_port())}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        values["DASHBOARD_PORT"] = str(held.getsockname()[1])
        plain = _check_env(tmp_path, **values)
        dash = _check_env(tmp_path, "--dashboard", **values)
    assert plain.returncode == 0 and plain.stdout.startswith("ok: "), plain.stderr
    (line,) = _error_lines(dash)
    assert line.startswith(f"error: DASHBOARD_PORT={values['DASHBOARD_PORT']} is taken")


def test_check_env_without_a_dotenv_says_how_to_make_one(tmp_path):
    proc = subprocess.run(
        ["python3", str(CHECK_ENV), "--env-file", str(tmp_path / ".env")], capture_output=True, text=True
    )
    (line,) = _error_lines(proc)
    assert "cp .env.example .env" in line


def test_readme_checks_the_env_before_up():
    # The README's compose commands run the check before the first `docker compose up`.
    text = (ROOT / "README.md").read_text()
    check = text.index("python3 docker/check_env.py")
    assert check < text.index("docker compose up -d")
    assert "POSTGRES_PORT" in text
