"""Log rotation, log tails, and recognising our own processes by their command line."""

from __future__ import annotations

from pathlib import Path

from toolkit.base.procs import ProcInfo, format_uptime, is_ours
from toolkit.daemon.logs import rotate, tail


def test_rotation_shifts_and_drops_the_oldest(tmp_path: Path) -> None:
    log = tmp_path / "x.out"
    for run in range(1, 6):
        rotate(log, 3)
        log.write_text(f"run {run}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.out", "x.out.1", "x.out.2",
                                                          "x.out.3"]
    assert [(tmp_path / n).read_text() for n in ("x.out", "x.out.1", "x.out.2", "x.out.3")] == [
        "run 5\n", "run 4\n", "run 3\n", "run 2\n"]


def test_lowering_the_limit_removes_extra_old_logs(tmp_path: Path) -> None:
    log = tmp_path / "x.out"
    for n in range(1, 6):
        (tmp_path / f"x.out.{n}").write_text(str(n))
    log.write_text("now")
    rotate(log, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.out.1", "x.out.2"]


def test_zero_means_no_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.out"
    log.write_text("keep")
    rotate(log, 0)
    assert log.read_text() == "keep" and not (tmp_path / "x.out.1").exists()


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.out"
    log.write_text("".join(f"line {n}\n" for n in range(30)))
    assert tail(log, 3) == ["line 27", "line 28", "line 29"]
    assert tail(tmp_path / "none", 3) == []


def info(*argv: str) -> ProcInfo:
    return ProcInfo(42, "S", argv, 0)


def test_ours_needs_role_module_and_exact_pid_file() -> None:
    pid_file = Path("/h/run/ember-op-worker-1.pid")
    ours = info("/venv/bin/python", "-m", "toolkit", "worker", "--pid-file", str(pid_file))
    assert is_ours(ours, "worker", pid_file)
    assert not is_ours(ours, "master", pid_file)
    assert not is_ours(ours, "worker", Path("/h/run/ember-op-worker-2.pid"))
    assert not is_ours(info("sleep", "300"), "worker", pid_file)
    assert not is_ours(info("java", "-cp", "x", "worker", "--pid-file", str(pid_file)),
                       "worker", pid_file)


def test_uptime_format() -> None:
    assert format_uptime(59) == "0:00:59"
    assert format_uptime(3 * 86400 + 3661) == "3d 1:01:01"
