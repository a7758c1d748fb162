"""midpay.config (settings, precedence, secrets) and the command line's configuration errors.

Library tests call ``load_settings`` with an explicit ``environ`` and a temporary working
directory, so neither the real environment nor a stray ``.env`` can leak in. The CLI tests
run ``python -m midpay`` as a real process with every midpay variable removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import midpay
from midpay import config
from midpay.config import Settings, load_settings, redact
from midpay.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

DB_PASSWORD = "pw-s3cret"
DB_URL = f"postgresql://u:{DB_PASSWORD}@h/db"
PROD_KEY = "Mid-server-pr0d-key-AbC123"
SB_KEY = "SB-Mid-server-sandbox-key-XyZ789"


@pytest.fixture(autouse=True)
def _isolated_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ./.env from the repository or elsewhere is read by accident."""
    monkeypatch.chdir(tmp_path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence --------------------------------------------------------------------------


def test_defaults_with_nothing_set() -> None:
    s = load_settings(environ={})
    assert s.database_url is None
    assert s.server_key is None
    assert s.is_production is False
    assert s.api_url == "https://api.sandbox.midtrans.com"
    assert s.timeout == 10
    assert s.home == config.default_home()


def test_env_file_is_read(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "custom.env",
        f"DATABASE_URL={DB_URL}\nMIDTRANS_SERVER_KEY={SB_KEY}\nMIDPAY_TIMEOUT=7\nMIDPAY_HOME={tmp_path}/h\n",
    )
    s = load_settings(env_file=f, environ={})
    assert s.database_url == DB_URL
    assert s.server_key == SB_KEY
    assert s.timeout == 7
    assert s.home == tmp_path / "h"


def test_real_environment_wins_over_env_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "custom.env", "DATABASE_URL=postgresql://file/db\nMIDPAY_TIMEOUT=7\nMIDTRANS_SERVER_KEY=from-file\n")
    s = load_settings(env_file=f, environ={"DATABASE_URL": "postgresql://env/db", "MIDTRANS_SERVER_KEY": "from-env"})
    assert s.database_url == "postgresql://env/db"
    assert s.server_key == "from-env"
    assert s.timeout == 7  # not in the environment: the file's value


def test_dot_env_in_cwd_is_read_without_env_file(tmp_path: Path) -> None:
    _write(tmp_path / ".env", "DATABASE_URL=embedded\nMIDTRANS_API_URL=http://127.0.0.1:8765\n")
    s = load_settings(environ={})
    assert s.database_url == "embedded"
    assert s.api_url == "http://127.0.0.1:8765"


def test_real_environment_wins_over_dot_env(tmp_path: Path) -> None:
    _write(tmp_path / ".env", "DATABASE_URL=embedded\nMIDPAY_TIMEOUT=3\n")
    s = load_settings(environ={"DATABASE_URL": DB_URL})
    assert s.database_url == DB_URL
    assert s.timeout == 3


def test_env_file_replaces_dot_env(tmp_path: Path) -> None:
    """`--env-file` names another file: ./.env is then not read at all."""
    _write(tmp_path / ".env", "DATABASE_URL=embedded\nMIDPAY_TIMEOUT=3\n")
    f = _write(tmp_path / "other.env", "MIDTRANS_SERVER_KEY=k-other\n")
    s = load_settings(env_file=f, environ={})
    assert s.server_key == "k-other"
    assert s.database_url is None
    assert s.timeout == 10


def test_dot_env_elsewhere_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / ".env", "DATABASE_URL=embedded\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert load_settings(environ={}).database_url is None


def test_missing_env_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=missing, environ={})
    assert info.value.exit_code == 2
    assert str(missing) in str(info.value)


def test_env_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=tmp_path, environ={})
    assert info.value.exit_code == 2


