"""A Redis and a PostgreSQL server of a test's own, started from this machine's binaries,
so a fault test can really stop and restart them without touching the servers the rest of
the session uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from modelserver.processes import free_port


class PrivateRedis:
    """redis-server on a free port, persisting to an append-only file as a production
    Redis that holds usage streams must (docs/configuration.md)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise TimeoutError("the private redis-server did not start")

    def stop(self) -> None:
        """SIGTERM: what `systemctl restart redis` sends; Redis writes its file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    with tempfile.TemporaryDirectory(prefix="switchboard-redis-") as directory:
        server = PrivateRedis(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def _postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not on this machine")
    return str(found)


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary directory. PostgreSQL refuses to run as root, so
    as root it runs as the `postgres` user, as the machine's own server does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(directory, "postgres")
        self._run(_postgres_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, *command: str) -> None:
        subprocess.run([*self.as_owner, *command], check=True, capture_output=True, cwd=self.directory)

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(_postgres_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.directory / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """`-m fast`: what a restart or a failover does to the clients: every session ends."""
        self._run(_postgres_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def copy_database(self, source_url: str, name: str) -> str:
        """A copy of `source_url`'s schema and rows, as database `name` on this server."""
        psql = [_postgres_binary("psql"), "-q", "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, self.url("postgres"), "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
        dump = subprocess.run([_postgres_binary("pg_dump"), "--no-owner", source_url], check=True, capture_output=True)
        psql.append(self.url(name))
        subprocess.run(psql, input=dump.stdout, check=True, capture_output=True)
        return self.url(name)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    directory = Path(tempfile.mkdtemp(prefix="switchboard-postgres-"))
    server = PrivatePostgres(directory)
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(directory, ignore_errors=True)
