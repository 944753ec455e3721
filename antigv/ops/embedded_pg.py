"""A private PostgreSQL cluster for when ``database.dsn`` is empty.

It lives under one directory (``var/pg`` by default) and listens only on a unix
socket inside it. When we run as root, the server binaries run as the
``postgres`` user, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg2
from psycopg2 import sql

DATABASE = "antigv"
SUPERUSER = "postgres"
PORT = 5432
INSTALL_HINT = "PostgreSQL server not found: install it with 'apt-get install postgresql' (Debian/Ubuntu)"


class EmbeddedError(Exception):
    """One line for the operator."""


def find_bindir() -> Path:
    """The directory holding pg_ctl/initdb: PATH first, then Debian's layout."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise EmbeddedError(INSTALL_HINT)


@dataclass(frozen=True)
class Cluster:
    root: Path
    port: int = PORT

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql:///{database}?host={quote(str(self.socket_dir), safe='')}&port={self.port}&user={SUPERUSER}"

    # --- running the server binaries ---------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        bindir = find_bindir()
        command = [str(bindir / args[0]), *args[1:]]
        kwargs: dict = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        result = subprocess.run(command, capture_output=True, text=True, cwd="/", **kwargs)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedError(f"{args[0]} failed: {detail[-1] if detail else result.returncode}")
        return result

    def _own(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SUPERUSER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialised():
            return
        find_bindir()
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise EmbeddedError("running as root needs a 'postgres' user to run the server") from None
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._own(self.root)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        )

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self, *, fast_unsafe: bool = False) -> None:
        """Create (first time) and start the cluster, then make sure the database exists.

        ``fast_unsafe`` turns off durability; only tests use it.
        """
        self.init()
        if not self.running():
            options = [f"-k {self.socket_dir}", "-c listen_addresses=''", f"-p {self.port}"]
            if fast_unsafe:
                options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                "60",
                "-o",
                " ".join(options),
            )
        self.create_database(DATABASE)

    def create_database(self, name: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg2.connect(self.dsn("postgres"))
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %(name)s", {"name": name})
                if cur.fetchone() is None:
                    # CREATE DATABASE takes no parameters; quote the identifier safely.
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")


def default_cluster(embedded_dir: str) -> Cluster:
    return Cluster(Path(embedded_dir).resolve())