def test_env_file_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.env"
    f.write_bytes(b"MIDTRANS_SERVER_KEY=caf\xe9\xff\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=f, environ={})
    assert info.value.exit_code == 2
    assert "caf" not in str(info.value)


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    s = load_settings(environ={"DATABASE_URL": "", "MIDTRANS_SERVER_KEY": "", "MIDPAY_TIMEOUT": ""})
    assert s.database_url is None
    assert s.server_key is None
    assert s.timeout == 10


# --- MIDTRANS_IS_PRODUCTION and the base URL ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "production"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("TRUE", True), (" False ", False)],
)
def test_is_production_parsing(raw: str, production: bool) -> None:
    s = load_settings(environ={"MIDTRANS_IS_PRODUCTION": raw})
    assert s.is_production is production
    assert s.api_url == ("https://api.midtrans.com" if production else "https://api.sandbox.midtrans.com")


@pytest.mark.parametrize("raw", ["maybe", "2", "prod", "tru"])
def test_is_production_garbage_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MIDTRANS_IS_PRODUCTION": raw})
    assert info.value.exit_code == 2
    assert "MIDTRANS_IS_PRODUCTION" in str(info.value)


def test_is_production_from_env_file(tmp_path: Path) -> None:
    f = _write(tmp_path / "p.env", "MIDTRANS_IS_PRODUCTION=true\n")
    assert load_settings(env_file=f, environ={}).api_url == "https://api.midtrans.com"
    # the real environment wins over the file here too
    assert load_settings(env_file=f, environ={"MIDTRANS_IS_PRODUCTION": "false"}).is_production is False


@pytest.mark.parametrize("production", ["true", "false"])
def test_api_url_override(production: str) -> None:
    s = load_settings(environ={"MIDTRANS_IS_PRODUCTION": production, "MIDTRANS_API_URL": "http://127.0.0.1:8765/"})
    assert s.api_url == "http://127.0.0.1:8765"


def test_api_url_override_keeps_path_without_trailing_slash() -> None:
    s = load_settings(environ={"MIDTRANS_API_URL": "https://proxy.example/midtrans/"})
    assert s.api_url == "https://proxy.example/midtrans"


@pytest.mark.parametrize("raw", ["ftp://example.com", "api.midtrans.com", "127.0.0.1:8765", "file:///etc/passwd"])
def test_api_url_non_http_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MIDTRANS_API_URL": raw})
    assert info.value.exit_code == 2
    assert "MIDTRANS_API_URL" in str(info.value)


@pytest.mark.parametrize("raw", ["http://", "https:///"])
def test_api_url_without_host_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(environ={"MIDTRANS_API_URL": raw})


# --- MIDPAY_TIMEOUT ----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [("10", 10.0), ("2.5", 2.5), ("30", 30.0), ("0.1", 0.1)])
def test_timeout_parsing(raw: str, value: float) -> None:
    assert load_settings(environ={"MIDPAY_TIMEOUT": raw}).timeout == value


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "nan", "inf", "10s", "1e9"])
def test_timeout_bad_values_are_refused(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MIDPAY_TIMEOUT": raw})
    assert info.value.exit_code == 2
    assert "MIDPAY_TIMEOUT" in str(info.value)


# --- the server key ----------------------------------------------------------------------


@pytest.mark.parametrize("key", [SB_KEY, f"  {SB_KEY}  "])
def test_sandbox_key_in_production_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"MIDTRANS_IS_PRODUCTION": "true", "MIDTRANS_SERVER_KEY": key})
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "MIDTRANS_IS_PRODUCTION" in message
    assert SB_KEY not in message
    assert "sandbox-key-XyZ789" not in message


def test_sandbox_key_in_sandbox_is_fine() -> None:
    assert load_settings(environ={"MIDTRANS_SERVER_KEY": SB_KEY}).server_key == SB_KEY


@pytest.mark.parametrize("production", ["true", "false"])
def test_key_without_known_prefix_is_accepted(production: str) -> None:
    s = load_settings(environ={"MIDTRANS_IS_PRODUCTION": production, "MIDTRANS_SERVER_KEY": "some-custom-key-42"})
    assert s.server_key == "some-custom-key-42"


