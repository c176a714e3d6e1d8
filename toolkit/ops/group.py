"""Running one call on many hosts: a result per host, never printed here.

Like Fabric's ``GroupResult``: every host's outcomes, kept apart, in the order the hosts were
given. A host whose call raised gets a failed outcome with the reason, for each of its role
instances (or once, under a label, for a host-wide task): one host's failure never hides
another's result. Whoever wants to show progress passes ``progress``; the printing itself lives
in show.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from toolkit.errors import EmberError

MAX_PARALLEL = 32


@dataclass(frozen=True)
class Outcome:
    """What one call did for one role instance of one host (instance 0: the host itself)."""

    host: str
    role: str
    instance: int
    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Member(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def roles(self) -> list[tuple[str, int]]: ...


class GroupResult(dict[str, list[Outcome]]):
    """host -> its outcomes."""

    def outcomes(self) -> list[Outcome]:
        return [o for found in self.values() for o in found]

    @property
    def failed(self) -> dict[str, list[Outcome]]:
        return {host: found for host, found in self.items() if any(not o.ok for o in found)}

    @property
    def succeeded(self) -> dict[str, list[Outcome]]:
        return {host: found for host, found in self.items() if all(o.ok for o in found)}


class Events(Protocol):
    """Where operations say what happens: an outcome as it comes, or a note."""

    def outcome(self, outcome: Outcome) -> None: ...
    def note(self, text: str) -> None: ...


class Silent:
    """Events nobody reads (a library caller that only wants the results)."""

    def outcome(self, outcome: Outcome) -> None:
        pass

    def note(self, text: str) -> None:
        pass


M = TypeVar("M", bound=Member)


def run_each(members: Sequence[M], work: Callable[[M], list[Outcome]],
             serial: bool = False, label: str | None = None,
             progress: Callable[[Outcome], None] | None = None) -> GroupResult:
    """``work`` on every member, in parallel (at most MAX_PARALLEL at once) unless ``serial``."""
    def guarded(member: M) -> list[Outcome]:
        try:
            found = work(member)
        except Exception as exc:  # one host's failure, whatever it is, stays that host's
            text = str(exc) if isinstance(exc, (EmberError, OSError)) else (
                f"{exc.__class__.__name__}: {exc}")
            roles = [(label, 0)] if label else member.roles or [("host", 0)]
            found = [Outcome(member.address, r, i, False, text) for r, i in roles]
        if progress is not None:
            for outcome in found:
                progress(outcome)
        return found

    result = GroupResult()
    if serial or len(members) <= 1:
        answers = [guarded(m) for m in members]
    else:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(members))) as pool:
            answers = list(pool.map(guarded, members))
    for member, found in zip(members, answers, strict=True):
        result.setdefault(member.address, []).extend(found)
    return result
