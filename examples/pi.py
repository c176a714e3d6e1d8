"""Monte Carlo pi on an Ember cluster: a driver program and its executors in one file.

Run it as a driver (the worker that runs it sets EMBER_MASTER_URL and EMBER_SECRET_FILE):

    ember submit --master ember://127.0.0.1:7077 --wait -- python3 examples/pi.py --samples 2000000

or directly, from a machine that can reach the master:

    EMBER_MASTER_URL=ember://127.0.0.1:7077 python3 examples/pi.py

The driver registers an application whose executors run this same file with ``executor``.
Each executor connects back to the driver, proves it knows the application's token, and asks
for tasks (a number of samples) until there are none left; the driver adds up the hits.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import random
import secrets
import socket
import sys
import time

from toolkit.runtime import messages as m
from toolkit.runtime.client import ApplicationClient

TASKS_PER_CORE = 4


# Executor side ------------------------------------------------------------------------------


def count_hits(samples: int, seed: int) -> int:
    rng = random.Random(seed)
    hits = 0
    for _ in range(samples):
        x, y = rng.random(), rng.random()
        hits += x * x + y * y <= 1.0
    return hits


def run_executor(driver: str) -> int:
    host, _, port = driver.rpartition(":")
    token = os.environ["EMBER_PI_TOKEN"]
    executor_id = os.environ.get("EMBER_EXECUTOR_ID", "?")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        stream = sock.makefile("rw")
        stream.write(json.dumps({"token": token, "executor": executor_id}) + "\n")
        stream.flush()
        done = 0
        for line in stream:
            task = json.loads(line)
            if task.get("stop"):
                break
            hits = count_hits(task["samples"], task["seed"])
            stream.write(json.dumps({"task": task["id"], "hits": hits}) + "\n")
            stream.flush()
            done += 1
    print(f"executor {executor_id} ran {done} tasks", flush=True)
    return 0


# Driver side --------------------------------------------------------------------------------


class Tasks:
    """Samples split into tasks, handed out to whichever executor asks next."""

    def __init__(self, samples: int, count: int) -> None:
        size = -(-samples // count)
        self.pending = [(i, min(size, samples - i * size)) for i in range(count)
                        if samples - i * size > 0]
        self.samples = sum(n for _, n in self.pending)
        self.hits = 0
        self.left = len(self.pending)
        self.finished = asyncio.Event()
        self.executors_seen: set[str] = set()

    def done(self, hits: int) -> None:
        self.hits += hits
        self.left -= 1
        if self.left == 0:
            self.finished.set()


async def serve_executor(tasks: Tasks, token: str, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
    try:
        hello = json.loads(await reader.readline() or b"{}")
        if not hmac.compare_digest(str(hello.get("token", "")), token):
            return
        tasks.executors_seen.add(str(hello.get("executor")))
        while tasks.pending:
            task_id, samples = tasks.pending.pop()
            writer.write(json.dumps({"id": task_id, "samples": samples,
                                     "seed": task_id}).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:  # executor gone: its task goes back to the queue
                tasks.pending.append((task_id, samples))
                return
            tasks.done(json.loads(line)["hits"])
        writer.write(b'{"stop": true}\n')
        await writer.drain()
    finally:
        writer.close()


async def run_driver(args: argparse.Namespace) -> int:
    host = args.host or os.environ.get("EMBER_DRIVER_HOST") or socket.getfqdn()
    token = secrets.token_hex(16)
    tasks = Tasks(args.samples, max(1, args.max_cores * TASKS_PER_CORE))
    server = await asyncio.start_server(
        lambda r, w: serve_executor(tasks, token, r, w), host, 0)
    port = server.sockets[0].getsockname()[1]
    desc = m.ApplicationDescription(
        name="MonteCarloPi",
        command=[sys.executable, os.path.abspath(__file__), "executor",
                 "--driver", f"{host}:{port}"],
        memory_per_executor=args.executor_memory,
        cores_per_executor=args.executor_cores,
        max_cores=args.max_cores,
        env={"EMBER_PI_TOKEN": token},
    )
    began = time.monotonic()
    async with server, await ApplicationClient.register(desc) as app:
        print(f"Registered application {app.app_id}; serving tasks on {host}:{port}",
              flush=True)
        watcher = asyncio.create_task(report_events(app))
        try:
            await asyncio.wait_for(tasks.finished.wait(), args.timeout)
        except TimeoutError:
            print(f"Gave up after {args.timeout:g} s with {tasks.left} tasks left",
                  file=sys.stderr)
            return 1
        finally:
            watcher.cancel()
    pi = 4.0 * tasks.hits / tasks.samples
    print(f"Pi is roughly {pi:.5f} ({tasks.samples} samples, {len(tasks.executors_seen)} "
          f"executors, {time.monotonic() - began:.2f} s)", flush=True)
    return 0


async def report_events(app: ApplicationClient) -> None:
    while True:
        event = await app.event()
        if isinstance(event, m.ExecutorAdded):
            print(f"Executor {event.exec_id} added on {event.worker_id} ({event.cores} cores)",
                  flush=True)
        elif isinstance(event, m.ExecutorUpdated):
            print(f"Executor {event.exec_id} is {event.state} {event.message}".rstrip(),
                  flush=True)
        elif isinstance(event, m.ApplicationRemoved):
            print(f"Application removed by the master: {event.message}", file=sys.stderr)
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    executor = sub.add_parser("executor")
    executor.add_argument("--driver", required=True)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--max-cores", type=int, default=2)
    parser.add_argument("--executor-cores", type=int, default=1)
    parser.add_argument("--executor-memory", type=int, default=256, help="MiB")
    parser.add_argument("--host", help="address executors connect back to")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.role == "executor":
        return run_executor(args.driver)
    return asyncio.run(run_driver(args))


if __name__ == "__main__":
    sys.exit(main())
