"""debian/requirements.lock, what the Debian package ships: every dependency pyproject.toml
names for the gateway (its own and the `linux` extra's) is pinned there, within pyproject's
range, with hashes, for each Python the package is built with; `make lock` rewrites it."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.packaging.conftest import REPO

PYTHONS = ("3.11", "3.13")  # Debian 12's and Debian 13's


def pins(python: str) -> dict[str, str]:
    """Name -> pinned version of the lock's entries that apply on `python` on Linux."""
    text = (REPO / "debian" / "requirements.lock").read_text()
    found: dict[str, str] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = entry.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        requirement = Requirement(head)
        assert "--hash=sha256:" in entry, f"{head}: no hash"
        environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux"}
        if requirement.marker is None or requirement.marker.evaluate(environment):
            (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
            name = canonicalize_name(requirement.name)
            assert name not in found, f"Python {python}: {name} pinned twice"
            found[name] = version
    return found


def gateway_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["linux"]]


@pytest.mark.parametrize("python", PYTHONS)
def test_every_dependency_of_the_gateway_is_pinned_within_its_range(python):
    locked = pins(python)
    for requirement in gateway_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in debian/requirements.lock: run make lock"
        assert SpecifierSet(str(requirement.specifier)).contains(locked[name]), (
            f"{name}=={locked[name]} is outside pyproject's {requirement.specifier}: run make lock"
        )
