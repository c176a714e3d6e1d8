"""Atomic writes and the file bundle that travels on `ember daemon`'s standard input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.base.files import bundle, install_bundle, write_atomic
from toolkit.errors import ConfigError


def test_bundle_round_trip_writes_contents_and_modes(tmp_path: Path) -> None:
    env, secret = tmp_path / "conf" / "ember-env.sh", tmp_path / "conf" / "secret"
    line = bundle([(str(env), b"EMBER_X=1\n", 0o644), (str(secret), b"\x00\xffkey", 0o600)])
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line: the rest is orders
    assert install_bundle(line) == [env, secret]
    assert env.read_bytes() == b"EMBER_X=1\n" and secret.read_bytes() == b"\x00\xffkey"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.parent.stat().st_mode & 0o066 == 0  # others may not list or change it
    assert install_bundle(line) == []  # unchanged: nothing rewritten


def test_write_atomic_fixes_a_changed_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert write_atomic(path, b"a", 0o644)
    path.chmod(0o666)
    assert write_atomic(path, b"a", 0o644)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("entries, problem", [
    ("not json", "not a valid bundle"),
    (json.dumps([{"path": "/tmp/x", "mode": 420}]), "not a valid bundle"),
    (json.dumps([{"path": "/tmp/x", "mode": 420, "data": "***"}]), "not a valid bundle"),
    (json.dumps([{"path": "relative", "mode": 420, "data": ""}]), "paths must be absolute"),
    (json.dumps([{"path": "/tmp/../etc/x", "mode": 420, "data": ""}]), "paths must be absolute"),
    (json.dumps([{"path": "/tmp/x", "mode": 0o4755, "data": ""}]), "plain permission bits"),
])
def test_bad_bundles_are_refused_before_anything_is_written(entries: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        install_bundle(entries.encode())


def test_write_atomic_reaches_the_disk_before_the_rename(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fsync first, a power loss after the rename can leave an empty secret."""
    import os

    from toolkit.base import files

    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace",
                        lambda a, b, **kw: (order.append("rename"), real_replace(a, b, **kw))[1])
    assert files.write_atomic(tmp_path / "conf" / "secret", b"s" * 32, 0o600)
    assert order[:2] == ["fsync", "rename"]
    assert (tmp_path / "conf" / "secret").read_bytes() == b"s" * 32
