"""Check the wheel folder that travels to the device machine.

    python benchmarks/gpu/check_wheels.py .whl                 # here, after fetch_wheels.sh
    python benchmarks/gpu/check_wheels.py .whl --installed     # there, after the install (gpu_all.py does it)

Here it checks that wheels.txt's pins and the folder agree (one version of each), that every
need, from pyproject.toml's dependencies down through each wheel's Requires-Dist (markers
evaluated for CPython 3.12 on Linux x86_64), is met by a wheel, by a package of the device
image (image-packages.txt) or is left out on purpose in wheels.txt, and prints the total size.
``--compare-local`` also compares the pins with this interpreter's installed versions.
``--installed`` checks each need's installed version against its specifier, through
importlib.metadata, where the wheels were installed (the image's own versions are not known here).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: str
    requires: tuple[Requirement, ...]


def read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as archive:
        metadata = next(n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        message = Parser().parsestr(archive.read(metadata).decode())
    requires = tuple(Requirement(text) for text in message.get_all("Requires-Dist") or [])
    return Wheel(path, canonicalize_name(message["Name"]), message["Version"], requires)


def marker_env(python: str) -> dict[str, str]:
    return {
        "python_version": python,
        "python_full_version": f"{python}.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def needed(requirements: tuple[Requirement, ...], python: str) -> list[Requirement]:
    env = marker_env(python)
    return [r for r in requirements if r.marker is None or r.marker.evaluate(env)]


def read_pins(path: Path) -> tuple[dict[str, str], set[str]]:
    """wheels.txt: ``name==version`` lines, and ``!name`` for needs left out on purpose."""
    pins, omitted = {}, set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("!"):
            omitted.add(canonicalize_name(line[1:].strip()))
        elif line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins, omitted


def read_image(path: Path) -> set[str]:
    words = " ".join(line for line in path.read_text().splitlines() if not line.startswith("#")).split()
    return {canonicalize_name(word) for word in words}


def project_requirements() -> tuple[Requirement, ...]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return tuple(Requirement(text) for text in project["dependencies"])


def check_folder(folder: Path, *, python: str, compare_local: bool) -> list[str]:
    """Problems found (empty: all good); prints what it checked."""
    pins, omitted = read_pins(HERE / "wheels.txt")
    image = read_image(HERE / "image-packages.txt")
    wheels = [read_wheel(path) for path in sorted(folder.glob("*.whl"))]
    problems = []
    by_name: dict[str, list[Wheel]] = {}
    for wheel in wheels:
        by_name.setdefault(wheel.name, []).append(wheel)
    for name, found in sorted(by_name.items()):
        if len(found) > 1:
            problems.append(f"{name}: {len(found)} wheels ({', '.join(w.path.name for w in found)}): keep one")
        if name not in pins:
            problems.append(f"{name}: a wheel not pinned in wheels.txt ({found[0].path.name})")
        elif found[0].version != pins[name]:
            problems.append(f"{name}: wheel {found[0].version}, pinned {pins[name]}")
    problems += [f"{name}=={version}: pinned but no wheel" for name, version in pins.items() if name not in by_name]
    carried = {name: found[0] for name, found in by_name.items()}
    from_image: dict[str, set[str]] = {}
    sources = [("pyproject.toml", needed(project_requirements(), python))]
    sources += [(f"{w.name} {w.version}", needed(w.requires, python)) for w in carried.values()]
    for source, requirements in sources:
        for req in requirements:
            name = canonicalize_name(req.name)
            if name in carried:
                if req.specifier and not req.specifier.contains(carried[name].version, prereleases=True):
                    problems.append(f"{source} needs {req}, the wheel is {carried[name].version}")
            elif name in image:
                from_image.setdefault(name, set()).add(f"{req.specifier or 'any'} ({source})")
            elif name not in omitted:
                problems.append(f"{source} needs {req}: neither carried, nor in the image, nor left out in wheels.txt")
    size = sum(w.path.stat().st_size for w in carried.values())
    print(f"{len(carried)} wheels, {size / 2**20:.1f} MiB in all, for CPython {python} on manylinux x86_64:")
    for wheel in sorted(carried.values(), key=lambda w: -w.path.stat().st_size):
        print(f"  {wheel.path.stat().st_size / 2**20:6.2f} MiB  {wheel.path.name}")
    print("needs met by the image (versions there unchecked here; --installed checks them there):")
    for name, wants in sorted(from_image.items()):
        print(f"  {name}: {'; '.join(sorted(wants))}")
    if compare_local:
        problems += compare_with_local(pins)
    return problems


def compare_with_local(pins: dict[str, str]) -> list[str]:
    """Pins against this interpreter's installed versions (run it with the project's .venv)."""
    differ = []
    for name, version in pins.items():
        try:
            local = md.version(name)
        except md.PackageNotFoundError:
            print(f"  note: {name} is not installed in {sys.prefix}")
            continue
        if local != version:
            differ.append(f"{name}: pinned {version}, {sys.prefix} has {local}")
    return differ


def check_installed(folder: Path) -> list[str]:
    """pyproject.toml's and each carried wheel's needs against the versions importlib.metadata finds (on the device)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    problems = []
    sources = [("pyproject.toml", needed(project_requirements(), python))]
    for wheel in sorted((read_wheel(p) for p in folder.glob("*.whl")), key=lambda w: w.name):
        try:
            have = md.version(wheel.name)
        except md.PackageNotFoundError:
            problems.append(f"{wheel.name}: carried but not installed where this interpreter looks")
            continue
        if have != wheel.version:
            problems.append(f"{wheel.name}: carried {wheel.version}, but {have} is found first")
        sources.append((f"{wheel.name} {wheel.version}", needed(wheel.requires, python)))
    for source, requirements in sources:
        for req in requirements:
            try:
                version = md.version(req.name)
            except md.PackageNotFoundError:
                continue  # left out on purpose: check_folder vouched for every other need
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                problems.append(f"{source} needs {req}, found {version}")
    print(f"checked {len(sources)} sets of needs against the installed versions (Python {python})")
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the wheel folder (.whl)")
    parser.add_argument("--python", default="3.12", help="the Python the wheels are for [3.12, the device's]")
    parser.add_argument(
        "--compare-local", action="store_true", help="compare the pins with this interpreter's packages"
    )
    parser.add_argument("--installed", action="store_true", help="check installed versions against the needs (device)")
    args = parser.parse_args(argv)
    problems = (
        check_installed(args.folder)
        if args.installed
        else check_folder(args.folder, python=args.python, compare_local=args.compare_local)
    )
    for problem in problems:
        print(f"problem: {problem}")
    print("no problems" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
