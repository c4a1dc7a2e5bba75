#!/usr/bin/env python3
"""Wiring-test harness for the compose stack: local stand-ins for the public images.

    python docker/standins/harness.py check     # is there a Docker engine (starts dockerd as root)?
    python docker/standins/harness.py build     # stand-ins + the project's own images

It builds, from Debian packages (debootstrap) and PyPI only, local images
tagged with exactly the public names that docker-compose.yml and the
Dockerfiles use (postgres, ghcr.io/mlflow/mlflow, pytorch/pytorch,
ghcr.io/optuna/optuna-dashboard), so that the project's compose file and
Dockerfiles are built and started unchanged on a machine that cannot reach an
image registry. This tests the WIRING (service names, ports, env, volumes,
healthchecks, init scripts, users, the project's Dockerfiles), not the public
images' contents: a stand-in only honours what this project relies on.

A tag that already exists and is not a stand-in (a real public image) is used
as it is and never overwritten. A stand-in whose recipe hash matches its
label is not rebuilt. Every failure is one line: HarnessError's message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
LABEL = "org.hvit-sweep.standin"  # value: recipe hash
BASE_TAG = "hvit-standin/debian:bookworm"
DEBIAN_MIRROR = os.environ.get("HVIT_STANDIN_MIRROR", "http://deb.debian.org/debian")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NOTICE = (
    "stand-ins: local images built from Debian packages and PyPI, tagged with the public names; "
    "this tests the stack's wiring, not the public images' contents"
)


class HarnessError(RuntimeError):
    """A harness failure; str() is the one line to show."""


class EngineUnavailable(HarnessError):
    """No Docker engine could be reached or started."""


def log(msg: str) -> None:
    print(f"[standins] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    base = os.environ.get("HVIT_STANDIN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hvit-sweep-standins"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _tail(text: str, n: int = 8) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def run(cmd: list[str], *, check: bool = True, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    try:
        proc = subprocess.run(cmd, timeout=timeout, **kw)
    except FileNotFoundError as exc:
        raise HarnessError(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"`{' '.join(cmd[:4])} ...` timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise HarnessError(
            f"`{' '.join(cmd[:4])} ...` failed ({proc.returncode}): {_tail((proc.stderr or '') + (proc.stdout or ''), 4)}"
        )
    return proc


# ------------------------------------------------------------------ engine


def engine_ok() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def ensure_engine(start: bool = True, wait_s: float = 60) -> None:
    """Make sure a Docker engine answers; as root, start `dockerd --iptables=false` if none runs."""
    if engine_ok():
        return
    if not shutil.which("docker"):
        raise EngineUnavailable(
            "no Docker engine: the `docker` client is not installed (Debian: apt-get install docker.io)"
        )
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if not start or dockerd is None:
        raise EngineUnavailable(
            "no Docker engine: `docker info` fails and no dockerd to start (Debian: apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine: `docker info` fails and starting dockerd needs root")
    logfile = cache_dir() / "dockerd.log"
    log(f"starting dockerd --iptables=false (log: {logfile})")
    with open(logfile, "ab") as fh:
        subprocess.Popen(
            [dockerd, "--iptables=false"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if engine_ok():
            return
        time.sleep(1)
    raise EngineUnavailable(
        f"no Docker engine: dockerd did not answer within {wait_s:.0f}s; "
        f"last log lines: {_tail(logfile.read_text(errors='replace'), 4)}"
    )


def compose_cmd() -> list[str]:
    """`docker compose` (v2) if present, else Debian's `docker-compose` (v1)."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise EngineUnavailable(
        "no compose: neither `docker compose` nor `docker-compose` is installed (Debian: apt-get install docker-compose)"
    )


# ------------------------------------------------------------------ images


def image_label(tag: str) -> str | None:
    """None if the tag is absent; "" if present but not a stand-in; else the stand-in's hash."""
    proc = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout.strip() or "null") or {}
    return labels.get(LABEL, "")


def image_id(tag: str) -> str:
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip()


