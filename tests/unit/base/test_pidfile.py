"""Pid files: atomic writes, removal only by the owner."""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.base.pidfile import read_pid_file, remove_pid_file, write_pid_file


def test_write_creates_dirs_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pid"
    write_pid_file(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert [p.name for p in path.parent.iterdir()] == ["x.pid"]


def test_read_tolerates_missing_and_garbage(tmp_path: Path) -> None:
    assert read_pid_file(tmp_path / "none.pid") is None
    (tmp_path / "bad.pid").write_text("not a pid")
    assert read_pid_file(tmp_path / "bad.pid") is None
    (tmp_path / "zero.pid").write_text("0")
    assert read_pid_file(tmp_path / "zero.pid") is None


def test_remove_only_when_it_still_names_us(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    write_pid_file(path, 1)
    remove_pid_file(path)
    assert path.exists(), "a pid file taken over by another process must survive"
    write_pid_file(path)
    remove_pid_file(path)
    assert not path.exists()
