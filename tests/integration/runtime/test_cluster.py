"""Real `ember master` / `ember worker` processes on 127.0.0.1: membership and liveness."""

from __future__ import annotations

import signal
import time

from tests.procs import Cluster, free_port, http_status, wait_for

# The keys of Spark 4.x's real master and worker /json (JsonProtocol), in their order.
SPARK_MASTER_KEYS = [
    "url", "workers", "aliveworkers", "cores", "coresused", "memory", "memoryused", "resources",
    "resourcesused", "activeapps", "completedapps", "activedrivers", "completeddrivers", "status",
]
SPARK_MASTER_WORKER_KEYS = [
    "id", "host", "port", "webuiaddress", "cores", "coresused", "coresfree", "memory",
    "memoryused", "memoryfree", "resources", "resourcesused", "resourcesfree", "state",
    "lastheartbeat",
]
SPARK_WORKER_KEYS = [
    "id", "masterurl", "masterwebuiurl", "cores", "coresused", "memory", "memoryused",
    "resources", "resourcesused", "executors", "finishedexecutors",
]


def test_worker_registers_and_both_json_views_match_spark(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=3, memory="1536m")
    view = worker.wait_registered()
    entry = master.wait_state(view["id"], "ALIVE")

    state = master.json()
    assert list(state) == SPARK_MASTER_KEYS
    assert list(entry) == SPARK_MASTER_WORKER_KEYS
    assert state["url"] == master.url
    assert state["status"] == "ALIVE"
    assert (state["aliveworkers"], state["cores"], state["memory"]) == (1, 3, 1536)
    assert entry["host"] == "127.0.0.1"
    assert entry["id"] == f"worker-{entry['id'].split('-')[1]}-127.0.0.1-{entry['port']}"
    assert (entry["cores"], entry["coresfree"], entry["memory"], entry["memoryfree"]) == (
        3, 3, 1536, 1536)
    assert entry["webuiaddress"] == f"http://127.0.0.1:{worker.webui}"
    assert abs(entry["lastheartbeat"] / 1000 - time.time()) < 60

    assert list(view) == SPARK_WORKER_KEYS
    assert view["masterurl"] == master.url
    assert view["masterwebuiurl"] == f"http://127.0.0.1:{master.webui}"
    assert (view["cores"], view["memory"]) == (3, 1536)

    assert master.json("aliveworkers") == {"aliveworkers": 1}
    assert http_status(f"http://127.0.0.1:{master.webui}/json/nosuchfield") == 404
    assert http_status(f"http://127.0.0.1:{worker.webui}/readyz") == 200


def test_worker_readyz_is_503_until_registered(cluster: Cluster) -> None:
    worker = cluster.worker(f"ember://127.0.0.1:{free_port()}")
    wait_for(lambda: http_status(f"http://127.0.0.1:{worker.webui}/readyz") == 503, 10,
             "worker /readyz answering 503")
    assert worker.json()["masterurl"] == ""


def test_kill_9_marks_worker_dead_long_before_the_timeout(cluster: Cluster) -> None:
    master = cluster.master(timeout=60)
    worker = cluster.worker(master.url)
    worker_id = master.wait_joined(worker)
    worker.proc.signal(signal.SIGKILL)
    master.wait_state(worker_id, "DEAD", timeout=10)
    state = master.json()
    assert (state["aliveworkers"], state["cores"], state["memory"]) == (0, 0, 0)
    assert "got disassociated" in master.proc.log()


def test_sigstop_is_dead_after_the_timeout_and_sigcont_brings_it_back(cluster: Cluster) -> None:
    timeout = 2.0
    master = cluster.master(timeout=timeout)
    worker = cluster.worker(master.url)
    worker_id = master.wait_joined(worker)

    worker.proc.signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    master.wait_state(worker_id, "DEAD", timeout=timeout * 4)
    # Heartbeats come every timeout/4: the last one was at most that long before SIGSTOP.
    assert time.monotonic() - stopped_at >= timeout * 0.75 - 0.1
    assert f"no heartbeat in {timeout:g} seconds" in master.proc.log()

    worker.proc.signal(signal.SIGCONT)
    master.wait_state(worker_id, "ALIVE", timeout=10)
    assert [w["id"] for w in master.json()["workers"]] == [worker_id]


def test_worker_started_before_its_master_joins_when_it_comes_up(cluster: Cluster) -> None:
    port = free_port()
    worker = cluster.worker(f"ember://127.0.0.1:{port}")
    wait_for(lambda: "Cannot register with master" in worker.proc.log(), 10,
             "the worker's first failed attempt")
    time.sleep(1.5)
    master = cluster.master(port=port)
    master.wait_joined(worker)


def test_worker_with_two_masters_registers_with_the_live_one_and_fails_over(
        cluster: Cluster) -> None:
    down = free_port()
    first = cluster.master()
    worker = cluster.worker(f"ember://127.0.0.1:{down},127.0.0.1:{first.port}")
    worker_id = first.wait_joined(worker)
    assert worker.json()["masterurl"] == first.url

    second = cluster.master(port=down)
    first.proc.signal(signal.SIGTERM)
    assert first.proc.wait() == 0
    second.wait_state(worker_id, "ALIVE")
    assert worker.json()["masterurl"] == second.url


