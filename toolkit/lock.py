"""The lock: the exact dependency set Ember was tested with (``lock/*.txt``, made by scripts/lock).

``runtime.txt`` is what every host runs (``fab deploy`` installs it, ``fab doctor`` compares a
host against it); ``dev.txt`` adds the test, lint and build tools. Each entry is an exact
``name==version``, maybe with an environment marker (the lock covers every platform and Python
>= 3.11), and the sha256 of every file the registry serves for that version.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from toolkit.errors import ConfigError

RUNTIME = "runtime.txt"
DEV = "dev.txt"
# A venv's own installers: whatever version `python -m venv` brought is fine.
INSTALLERS = frozenset({"pip", "setuptools", "wheel"})
SELF = "ember-toolkit"


@dataclass(frozen=True)
class Pin:
    name: str  # canonical: lower case, runs of -_. as one -
    version: str
    marker: Marker | None
    hashes: tuple[str, ...]

    def applies(self, environment: dict[str, str] | None) -> bool:
        return self.marker is None or self.marker.evaluate(environment)


def lock_dir() -> Path:
    """The repository's lock/, or the copy a wheel installs under <prefix>/share/ember."""
    for candidate in (Path(__file__).resolve().parent.parent / "lock",
                      Path(sys.prefix) / "share" / "ember" / "lock"):
        if (candidate / RUNTIME).is_file():
            return candidate
    raise ConfigError("Ember's lock/ directory is missing from this installation "
                      "(run scripts/lock in a checkout)")


def read_lock(path: Path) -> list[Pin]:
    """Every entry of a lock file; an entry that is not exact and hashed names file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the lock: {exc.strerror}") from None
    return parse_lock(text, str(path))


def parse_lock(text: str, source: str) -> list[Pin]:
    pins = []
    for number, line in _logical_lines(text):
        where = f"{source}, line {number}"
        words = line.split(" --hash=")
        spec, hashes = words[0].strip(), tuple(h.strip() for h in words[1:])
        if spec.startswith("-"):
            raise ConfigError(f"{where}: option {spec.split()[0]!r} has no place in a lock")
        try:
            requirement = Requirement(spec)
        except (InvalidRequirement, InvalidMarker) as exc:
            raise ConfigError(f"{where}: {spec!r} is not a requirement: {exc}") from None
        exact = [s for s in requirement.specifier if s.operator == "=="]
        if len(exact) != 1 or len(requirement.specifier) != 1 or "*" in exact[0].version:
            raise ConfigError(f"{where}: {requirement.name} is not pinned to one version "
                              f"(name==version)")
        if not hashes or not all(h.startswith("sha256:") and len(h) == 71 for h in hashes):
            raise ConfigError(f"{where}: {requirement.name} has no sha256 hash "
                              f"(--hash=sha256:...); run scripts/lock")
        pins.append(Pin(canonicalize_name(requirement.name), exact[0].version,
                        requirement.marker, hashes))
    return pins


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Requirement lines with backslash continuations joined and comments dropped."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if pending is not None:
            start, before = pending
            line, number = before + " " + line.strip(), start
            pending = None
        if line.endswith("\\"):
            pending = (number, line[:-1].rstrip())
        elif line.strip():
            lines.append((number, line.strip()))
    if pending is not None:
        lines.append((pending[0], pending[1].strip()))
    return lines


def expected(pins: list[Pin], environment: dict[str, str] | None) -> dict[str, str]:
    """Name -> version of the pins that apply in this environment (None: this interpreter's)."""
    return {pin.name: pin.version for pin in pins if pin.applies(environment)}


def extras(wanted: dict[str, str], installed: dict[str, str]) -> list[str]:
    """Installed packages the lock does not name (the venv's installers and Ember aside)."""
    return sorted(name for name in map(canonicalize_name, installed)
                  if name not in wanted and name not in INSTALLERS and name != SELF)


def drift(wanted: dict[str, str], installed: dict[str, str],
          tolerated: dict[str, str] | None = None) -> list[str]:
    """How an installed set differs from the lock, one line per package, sorted by name.

    ``wanted`` must be installed at exactly its versions; anything else installed must be in
    ``tolerated`` at its version (the development tools on a control machine). The venv's own
    installers and Ember itself (checked by version elsewhere) are not compared.
    """
    have: dict[str, str] = {canonicalize_name(name): version for name, version in installed.items()}
    allowed = {**(tolerated or {}), **wanted}
    problems = []
    for name in sorted(set(wanted) | set(have)):
        if name in INSTALLERS or name == SELF:
            continue
        want, got = allowed.get(name), have.get(name)
        if got is None and name in wanted:
            problems.append(f"{name} is missing (the lock has {want})")
        elif want is None and got is not None:
            problems.append(f"{name} {got} is installed but not in the lock")
        elif got is not None and got != want:
            problems.append(f"{name} {got} is installed, the lock has {want}")
    return problems
