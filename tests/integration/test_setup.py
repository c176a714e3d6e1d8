"""scripts/setup installs the lock or nothing: a lock whose hashes were altered is refused."""

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_refuses_a_tampered_lock_and_marks_nothing_installed(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "lock", tmp_path / "lock")
    lock = tmp_path / "lock" / "dev.txt"
    text = lock.read_text()
    # idna's entry now names a file nobody published: every hash of it replaced
    start = text.index("\nidna==")
    end = text.index("\n    #", start)
    forged = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, text[start:end])
    assert forged != text[start:end]
    lock.write_text(text[:start] + forged + text[end:])

    done = subprocess.run(["bash", "scripts/setup"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "THESE PACKAGES DO NOT MATCH THE HASHES" in done.stderr
    assert "idna==3" in done.stderr and "Expected sha256 " + "0" * 64 in done.stderr
    assert "setup: installing lock/dev.txt failed" in done.stderr
    assert not (tmp_path / ".venv" / ".installed").exists()
    site = next((tmp_path / ".venv" / "lib").glob("python3*/site-packages"))
    assert not list(site.glob("idna*")), "nothing of the refused lock was installed"
