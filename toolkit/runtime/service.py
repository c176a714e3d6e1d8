"""A role's process lifecycle: pid file, signals, start, serve, bounded graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from toolkit.base.notify import sd_notify, watchdog_interval
from toolkit.base.pidfile import remove_pid_file, write_pid_file
from toolkit.errors import ConfigError
from toolkit.runtime.endpoint import Endpoint
from toolkit.runtime.http import HttpServer
from toolkit.runtime.keys import Keys

logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 5.0


def run(endpoint: Endpoint, http: HttpServer, webui_host: str, pid_file: Path | None,
        keys: Callable[[], Keys] | None = None) -> int:
    """Run the role until SIGTERM/SIGINT or a fatal error; return the process exit code.
    ``keys`` reads the role's keys again: SIGHUP reloads them."""
    return asyncio.run(_serve(endpoint, http, webui_host, pid_file, keys))


def reload(endpoint: Endpoint, keys: Callable[[], Keys], pid_file: Path | None) -> None:
    """SIGHUP: read the secrets and TLS files again (a rotation, a renewal). Bad files keep
    the old keys, and say why. Done, the pid file is written again: `ember daemon reload`
    waits for that."""
    try:
        new = keys()
    except ConfigError as exc:
        logger.error("Received SIGHUP; keeping the current keys: %s", exc)
        return
    dropped = endpoint.reload_keys(new)
    logger.info("Received SIGHUP; reloaded the secrets and TLS files (%d connections with "
                "retired keys dropped)", dropped)
    if pid_file is not None:
        write_pid_file(pid_file)


async def _serve(endpoint: Endpoint, http: HttpServer, webui_host: str,
                 pid_file: Path | None, keys: Callable[[], Keys] | None = None) -> int:
    loop = asyncio.get_running_loop()
    reason = "stopped"

    def on_signal(signum: int) -> None:
        nonlocal reason
        name = signal.Signals(signum).name
        if endpoint.stopped.is_set():
            logger.warning("Received %s again; exiting now", name)
            os._exit(128 + signum)
        logger.info("Received %s; shutting down", name)
        reason = f"{endpoint.role} stopped: received {name}"
        endpoint.stop(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if keys is not None:
        loop.add_signal_handler(signal.SIGHUP, reload, endpoint, keys, pid_file)
    if pid_file is not None:
        write_pid_file(pid_file)
    preload = asyncio.ensure_future(asyncio.to_thread(http.preload))
    interval = watchdog_interval()
    watchdog = asyncio.ensure_future(_feed_watchdog(interval)) if interval else None
    try:
        await endpoint.start()
        endpoint.serving = True
        endpoint.announce_if_ready()
        await preload
        endpoint.webui_port = await http.start(webui_host, endpoint.webui_port)
        logger.info("%s web UI at %s://%s:%d", endpoint.role.capitalize(),
                    endpoint.keys.scheme, webui_host, endpoint.webui_port)
        _give_back_start_up_memory()
        await endpoint.stopped.wait()
        sd_notify("STOPPING=1")
        try:
            await asyncio.wait_for(endpoint.shutdown(reason), SHUTDOWN_TIMEOUT)
        except TimeoutError:
            logger.warning("Graceful shutdown took over %g s; exiting anyway", SHUTDOWN_TIMEOUT)
    except (ConfigError, OSError) as exc:
        logger.error("%s", exc)
        endpoint.exit_code = 1
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await http.stop()
        await endpoint.close_tasks()
        if pid_file is not None:
            remove_pid_file(pid_file)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    logger.info("%s exited with code %d", endpoint.role.capitalize(), endpoint.exit_code)
    return endpoint.exit_code


def _give_back_start_up_memory() -> None:
    """What start-up allocated and dropped (imports, argument parsing) goes back to the
    system: a collection, then glibc's malloc_trim (not on other C libraries)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _feed_watchdog(interval: float) -> None:
    """WATCHDOG=1 from the event loop itself: if the loop hangs, systemd restarts us."""
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)
