"""A real Airflow deployment for the tests and benchmarks: scheduler, dag-processor, api-server and Celery workers
as `airflow` subprocesses, on a PostgreSQL metadata database and the Redis on 127.0.0.1:6379 (or the
LocalExecutor, with no workers and no broker).

`airflow_cluster()` starts them and hands back an `AirflowCluster` at once, so the caller can build its
warehouse while they boot, then `wait_until_ready()`. Every process writes to a log file in the cluster's
folder; a wait that times out fails with their tails. At exit every process group is terminated and any
descendant left (a Celery pool child, a task) is killed: no orphans.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# A Redis database no other test or service uses: flushed at start, so no earlier run's message is delivered.
BROKER_DB = 7
WORKER_NODE_VARIABLE = "BATCHWATCH_TEST_CELERY_NODE"
# By its path from the project root (on the workers' PYTHONPATH), whatever name pytest imported this module under.
HOSTNAME_CALLABLE = "tools.airflow_cluster.worker_hostname"
FINISHED_RUN_STATES = {"success", "failed"}
FAILED_STATES = {"failed", "up_for_retry", "upstream_failed"}


def worker_hostname() -> str:
    """The workers' [core] hostname_callable: each reports its Celery node name as a task's hostname, as workers on
    separate machines report theirs; two workers on one machine would otherwise both report its FQDN."""
    return os.environ[WORKER_NODE_VARIABLE]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


@contextmanager
def redis_broker(log_folder: Path) -> Iterator[str]:
    """The broker URL on the Redis at 127.0.0.1:6379, emptied; a redis-server is started (and stopped at exit) when none answers."""
    import redis

    server = None
    if not _redis_answers():
        log = (log_folder / "redis-server.log").open("w")
        server = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", REDIS_HOST, "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_answers():
            assert server.poll() is None and time.monotonic() < deadline, (
                f"no Redis answered on {REDIS_HOST}:{REDIS_PORT} and redis-server did not start:\n{_tail(log_folder / 'redis-server.log')}"
            )
            time.sleep(0.1)
    broker = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=BROKER_DB)
    broker.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{BROKER_DB}"
    finally:
        broker.flushdb()
        broker.close()
        if server is not None:
            _stop_group(server, timeout=10)


@contextmanager
def fresh_database(server: str, name: str) -> Iterator[str]:
    """A fresh database `name` on the PostgreSQL server, dropped at exit (and first, should a killed run have left it)."""
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield f"{server}/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tail(path: Path, characters: int = 3000) -> str:
    """The end of a log, less the API server's lines for the requests that succeeded (the waits poll it twice a second)."""
    if not path.exists():
        return f"({path} was not written)"
    lines = [line for line in path.read_text(errors="replace").splitlines() if not ("[http.access]" in line and "status_code=2" in line)]
    return "\n".join(lines)[-characters:]


