"""A throwaway PostgreSQL cluster for the tests: the machine's own initdb and pg_ctl, in a
temp dir, on a free loopback port, stopped (and deleted) at the end of the session.

Root cannot run initdb, so as root (CI) the cluster runs as the ``postgres`` user (or
``nobody``) in a temp dir it owns. The superuser ``vault`` logs in with a password over
TCP (scram-sha-256), so wrong-password start-up can be tested like a real deployment.
fsync is off for the tests (``durable=True`` turns it on, for the benchmark): the tests
stop and restart the server cleanly (a fast shutdown writes everything out) but never
crash the machine, and fsyncs would only slow the suite.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PgClientError", "PgCluster", "find_pg_bin"]

USER = "vault"
PASSWORD = "vault-test-password"  # a throwaway cluster's; never a real credential


class PgClientError(RuntimeError):
    """A client tool (psql, createdb, dropdb) failed; the message is its stderr."""


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb, else initdb on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).resolve().parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user() -> str | None:
    """Who runs the cluster: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    msg = "running as root and no postgres or nobody user to run PostgreSQL as"
    raise RuntimeError(msg)


class PgCluster:
    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        # durable: fsync on (the benchmark measures commits as a deployment makes them).
        self.durable = durable
        self.run_as = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="vault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._names = itertools.count()

    # -- commands ---------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.run_as is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            cmd = [runuser, "-u", self.run_as, "--", *cmd]
        return subprocess.run(
            cmd, check=check, capture_output=True, text=True, timeout=120, cwd=self.root
        )

    def _client(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        done = subprocess.run(
            [str(self.bin_dir / tool), "-h", self.host, "-p", str(self.port), "-U", USER, *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        if done.returncode != 0:
            raise PgClientError(done.stderr.strip())
        return done

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self.root.chmod(0o700)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        # In the data dir's own config: every later start (restart, start_server) uses it.
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{self.host}'",
            "unix_socket_directories": f"'{self.root}'",
            "fsync": "on" if self.durable else "off",
            "full_page_writes": "on" if self.durable else "off",
            "max_connections": "300",
            "shared_buffers": "'32MB'",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self.start_server()

    def stop_server(self) -> None:
        """Stop the server (fast: open connections are cut), keep the data."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        """Start a stopped server again on the same port and data."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"
        )

    def restart(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "restart")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
                check=False,
            )
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ----------------------------------------------------------------

    def url(self, database: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"vault_test_{os.getpid()}_{next(self._names)}"
        self._client("createdb", name)
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(PgClientError):
            self._client("dropdb", "--force", "--if-exists", name)

    def dump(self, database: str, path: Path) -> None:
        """A plain-SQL pg_dump of the database into ``path`` (what a backup job keeps)."""
        self._client("pg_dump", "-d", database, "--no-owner", "-f", str(path))

    def restore(self, path: Path) -> str:
        """A new database loaded from a dump; returns its name."""
        name = self.create_database()
        self._client("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", name, "-f", str(path))
        return name

    def psql(self, database: str, sql: str) -> str:
        return self._client(
            "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql
        ).stdout

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", self.host, "-p", str(self.port)],
                check=False,
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        msg = "the test PostgreSQL did not become ready"
        raise RuntimeError(msg)