def test_production_key_in_production() -> None:
    s = load_settings(environ={"MIDTRANS_IS_PRODUCTION": "true", "MIDTRANS_SERVER_KEY": PROD_KEY})
    assert s.server_key == PROD_KEY
    assert s.require_server_key() == PROD_KEY


def test_require_server_key_missing_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}).require_server_key()
    assert info.value.exit_code == 2
    assert "MIDTRANS_SERVER_KEY" in str(info.value)


# --- DATABASE_URL ------------------------------------------------------------------------


def test_require_database_url_missing_names_variable_and_embedded() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}).require_database_url()
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "DATABASE_URL" in message
    assert "embedded" in message
    assert "\n" not in message


@pytest.mark.parametrize("url", [DB_URL, "embedded"])
def test_require_database_url_given(url: str) -> None:
    assert load_settings(environ={"DATABASE_URL": url}).require_database_url() == url


# --- secrets -----------------------------------------------------------------------------


def _full() -> Settings:
    return load_settings(environ={"DATABASE_URL": DB_URL, "MIDTRANS_SERVER_KEY": PROD_KEY})


def test_repr_hides_secrets() -> None:
    s = _full()
    for text in (repr(s), str(s), f"{s}", f"{s!r}"):
        assert PROD_KEY not in text
        assert DB_PASSWORD not in text
        assert "Settings(" in text
    # the other fields are still useful for debugging
    assert "api.sandbox.midtrans.com" in repr(s)


def test_repr_of_partial_settings() -> None:
    s = load_settings(environ={"DATABASE_URL": "embedded"})
    assert "embedded" in repr(s)


def test_secrets_lists_key_and_database_password() -> None:
    import base64

    token = base64.b64encode(f"{PROD_KEY}:".encode()).decode()
    assert {PROD_KEY, DB_PASSWORD, token} <= set(_full().secrets())


@pytest.mark.parametrize(
    "url",
    ["host=h user=u password=pw-s3cret dbname=d", f"postgresql://u@h/db?password={DB_PASSWORD}&sslmode=require"],
)
def test_secrets_finds_password_in_other_url_forms(url: str) -> None:
    assert DB_PASSWORD in load_settings(environ={"DATABASE_URL": url}).secrets()


def test_secrets_empty_when_nothing_secret() -> None:
    assert load_settings(environ={}).secrets() == []
    assert load_settings(environ={"DATABASE_URL": "embedded"}).secrets() == []
    assert load_settings(environ={"DATABASE_URL": "postgresql://u@h/db"}).secrets() == []


def test_redact_hides_both_secrets() -> None:
    s = _full()
    text = f"cannot connect to {DB_URL} with key {PROD_KEY}; again {PROD_KEY}"
    out = redact(text, s.secrets())
    assert PROD_KEY not in out
    assert DB_PASSWORD not in out
    assert out == "cannot connect to postgresql://u:***@h/db with key ***; again ***"


def test_redact_prefers_longer_secret_first() -> None:
    # a secret that contains another must not leave a tail behind
    out = redact("x abcdef y", ["abc", "abcdef"])
    assert out == "x *** y"


# --- the command line, as a real process -------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MIDTRANS_", "MIDPAY_")) and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _midpay(cwd: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "midpay", *args],
        cwd=cwd,
        env=_clean_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    assert "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_cli_migrate_without_database_url(tmp_path: Path) -> None:
    proc = _midpay(tmp_path, "migrate")
    assert proc.returncode == 2, proc
    line = _assert_one_error_line(proc)
    assert "DATABASE_URL" in line
    assert "embedded" in line
    assert proc.stdout == ""


def test_cli_missing_env_file(tmp_path: Path) -> None:
    proc = _midpay(tmp_path, "--env-file", "/nonexistent", "migrate")
    assert proc.returncode == 2, proc
    line = _assert_one_error_line(proc)
    assert "/nonexistent" in line