def _stop_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM to the process's group (each was started in a session of its own), SIGKILL when it outlives `timeout`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class AirflowCluster:
    """The running deployment: its REST API as admin, its processes, their logs."""

    def __init__(self, folder: Path, env: dict[str, str], base_url: str, password: str, workers: list[str]) -> None:
        self.folder = folder
        self.home = Path(env["AIRFLOW_HOME"])
        self.env = env
        self.base_url = base_url
        self.password = password
        self.workers = workers
        self.processes: dict[str, subprocess.Popen] = {}
        self.began = time.monotonic()
        self.timings: dict[str, float] = {}
        self._client = None

    def mark(self, step: str) -> None:
        """Record how long after the cluster's creation `step` was done."""
        self.timings[step] = round(time.monotonic() - self.began, 1)

    def start(self, name: str, *arguments: str, env: dict[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), *arguments], env={**self.env, **(env or {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder,
        )
        log.close()

    def diagnostics(self, run_id: str | None = None) -> str:
        """The tail of every process's log, and of every task log of `run_id`: what a failure message shows."""
        parts = [f"--- {name} (exit {process.poll()}) {self.folder / f'{name}.log'}\n{_tail(self.folder / f'{name}.log')}"
                 for name, process in self.processes.items()]
        if run_id is not None:
            for path in sorted((self.home / "logs").glob(f"dag_id=*/run_id={run_id}/**/*.log")):
                parts.append(f"--- task log {path}\n{_tail(path)}")
        return "\n".join(parts)

    def _assert_running(self) -> None:
        exited = {name: process.returncode for name, process in self.processes.items() if process.poll() is not None}
        assert not exited, f"Airflow processes exited: {exited}\n{self.diagnostics()}"

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Until the API server reports the metadata database, the scheduler and the dag-processor healthy, and every worker answers a ping."""
        import httpx
        from celery import Celery

        deadline = time.monotonic() + timeout
        health: Any = None
        while True:
            self._assert_running()
            try:
                health = httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).json()
                if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler", "dag_processor")):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"Airflow was not healthy in {timeout:.0f} s: {health}\n{self.diagnostics()}"
            time.sleep(0.5)
        self.mark("API server, scheduler and dag-processor healthy")
        if not self.workers:
            return
        app = Celery(broker=self.env["AIRFLOW__CELERY__BROKER_URL"])
        try:
            answered: set[str] = set()
            while not set(self.workers) <= answered:
                self._assert_running()
                assert time.monotonic() < deadline, f"workers answering: {sorted(answered)}, expected {self.workers}\n{self.diagnostics()}"
                answered |= {node for reply in app.control.ping(destination=self.workers, timeout=1.0) for node in reply}
        finally:
            app.close()
        self.mark("workers answer a ping")

    @property
    def api(self):
        """An httpx client on the REST API with an admin's token (POST /auth/token, the simple auth manager's login)."""
        import httpx

        if self._client is None:
            response = httpx.post(f"{self.base_url}/auth/token", json={"username": "admin", "password": self.password}, timeout=10)
            response.raise_for_status()
            self._client = httpx.Client(
                base_url=f"{self.base_url}/api/v2", headers={"Authorization": f"Bearer {response.json()['access_token']}"}, timeout=30
            )
        return self._client

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def task_ids(self, dag_id: str) -> set[str] | None:
        """The task ids of the DAG's latest parse; None before its first."""
        response = self.api.get(f"/dags/{dag_id}/tasks")
        if response.status_code == 404:
            return None
        assert response.is_success, response.text
        return {task["task_id"] for task in response.json()["tasks"]}

    def reparse(self, file_name: str) -> None:
        """Ask the dag-processor to parse the DAG file `file_name` now (PUT /parseDagFile), as the UI's Reparse button does."""
        token = next(dag["file_token"] for dag in self._dags() if Path(dag["fileloc"]).name == file_name)
        self.call("PUT", f"/parseDagFile/{token}")

    def wait_for_tasks(self, dag_id: str, task_ids: set[str], *, file_name: str, timeout: float = 60) -> None:
        """Until the DAG's latest parse has exactly `task_ids`. When an earlier parse of its file is what the API shows (the
        file reads a spec that changed since), ask once for a reparse; a spec error that reparse finds fails at once."""
        deadline = time.monotonic() + timeout
        asked_at = None
        while (found := self.task_ids(dag_id)) != task_ids:
            self._assert_running()
            if asked_at is None and any(Path(dag["fileloc"]).name == file_name for dag in self._dags()):
                asked_at = datetime.now(timezone.utc)
                self.reparse(file_name)
            spec_errors = [(dag["dag_id"], dag["description"]) for dag in self._dags(tags="spec-error")
                           if asked_at is not None and datetime.fromisoformat(dag["last_parsed_time"]) > asked_at]
            if spec_errors or time.monotonic() > deadline:
                errors = self.call("GET", "/importErrors")["import_errors"]
                raise AssertionError(
                    f"{dag_id} has tasks {found}, expected {sorted(task_ids)}; spec errors: {spec_errors}; import errors: {errors}\n"
                    f"{self.diagnostics()}"
                )
            time.sleep(0.5)

    def _dags(self, **params: str) -> list[dict]:
        return self.call("GET", "/dags", params={"limit": 1000, **params})["dags"]

    def trigger(self, dag_id: str, logical_date: datetime) -> dict:
        """Unpause the DAG and trigger a run at `logical_date` (its data interval is the timetable's last complete one before it)."""
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date.isoformat()})

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240) -> dict:
        """Until the run ends; a try that fails ends the wait at once (the DAGs retry after minutes) with the task logs."""
        deadline = time.monotonic() + timeout
        while (run := self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))["state"] not in FINISHED_RUN_STATES:
            self._assert_running()
            instances = self.task_instances(dag_id, run_id)
            failed = [(ti["task_id"], ti["map_index"], ti["state"]) for ti in instances if ti["state"] in FAILED_STATES]
            assert not failed, f"{dag_id} {run_id}: tasks failed: {failed}\n{self.diagnostics(run_id)}"
            assert time.monotonic() < deadline, (
                f"{dag_id} {run_id} is still {run['state']} after {timeout:.0f} s: {[(ti['task_id'], ti['state']) for ti in instances]}\n"
                f"{self.diagnostics(run_id)}"
            )
            time.sleep(0.5)
        return run

    def stop(self) -> None:
        """Terminate every process group at once, then kill whatever descendant outlived them (psutil saw them before)."""
        import psutil

        descendants = []
        for process in self.processes.values():
            try:
                descendants += psutil.Process(process.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        _, alive = psutil.wait_procs(descendants, timeout=5)
        for leftover in alive:
            leftover.kill()
        if self._client is not None:
            self._client.close()


@contextmanager
def airflow_cluster(folder: Path, *, metadata_url: str, broker_url: str | None, env: dict[str, str], workers: int = 2,
                    worker_concurrency: int = 2, parallelism: int = 32) -> Iterator[AirflowCluster]:
    """Migrate the metadata database, start the deployment, and yield it before it is ready (see `wait_until_ready`).

    `metadata_url` is a postgresql:// URL of an empty database; `env` is the project's environment (DAG and plugin
    folders, PYTHONPATH, BATCHWATCH_*, AIRFLOW_CONN_WAREHOUSE), given to every process. Without a `broker_url` the
    scheduler runs the LocalExecutor with `parallelism` task processes and no worker is started.
    """
    home = folder / "airflow"
    home.mkdir(parents=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    password = secrets.token_urlsafe(12)
    # The simple auth manager keeps a password it finds in its file: the test logs in with a known one.
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    database = metadata_url.replace("postgresql://", "postgresql+psycopg://", 1)
    nodes = [f"worker{number}@{socket.gethostname()}" for number in range(1, workers + 1)] if broker_url else []
    executor = {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}"} if broker_url else {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    cluster_env = {
        **env,
        "AIRFLOW_HOME": str(home),
        **executor,
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        # Workers report task state to the API server; its base URL also builds the UI links in task logs.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__BASE_URL": base_url,
        # One signing key for every component: the scheduler signs the tasks' tokens, the API server checks them.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Only triggered runs: unpausing a DAG must not also schedule its latest interval.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # Short heartbeats so that health and scheduling show within a second or two, not Airflow's 5 s.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
        # One parse at start and one on request (reparse); no periodic re-parse taking the two cores from the tasks.
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        # Else a reparse within 30 s of the last write keeps the earlier serialized DAG.
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "0",
    }
    for name in ("AIRFLOW_CONFIG", "AIRFLOW__CORE__SQL_ALCHEMY_CONN"):
        cluster_env.pop(name, None)
    cluster = AirflowCluster(folder, cluster_env, base_url, password, nodes)
    migrate = subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=cluster_env,
                             capture_output=True, text=True, cwd=folder)
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    cluster.mark("metadata database migrated")
    try:
        cluster.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        cluster.start("scheduler", "scheduler")
        cluster.start("dag-processor", "dag-processor")
        for node in nodes:
            # Logs are files in the shared AIRFLOW_HOME the API server reads: no log server per worker (they would share its port).
            cluster.start(
                node.split("@")[0], "celery", "worker", "--celery-hostname", node, "--concurrency", str(worker_concurrency),
                "--skip-serve-logs", "--without-mingle", "--without-gossip",
                env={"AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE, WORKER_NODE_VARIABLE: node},
            )
        cluster.mark("processes started")
        yield cluster
    finally:
        cluster.stop()