def docker_build(
    tag: str,
    context: Path,
    dockerfile: Path,
    *,
    build_args: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    what: str,
) -> None:
    """`docker build --network host` (the classic builder), full log to the cache; one-line error."""
    logfile = cache_dir() / "logs" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) + ".build.log")
    logfile.parent.mkdir(exist_ok=True)
    cmd = ["docker", "build", "--network", "host", "--force-rm", "-f", str(dockerfile), "-t", tag]
    for key, value in (build_args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    for key, value in (labels or {}).items():
        cmd += ["--label", f"{key}={value}"]
    cmd.append(str(context))
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    log(f"building {what} -> {tag} (log: {logfile})")
    t0 = time.monotonic()
    with open(logfile, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise HarnessError(
            f"build of {what} ({tag}) failed: {_tail(logfile.read_text(errors='replace'), 3)} (full log: {logfile})"
        )
    log(f"built {tag} in {time.monotonic() - t0:.0f}s")


@dataclass
class StandIn:
    tag: str  # the public name, exactly as the project's files spell it
    recipe: str  # folder under docker/standins/
    build_args: dict[str, str] = field(default_factory=dict)


def _first(pattern: str, text: str, what: str) -> str:
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        raise HarnessError(f"cannot find {what} in the project's files")
    return m.group(1)


def wanted_standins() -> list[StandIn]:
    """The public images the compose file and Dockerfiles name, read from those files."""
    import yaml

    compose = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    pg = compose["postgres"]["image"]
    dash = compose["optuna-dashboard"]["image"]
    mlflow_df = (ROOT / compose["mlflow"]["build"]["dockerfile"]).read_text()
    mlflow = _first(r"^FROM\s+(\S+)", mlflow_df, "the MLflow base image")
    worker_df = (ROOT / compose["worker"]["build"]["dockerfile"]).read_text()
    torch_img = _first(r"^ARG\s+BASE_IMAGE=(\S+)", worker_df, "the worker's BASE_IMAGE")

    torch_version = torch_img.rsplit(":", 1)[1].split("-")[0]
    major, minor = (int(x) for x in torch_version.split(".")[:2])
    if major != 2:
        raise HarnessError(f"no torchvision mapping for torch {torch_version}")
    # torchvision 0.(minor+15) pairs with torch 2.minor (2.4 -> 0.19 ... 2.14 -> 0.29).
    torchvision_version = os.environ.get("HVIT_STANDIN_TORCHVISION", f"0.{minor + 15}")
    torch_version = os.environ.get("HVIT_STANDIN_TORCH", torch_version)
    if torch_version.count(".") == 1:
        torch_version += ".0"
    if torchvision_version.count(".") == 1:
        torchvision_version += ".0"
    return [
        StandIn(pg, "postgres"),
        StandIn(mlflow, "mlflow", {"MLFLOW_VERSION": mlflow.rsplit(":", 1)[1].lstrip("v")}),
        StandIn(torch_img, "pytorch", {"TORCH_VERSION": torch_version, "TORCHVISION_VERSION": torchvision_version}),
        StandIn(dash, "optuna-dashboard", {"DASHBOARD_VERSION": dash.rsplit(":", 1)[1].lstrip("v")}),
    ]


def _hash_files(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ensure_base() -> str:
    """hvit-standin/debian:bookworm: debootstrap minbase + this host's CA bundle for pip in builds."""
    ca = CA_BUNDLE.read_bytes() if CA_BUNDLE.exists() else b""
    recipe = f"debootstrap --variant=minbase --include=ca-certificates bookworm {DEBIAN_MIRROR}\n".encode() + ca
    want = hashlib.sha256(recipe).hexdigest()[:16]
    if image_label(BASE_TAG) == want:
        log(f"{BASE_TAG} is cached")
        return BASE_TAG
    root_tag = "hvit-standin/debian-rootfs:bookworm"
    if image_label(root_tag) is None:
        if not shutil.which("debootstrap"):
            raise HarnessError(
                "cannot build the base stand-in: debootstrap is not installed (Debian: apt-get install debootstrap)"
            )
        if os.geteuid() != 0:
            raise HarnessError("cannot build the base stand-in: debootstrap needs root")
        work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir()))
        logfile = cache_dir() / "logs" / "debootstrap.log"
        logfile.parent.mkdir(exist_ok=True)
        log(f"debootstrap --variant=minbase bookworm (a few minutes; log: {logfile})")
        t0 = time.monotonic()
        try:
            with open(logfile, "w") as fh:
                proc = subprocess.run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        "--include=ca-certificates",
                        "bookworm",
                        str(work / "root"),
                        DEBIAN_MIRROR,
                    ],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                )
            if proc.returncode != 0:
                raise HarnessError(
                    f"debootstrap failed: {_tail(logfile.read_text(errors='replace'), 3)} (full log: {logfile})"
                )
            # Keep the image small: no apt caches.
            shutil.rmtree(work / "root" / "var" / "cache" / "apt" / "archives", ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(work / "root"), "-c", "."], stdout=subprocess.PIPE)
            imp = subprocess.run(["docker", "import", "-", root_tag], stdin=tar.stdout, capture_output=True, text=True)
            tar.stdout.close()
            tar.wait()
            if imp.returncode != 0 or tar.returncode != 0:
                raise HarnessError(f"docker import of the debootstrap root failed: {_tail(imp.stderr, 2)}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log(f"{root_tag} imported in {time.monotonic() - t0:.0f}s")
    ctx = Path(tempfile.mkdtemp(prefix="base-", dir=cache_dir()))
    try:
        (ctx / "host-ca.crt").write_bytes(ca)
        (ctx / "Dockerfile").write_text(
            f"FROM {root_tag}\n"
            "# This machine's CA bundle, so that pip and apt inside builds reach the registries.\n"
            + ("COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt\n" if ca else "")
            + "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \\\n"
            "    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 LANG=C.UTF-8\n"
            'CMD ["bash"]\n'
        )
        docker_build(BASE_TAG, ctx, ctx / "Dockerfile", labels={LABEL: want}, what="the Debian base stand-in")
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return BASE_TAG


def ensure_standins(*, force: bool = False) -> dict[str, str]:
    """Build (or reuse) every stand-in; returns {public tag: 'stand-in' | 'cached stand-in' | 'real image'}."""
    log(NOTICE)
    result: dict[str, str] = {}
    todo = []
    for s in wanted_standins():
        state = image_label(s.tag)
        if state == "":
            log(f"{s.tag} exists and is not a stand-in: using it as it is")
            result[s.tag] = "real image"
        else:
            todo.append((s, state))
    if not todo:
        return result
    base = ensure_base()
    base_id = image_id(base)
    for s, state in todo:
        recipe_dir = HERE / s.recipe
        files = [p for p in recipe_dir.iterdir() if p.is_file()]
        want = _hash_files(files, json.dumps([base_id, s.build_args], sort_keys=True))
        if state == want and not force:
            log(f"{s.tag} stand-in is cached ({want})")
            result[s.tag] = "cached stand-in"
            continue
        docker_build(
            s.tag,
            recipe_dir,
            recipe_dir / "Dockerfile",
            build_args={"STANDIN_BASE": base, **s.build_args},
            labels={LABEL: want},
            what=f"the {s.recipe} stand-in",
        )
        result[s.tag] = "stand-in"
    return result


def build_project_images(compose_config: dict) -> list[str]:
    """Build every `build:` service of the resolved compose config with `docker build --network host`,
    tagged with the service's `image:` (so `compose up` finds it and builds nothing)."""
    done: list[str] = []
    for name, svc in compose_config["services"].items():
        build = svc.get("build")
        if not build or svc.get("image") in done:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = Path(build["context"])
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        docker_build(
            svc["image"],
            context,
            dockerfile,
            build_args=build.get("args") or {},
            what=f"the project's {dockerfile.name} (service {name})",
        )
        done.append(svc["image"])
    return done


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "build"
    try:
        if cmd == "check":
            ensure_engine()
            print("engine: ok; compose: " + " ".join(compose_cmd()))
        elif cmd == "build":
            ensure_engine()
            for tag, state in ensure_standins(force="--force" in argv).items():
                print(f"{tag}: {state}")
        else:
            print(__doc__)
            return 2
    except HarnessError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
