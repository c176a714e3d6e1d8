"""Memory strings, master URLs, the secret file and the exposure rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from toolkit.errors import ConfigError
from toolkit.runtime import config
from toolkit.runtime.keys import Keys, Tls


@pytest.mark.parametrize(("text", "mb"), [
    ("512m", 512), ("512M", 512), ("2g", 2048), ("2gb", 2048), ("1t", 1024 * 1024),
    ("1048576k", 1024), (" 3G ", 3072),
])
def test_memory_strings_like_spark(text: str, mb: int) -> None:
    assert config.parse_memory_mb(text) == mb


@pytest.mark.parametrize(("text", "error"), [
    ("2048", "has no unit: add m or g, as in 2048m"),
    ("lots", "is not a memory size like 512m or 2g"),
    ("-1g", "is not a memory size"),
    ("512k", "less than 1 MiB"),
])
def test_bad_memory_strings_say_why(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        config.parse_memory_mb(text)


def test_default_memory_is_ram_minus_1g_with_a_1g_floor() -> None:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    assert config.default_memory_mb() == max(total - 1024, 1024)


def test_master_urls() -> None:
    assert config.parse_master_url("ember://h1:7077") == [("h1", 7077)]
    assert config.parse_master_url("ember://h1:7077,h2:7078") == [("h1", 7077), ("h2", 7078)]
    assert config.parse_master_url("ember://[::1]:7077") == [("::1", 7077)]


@pytest.mark.parametrize("url", ["spark://h:7077", "ember://h", "ember://h:x", "ember://:7077",
                                 "ember://h:70000"])
def test_bad_master_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="master URL"):
        config.parse_master_url(url)


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_is_read_and_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "s", "0123456789abcdef0123\n", 0o600)
    assert config.read_secret_file(path) == b"0123456789abcdef0123"
    assert config.read_secret_file(write(tmp_path / "r", "0123456789abcdef", 0o400))


@pytest.mark.parametrize(("text", "mode", "error"), [
    ("0123456789abcdef", 0o644, "has mode 0644"),
    ("0123456789abcdef", 0o660, "has mode 0660"),
    ("short", 0o600, "holds 5 bytes; use at least 16"),
    ("", 0o600, "holds 0 bytes"),
])
def test_bad_secret_files_are_refused(tmp_path: Path, text: str, mode: int, error: str) -> None:
    path = write(tmp_path / "s", text, mode)
    with pytest.raises(ConfigError, match=error) as caught:
        config.read_secret_file(path)
    assert str(path) in str(caught.value)


def test_secret_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        config.read_secret_file(tmp_path)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.1.1"])
def test_loopback_needs_no_secret(host: str) -> None:
    config.check_exposure("master", host, Keys(), insecure=False)


def test_wildcard_without_secret_or_tls_is_refused_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"master would listen on 0\.0\.0\.0.*no cluster secret"):
        config.check_exposure("master", "0.0.0.0", Keys(), insecure=False)
    with pytest.raises(ConfigError, match=r"worker would listen on 0\.0\.0\.0.*without TLS"):
        config.check_exposure("worker", "0.0.0.0", Keys((b"k" * 16,)), insecure=False)
    config.check_exposure("master", "0.0.0.0", Keys(), insecure=True)
    config.check_exposure("master", "0.0.0.0", Keys((b"k" * 16,), tls=Tls(tmp_path / "ca.pem")),
                          insecure=False)


def test_unresolvable_host_is_named() -> None:
    with pytest.raises(ConfigError, match=r"cannot resolve host 'no-such-host\.invalid'"):
        config.is_loopback("no-such-host.invalid")