def test_worker_rejoins_a_restarted_master(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url)
    worker_id = worker.wait_registered()["id"]
    master.proc.signal(signal.SIGKILL)
    master.proc.wait()
    restarted = cluster.master(port=master.port)
    restarted.wait_state(worker_id, "ALIVE")
    assert "re-registering" in worker.proc.log()


def test_sigterm_worker_tells_the_master_why_and_exits_cleanly(cluster: Cluster) -> None:
    master = cluster.master(timeout=60)
    pid_file = cluster.tmp / "run" / "worker.pid"
    worker = cluster.worker(master.url, "--pid-file", str(pid_file))
    worker_id = worker.wait_registered()["id"]
    assert pid_file.read_text().strip() == str(worker.proc.pid)

    worker.proc.signal(signal.SIGTERM)
    assert worker.proc.wait() == 0
    master.wait_state(worker_id, "DEAD", timeout=5)
    assert f"Removing worker {worker_id}" in master.proc.log()
    assert "worker stopped: received SIGTERM" in master.proc.log()
    assert not pid_file.exists()


def test_master_pid_file_and_graceful_sigint(cluster: Cluster) -> None:
    pid_file = cluster.tmp / "master.pid"
    master = cluster.master("--pid-file", str(pid_file))
    assert pid_file.read_text().strip() == str(master.proc.pid)
    master.proc.signal(signal.SIGINT)
    assert master.proc.wait() == 0
    assert not pid_file.exists()
    assert "Received SIGINT" in master.proc.log()


def test_register_timeout_gives_up_with_exit_1(cluster: Cluster) -> None:
    worker = cluster.worker(f"ember://127.0.0.1:{free_port()}", "--register-timeout", "1")
    assert worker.proc.wait(15) == 1
    assert "giving up" in worker.proc.log()


def test_worker_settings_come_from_the_environment(cluster: Cluster) -> None:
    master = cluster.master()
    worker = cluster.worker(master.url, cores=0, memory="",
                            env={"EMBER_WORKER_CORES": "5", "EMBER_WORKER_MEMORY": "768m"})
    view = worker.wait_registered()
    assert (view["cores"], view["memory"]) == (5, 768)


def test_bad_environment_value_is_named(cluster: Cluster) -> None:
    worker = cluster.worker("ember://127.0.0.1:7077", memory="",
                            env={"EMBER_WORKER_MEMORY": "lots"})
    assert worker.proc.wait() == 2
    assert "EMBER_WORKER_MEMORY" in worker.proc.log()
    assert "'lots' is not a memory size" in worker.proc.log()


def test_busy_port_is_a_clear_error(cluster: Cluster) -> None:
    master = cluster.master()
    clash = cluster.master(port=master.port, wait=False)
    assert clash.proc.wait() == 1
    assert f"master cannot listen on 127.0.0.1:{master.port}" in clash.proc.log()


def test_worker_culled_from_the_list_rejoins_after_sigcont(cluster: Cluster) -> None:
    """A worker frozen longer than 16 x timeout is forgotten; it must still come back."""
    master = cluster.master(timeout=0.5)
    worker = cluster.worker(master.url)
    worker_id = master.wait_joined(worker)
    worker.proc.signal(signal.SIGSTOP)
    wait_for(lambda: master.json()["workers"] == [], 20, "the worker culled from the list")
    worker.proc.signal(signal.SIGCONT)
    master.wait_state(worker_id, "ALIVE", timeout=10)


def test_refused_for_a_crashed_predecessor_joins_once_it_times_out(cluster: Cluster) -> None:
    """The master still lists a worker at this address (its host crashed: no FIN)."""
    import asyncio
    import threading

    from toolkit.runtime import messages as m
    from toolkit.runtime import wire

    master = cluster.master(timeout=2)
    port = free_port()
    registered = threading.Event()
    release = threading.Event()

    async def ghost() -> None:
        conn = await wire.connect("127.0.0.1", master.port, None, wire.TO_WORKER)
        conn.send(m.RegisterWorker("worker-ghost", "127.0.0.1", port, 1, 512, "http://x",
                                   master.url))
        async for _ in conn.messages():
            registered.set()
            while not release.is_set():
                await asyncio.sleep(0.05)
            conn.close()
            return

    holder = threading.Thread(target=lambda: asyncio.run(ghost()), daemon=True)
    holder.start()
    try:
        assert registered.wait(10)
        worker = cluster.worker(master.url, "--port", str(port))
        wait_for(lambda: "Master refused this worker" in worker.proc.log(), 10, "refusal")
        worker_id = worker.wait_registered(timeout=20)["id"]
        master.wait_state(worker_id, "ALIVE")
        assert worker.proc.popen.poll() is None
    finally:
        release.set()
        holder.join(5)
