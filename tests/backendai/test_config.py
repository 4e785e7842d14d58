"""Configuration from the environment: defaults, and a bad value stops start-up naming the variable."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backendai import config

ROOT = Path(__file__).resolve().parents[2]


def test_the_embedded_defaults_need_no_services(tmp_path):
    loaded = config.load({"BACKEND_DATA_DIR": str(tmp_path)})
    assert loaded.database_url == f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert loaded.redis_url is None and loaded.embedded
    assert len(loaded.secret_key) >= 40


def test_the_generated_secret_key_is_kept_and_private(tmp_path):
    first = config.load({"BACKEND_DATA_DIR": str(tmp_path)}).secret_key
    assert config.load({"BACKEND_DATA_DIR": str(tmp_path)}).secret_key == first
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_production_values_are_read(tmp_path):
    loaded = config.load({
        "BACKEND_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db:5432/bai", "REDIS_URL": "redis://r:6379/1",
        "SECRET_KEY": "k" * 50, "ALLOWED_HOSTS": "a.example, b.example", "TRUSTED_PROXIES": "10.0.0.0/8",
    })
    assert loaded.database_url.startswith("postgres://") and loaded.redis_url == "redis://r:6379/1"
    assert loaded.allowed_hosts == ["a.example", "b.example"] and not loaded.embedded


@pytest.mark.parametrize(
    "variable,value",
    [("DATABASE_URL", "mysql://x@y/z"), ("REDIS_URL", "http://localhost"), ("SECRET_KEY", "short"),
     ("DEBUG", "maybe"), ("DEFAULT_RATE_LIMIT", "lots"), ("DEFAULT_RATE_LIMIT", "0"), ("TRUSTED_PROXIES", "10.0.0.0/99"),
     ("LOG_LEVEL", "LOUD"), ("VFOLDER_CLONE_TIMEOUT", "10"), ("VFOLDER_CLONE_TIMEOUT", "soon")],
)
def test_a_bad_value_names_the_variable(tmp_path, variable, value):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"BACKEND_DATA_DIR": str(tmp_path), variable: value})
    assert variable in str(caught.value)


def test_a_bad_value_stops_start_up_with_a_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(BACKEND_DATA_DIR=str(tmp_path), DATABASE_URL="mysql://nope")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


def test_links_and_hints_have_their_defaults(tmp_path):
    loaded = config.load({"BACKEND_DATA_DIR": str(tmp_path)})
    assert loaded.redis_socket_timeout == 30 and loaded.redis_socket_timeout > config.CHANNEL_LAYER_BLOCKING_RECEIVE
    assert loaded.agent_sync_max_wait == 15 and loaded.internal_web_url is None
    loaded = config.load({"BACKEND_DATA_DIR": str(tmp_path), "REDIS_SOCKET_TIMEOUT": "60", "AGENT_SYNC_MAX_WAIT": "0",
                          "INTERNAL_WEB_URL": "http://127.0.0.1:8091/"})
    assert loaded.redis_socket_timeout == 60 and loaded.agent_sync_max_wait == 0
    assert loaded.internal_web_url == "http://127.0.0.1:8091"


@pytest.mark.parametrize("variable,value", [
    ("REDIS_SOCKET_TIMEOUT", "5"), ("REDIS_SOCKET_TIMEOUT", "soon"), ("AGENT_SYNC_MAX_WAIT", "-1"),
    ("AGENT_SYNC_MAX_WAIT", "301"), ("INTERNAL_WEB_URL", "127.0.0.1:8091"), ("INTERNAL_WEB_URL", "ftp://x"),
])
def test_a_bad_link_or_hint_setting_names_the_variable(tmp_path, variable, value):
    with pytest.raises(config.ConfigError) as caught:
        config.load({"BACKEND_DATA_DIR": str(tmp_path), variable: value})
    assert variable in str(caught.value)


def test_every_redis_connection_reads_longer_than_the_channel_layers_blocking_receive():
    from django.conf import settings

    options = settings.REDIS_CONNECTION_OPTIONS
    assert options["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT > config.CHANNEL_LAYER_BLOCKING_RECEIVE
    assert options["socket_keepalive"] and 0 < options["health_check_interval"] < options["socket_timeout"]
    if settings.REDIS_URL:
        from channels_redis.core import RedisChannelLayer

        host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
        assert host["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT
        assert RedisChannelLayer.brpop_timeout == config.CHANNEL_LAYER_BLOCKING_RECEIVE
        assert settings.CACHES["default"]["OPTIONS"]["socket_timeout"] == settings.REDIS_SOCKET_TIMEOUT


def test_the_readme_configuration_table_names_every_variable_the_loader_reads():
    read = set(re.findall(r'\(env, "([A-Z][A-Z0-9_]+)"', (ROOT / "backendai" / "config.py").read_text()))
    table = (ROOT / "README.md").read_text().split("## Configuration", 1)[1]
    assert read and not sorted(name for name in read if f"`{name}`" not in table)


def test_processes_starting_together_on_a_fresh_data_directory_all_get_the_one_generated_secret_key(
        tmp_path, monkeypatch):
    """The embedded stack starts the web server, the worker and beat at once: each may find no key
    file, and the later ones must read the first one's key, never fail (FileExistsError) and never
    read a file still being written (an empty key)."""
    first = config.load({"BACKEND_DATA_DIR": str(tmp_path)}).secret_key
    shared = config.storage_proxy_secret({}, tmp_path)
    monkeypatch.setattr(Path, "exists", lambda self: False)  # as if it checked just before the first wrote it
    assert config.load({"BACKEND_DATA_DIR": str(tmp_path)}).secret_key == first
    assert config.storage_proxy_secret({}, tmp_path) == shared


def test_a_generated_secret_is_never_seen_half_written(tmp_path, monkeypatch):
    """The key appears under its name only once complete: an empty or partial file is never read."""
    seen = []
    real_open = os.open

    def watching_open(path, *args, **kwargs):
        if str(path).endswith("/secret_key"):
            seen.append(os.path.exists(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", watching_open)
    key = config.load({"BACKEND_DATA_DIR": str(tmp_path)}).secret_key
    assert (tmp_path / "secret_key").read_text() == key and len(key) >= 40
    assert seen == []  # written elsewhere and linked into place whole, not opened under its name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftover temporary file
