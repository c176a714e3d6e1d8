"""What `ember submit --wait` exits with for each final state of a driver."""

from __future__ import annotations

import pytest

from toolkit.cli import exit_code_of
from toolkit.runtime import messages as m


@pytest.mark.parametrize(("state", "code", "expected"), [
    ("FINISHED", 0, 0),
    ("FAILED", 3, 3),
    ("FAILED", -9, 137),
    ("KILLED", 0, 143),
    ("KILLED", -9, 143),
    ("KILLED", None, 143),
    ("ERROR", None, 1),
])
def test_exit_codes(state: str, code: int | None, expected: int) -> None:
    assert exit_code_of(m.DriverStatusResponse("d", True, state, exit_code=code)) == expected
