"""DB_POOL_* / DB_CONN_MAX_AGE / DB_DISABLE_SERVER_SIDE_CURSORS: read, validated, and turned into
Django's DATABASES (a pool per process on PostgreSQL, never persistent per-thread connections by default)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backendai import config

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgres://u@db.example:5432/bai"


def databases(tmp_path, **env) -> dict:
    """DATABASES["default"] as settings.py builds it from ``env`` (in a fresh interpreter)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "PYTEST"))}
    clean.update(BACKEND_DATA_DIR=str(tmp_path), SECRET_KEY="s" * 40, **env)
    out = subprocess.run([sys.executable, "-c", "import json; from backendai import settings; "
                          "print(json.dumps(settings.DATABASES['default'], default=str))"],
                         cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_postgresql_gets_a_pool_per_process_sized_from_the_environment(tmp_path):
    default = databases(tmp_path, DATABASE_URL=POSTGRES,
                        DB_POOL_MAX_SIZE="7", DB_POOL_MIN_SIZE="2", DB_POOL_TIMEOUT="2.5")
    assert default["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 7, "timeout": 2.5, "name": "backendai"}
    assert default["CONN_MAX_AGE"] == 0  # Django's pool requires it; no connection outlives its request
    assert default["DISABLE_SERVER_SIDE_CURSORS"] is False


def test_the_defaults_are_a_pool_of_ten_with_a_five_second_wait(tmp_path):
    default = databases(tmp_path, DATABASE_URL=POSTGRES)
    assert default["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 10, "timeout": 5.0, "name": "backendai"}


def test_a_pool_size_of_zero_turns_the_pool_off_and_keeps_connections_db_conn_max_age(tmp_path):
    default = databases(tmp_path, DATABASE_URL=POSTGRES, DB_POOL_MAX_SIZE="0", DB_CONN_MAX_AGE="60",
                        DB_DISABLE_SERVER_SIDE_CURSORS="true")
    assert "pool" not in default["OPTIONS"]
    assert default["CONN_MAX_AGE"] == 60
    assert default["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_sqlite_has_no_pool_and_no_persistent_connections(tmp_path):
    default = databases(tmp_path, DB_POOL_MAX_SIZE="5", DB_CONN_MAX_AGE="60")
    assert "pool" not in default.get("OPTIONS", {})
    assert default["CONN_MAX_AGE"] == 0


@pytest.mark.parametrize("variable,value", [
    ("DB_POOL_MAX_SIZE", "many"), ("DB_POOL_MAX_SIZE", "-1"), ("DB_POOL_MIN_SIZE", "-1"),
    ("DB_POOL_TIMEOUT", "0"), ("DB_POOL_TIMEOUT", "soon"), ("DB_POOL_TIMEOUT", "inf"),
    ("DB_CONN_MAX_AGE", "-5"), ("DB_DISABLE_SERVER_SIDE_CURSORS", "maybe"),
])
def test_a_bad_pool_setting_stops_start_up_naming_the_variable(tmp_path, variable, value):
    with pytest.raises(config.ConfigError) as raised:
        config.load({"BACKEND_DATA_DIR": str(tmp_path), variable: value})
    assert raised.value.variable == variable


def test_a_minimum_above_the_maximum_is_refused(tmp_path):
    with pytest.raises(config.ConfigError) as raised:
        config.load({"BACKEND_DATA_DIR": str(tmp_path), "DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "2"})
    assert raised.value.variable == "DB_POOL_MIN_SIZE"