def test_cli_reads_dot_env_and_environment_wins(tmp_path: Path) -> None:
    _write(tmp_path / ".env", "MIDPAY_TIMEOUT=not-a-number\n")
    proc = _midpay(tmp_path, "migrate")
    assert proc.returncode == 2, proc
    assert "MIDPAY_TIMEOUT" in _assert_one_error_line(proc)
    # the real environment overrides the bad value: the next problem is the missing DATABASE_URL
    proc = _midpay(tmp_path, "migrate", MIDPAY_TIMEOUT="5")
    assert proc.returncode == 2, proc
    line = _assert_one_error_line(proc)
    assert "DATABASE_URL" in line
    assert "MIDPAY_TIMEOUT" not in line


def test_cli_version(tmp_path: Path) -> None:
    proc = _midpay(tmp_path, "--version")
    assert proc.returncode == 0, proc
    assert proc.stdout == f"midpay {midpay.__version__}\n"
    assert midpay.__version__ == "0.1.0"


HELP_COMMANDS = [
    (),
    ("migrate",),
    ("charge",),
    ("status",),
    ("reconcile",),
    ("replay-webhook",),
    ("sandbox",),
    ("sandbox", "serve"),
    ("sandbox", "pay"),
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "midpay")
def test_cli_help(tmp_path: Path, command: tuple[str, ...]) -> None:
    # configuration that would fail if anything were resolved: --help must not need it
    _write(tmp_path / ".env", "MIDTRANS_IS_PRODUCTION=garbage\n")
    proc = _midpay(tmp_path, *command, "--help")
    assert proc.returncode == 0, proc
    assert "Usage:" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert " ".join(("midpay", *command)) + " [OPTIONS]" in proc.stdout


def test_cli_help_lists_every_command(tmp_path: Path) -> None:
    proc = _midpay(tmp_path, "--help")
    for name in ("migrate", "charge", "status", "reconcile", "replay-webhook", "sandbox"):
        assert name in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("reconcile", "--concurrency", "0"),
        ("reconcile", "--limit", "0"),
        ("charge",),  # --amount is required
        ("charge", "--amount", "lots"),
        ("--no-such-flag", "migrate"),
        ("no-such-command",),
        ("sandbox", "pay", "order-1", "--status", "refund"),
    ],
    ids=lambda a: " ".join(a),
)
def test_cli_bad_usage_exits_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    proc = _midpay(tmp_path, *args)
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    assert "Error" in proc.stderr


@pytest.mark.parametrize("where", ["env-file", "environment"])
def test_cli_sandbox_key_in_production_does_not_leak(tmp_path: Path, where: str) -> None:
    leak = "SB-Mid-server-leakcheck-123"
    if where == "env-file":
        f = _write(tmp_path / "prod.env", f"MIDTRANS_IS_PRODUCTION=true\nMIDTRANS_SERVER_KEY={leak}\n")
        proc = _midpay(tmp_path, "--env-file", str(f), "status", "X")
    else:
        proc = _midpay(tmp_path, "status", "X", MIDTRANS_IS_PRODUCTION="true", MIDTRANS_SERVER_KEY=leak)
    assert proc.returncode == 2, proc
    assert leak not in proc.stdout
    assert leak not in proc.stderr
    assert "leakcheck" not in proc.stdout + proc.stderr
    line = _assert_one_error_line(proc)
    assert "MIDTRANS_IS_PRODUCTION" in line


def test_cli_unreachable_database_does_not_leak_password(tmp_path: Path) -> None:
    # port 1 on loopback: refused at once, no server needed
    url = f"postgresql://u:{DB_PASSWORD}@127.0.0.1:1/db?connect_timeout=2"
    proc = _midpay(tmp_path, "migrate", DATABASE_URL=url)
    assert proc.returncode == 3, proc
    assert DB_PASSWORD not in proc.stdout + proc.stderr
    _assert_one_error_line(proc)
