#!/usr/bin/env python3
"""Check .env before `docker compose up`: a real password and free host ports.

    python3 docker/check_env.py [--env-file .env] [--dashboard] && docker compose up -d

Compose itself reports a taken port as "Host is already in use by another
container" (even when the holder is a PostgreSQL on the host) and accepts the
placeholder password. This script says both in one line each, with the fix,
and exits 2; it needs only the Python standard library (not hvit-sweep).
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

# The values .env.example and common guides ship; a stack started with one is open to anyone.
PLACEHOLDERS = frozenset({"change-me", "changeme", "change_me", "replace-me", "password", "postgres"})
# The password is embedded in connection URLs (postgresql+psycopg2://user:PASSWORD@...).
URL_SPECIAL = set("@:/?#%")
# (variable, default, service) for every port the stack publishes.
PORTS = (("POSTGRES_PORT", 5432, "postgres"), ("MLFLOW_PORT", 5000, "mlflow"))
DASHBOARD_PORT = ("DASHBOARD_PORT", 8080, "optuna-dashboard")


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them; comments and blank lines skipped, one level of quotes removed."""
    env: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def port_is_free(host: str, port: int) -> bool:
    """Whether this host can bind ``host:port`` now, as Docker's port publisher will have to."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_near(host: str, port: int) -> int | None:
    """The first free port above ``port`` (to suggest one), or None within 100 tries."""
    return next((p for p in range(port + 1, min(port + 101, 65536)) if port_is_free(host, p)), None)


def password_problem(env: dict[str, str]) -> str | None:
    password = env.get("POSTGRES_PASSWORD", "")
    if not password:
        return "POSTGRES_PASSWORD is not set in .env: set a real one, e.g. the output of `openssl rand -hex 24`"
    if password.lower() in PLACEHOLDERS:
        return (
            f"POSTGRES_PASSWORD is the placeholder {password!r}: set a real one in .env, "
            "e.g. the output of `openssl rand -hex 24`"
        )
    if URL_SPECIAL & set(password):
        return "POSTGRES_PASSWORD contains one of @ : / ? # %, which breaks the connection URLs: use letters and digits"
    return None


def port_problems(env: dict[str, str], *, dashboard: bool) -> list[str]:
    host = env.get("BIND_ADDR") or "127.0.0.1"
    problems = []
    for var, default, service in (*PORTS, DASHBOARD_PORT) if dashboard else PORTS:
        value = env.get(var) or str(default)
        if not value.isdigit() or not 0 < int(value) < 65536:
            problems.append(f"{var}={value!r} is not a port number: set {var} in .env to a free port")
            continue
        if not port_is_free(host, int(value)):
            other = free_port_near(host, int(value))
            hint = f", e.g. {var}={other}" if other else ""
            problems.append(
                f"{var}={value} is taken on {host} (another {service} or program, or this stack already up): "
                f"set {var} in .env to a free port{hint}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=Path(__file__).resolve().parents[1] / ".env")
    parser.add_argument("--dashboard", action="store_true", help="also check DASHBOARD_PORT (--profile dashboard)")
    args = parser.parse_args(argv)
    if not args.env_file.is_file():
        print(
            f"error: {args.env_file} is missing: run `cp .env.example .env` and set POSTGRES_PASSWORD", file=sys.stderr
        )
        return 2
    env = read_env(args.env_file)
    problems = [p for p in [password_problem(env), *port_problems(env, dashboard=args.dashboard)] if p]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"ok: {args.env_file.name} has a real password and its ports are free")
    return 0


if __name__ == "__main__":
    sys.exit(main())
