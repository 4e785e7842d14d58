"""Daemon configuration: flags > BAI_AGENT_* variables > TOML file > defaults; bad values name their source."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from agents.daemon.config import AgentConfig, ConfigError, default_agent_id, load_config, parse_size
from helpers import require

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_follow_the_protocol(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, args = load_config([], {})
    assert config.agent_id == default_agent_id()
    assert config.scaling_group == "default"
    assert config.backend == "docker"
    assert config.host_address == "127.0.0.1"
    assert config.port_range == (30000, 31000)
    assert config.sync_interval == 5.0
    assert config.scratch_root == tmp_path / "var" / f"agent-{config.agent_id}"
    assert config.token is None and config.address is None and config.gpu_devices is None
    assert config.kernel_host == "127.0.0.1"
    assert not args.discover


def test_flags_beat_environment_which_beats_the_toml_file(tmp_path):
    toml = tmp_path / "agent.toml"
    toml.write_text('agent_id = "from-toml"\nregion = "toml-region"\nsync_interval = 7\n'
                    'port_range = "40000-40010"\n[agent]\nbackend = "local"\nreserved_mem = "1g"\n')
    env = {"BAI_AGENT_CONFIG": str(toml), "BAI_AGENT_ID": "from-env", "BAI_AGENT_REGION": "env-region",
           "BAI_AGENT_TOKEN": "secret"}
    config, _ = load_config(["--agent-id", "from-flag", "--gpu-devices", "0,GPU-abc-1"], env)
    assert config.agent_id == "from-flag"
    assert config.region == "env-region"
    assert config.sync_interval == 7.0
    assert config.port_range == (40000, 40010)
    assert config.backend == "local"
    assert config.reserved_mem == 1024**3
    assert config.token == "secret"
    assert config.gpu_devices == ("0", "GPU-abc-1")
    assert config.config_file == toml
    assert config.public()["token"] == "***"


def test_an_advertised_address_is_the_kernel_host_when_publishing_on_all_interfaces():
    config, _ = load_config(["--host-address", "0.0.0.0", "--address", "10.0.0.5"], {})
    assert config.public_host == "10.0.0.5"
    assert config.kernel_host == "10.0.0.5"
    assert AgentConfig(host_address="10.0.0.7", address="node.example").kernel_host == "10.0.0.7"


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--port-range", "31000-30000"], {}, "--port-range"),
    ([], {"BAI_AGENT_SYNC_INTERVAL": "soon"}, "BAI_AGENT_SYNC_INTERVAL"),
    (["--backend", "podman"], {}, "--backend"),
    ([], {"BAI_AGENT_ID": "bad id!"}, "BAI_AGENT_ID"),
    (["--manager-url", "ftp://x"], {}, "--manager-url"),
    (["--reserved-mem", "lots"], {}, "--reserved-mem"),
    (["--cpu-limit", "-1"], {}, "--cpu-limit"),
    (["--gpu-devices", "first"], {}, "--gpu-devices"),
    (["--host-address", "localhost"], {}, "--host-address"),
    (["--log-level", "loud"], {}, "--log-level"),
])
def test_bad_values_name_the_option_or_variable(argv, env, named):
    with pytest.raises(ConfigError, match=named.replace("-", r"\-")):
        load_config(argv, env)


def test_bad_toml_values_and_unknown_keys_name_the_key(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text("sync_interval = -3\n")
    with pytest.raises(ConfigError, match="sync_interval in"):
        load_config(["--config", str(toml)], {})
    toml.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown option.*colour"):
        load_config(["--config", str(toml)], {})
    with pytest.raises(ConfigError, match="not found"):
        load_config(["--config", str(tmp_path / "missing.toml")], {})


def test_sizes_and_cpu_counts_parse():
    assert parse_size("4g") == 4 * 1024**3
    assert parse_size("1.5GiB") == 3 * 512 * 1024**2
    assert parse_size("1024") == 1024
    config, _ = load_config(["--cpu-limit", "2.5", "--mem-limit", "512m"], {})
    assert config.cpu_limit == Decimal("2.5") and config.mem_limit == 512 * 1024**2


def test_the_daemon_exits_with_a_message_naming_the_bad_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_AGENT_")}
    env["BAI_AGENT_PORT_RANGE"] = "lots"
    result = subprocess.run([sys.executable, "-m", "agents.daemon", "--token", "x"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "BAI_AGENT_PORT_RANGE" in result.stderr and "Traceback" not in result.stderr
    env.pop("BAI_AGENT_PORT_RANGE")
    result = subprocess.run([sys.executable, "-m", "agents.daemon", "--backend", "local"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "BAI_AGENT_TOKEN" in result.stderr


def test_the_daemon_imports_nothing_from_django_or_the_manager():
    """Only the shared, Django-free protocol module (``agents.protocol``) comes from outside the daemon."""
    code = ("import sys, agents.daemon.cli, agents.daemon.agent, agents.daemon.backends.docker, "
            "agents.daemon.backends.local\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'channels', "
            "'celery') or (m.startswith('agents.') and not m.startswith(('agents.daemon', 'agents.protocol'))))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


# --- the local backend says what it is (issue 9) ------------------------------------------------

def test_the_local_backend_refuses_root_unless_the_operator_allows_it(tmp_path):
    from agents.daemon.backends.base import BackendSettings
    from agents.daemon.cli import local_backend_refusal

    config, _ = load_config(["--backend", "local"], {})
    assert config.local_allow_root is False
    refusal = local_backend_refusal(config, euid=0)
    assert refusal and "--local-allow-root" in refusal and "BAI_AGENT_LOCAL_ALLOW_ROOT" in refusal
    assert local_backend_refusal(config, euid=1000) is None
    assert local_backend_refusal(load_config(["--backend", "docker"], {})[0], euid=0) is None
    for argv, env in ((["--backend", "local", "--local-allow-root"], {}),
                      (["--backend", "local", "--local-allow-root", "yes"], {}),
                      (["--backend", "local"], {"BAI_AGENT_LOCAL_ALLOW_ROOT": "true"})):
        allowed, _ = load_config(argv, env)
        assert allowed.local_allow_root is True and local_backend_refusal(allowed, euid=0) is None, argv
    assert load_config(["--local-allow-root", "false"], {"BAI_AGENT_LOCAL_ALLOW_ROOT": "1"})[0].local_allow_root is False
    with pytest.raises(ConfigError, match="BAI_AGENT_LOCAL_ALLOW_ROOT"):
        load_config([], {"BAI_AGENT_LOCAL_ALLOW_ROOT": "sometimes"})
    # kernel services are published where the app proxy reaches them: loopback unless told otherwise
    assert BackendSettings.from_config(config).host_address == "127.0.0.1"


def test_the_local_backend_warns_that_it_has_no_isolation(caplog):
    import logging

    from agents.daemon.cli import warn_about_local_backend

    caplog.set_level(logging.WARNING, logger="agents.daemon")
    warn_about_local_backend(load_config(["--backend", "docker"], {})[0], os.geteuid())
    assert not caplog.records
    warn_about_local_backend(load_config(["--backend", "local"], {})[0], os.geteuid())
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "no isolation" in record.getMessage()
    assert "untrusted users" in record.getMessage()


def test_a_root_daemon_with_the_local_backend_exits_2_naming_the_option():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAI_AGENT_")}
    # not root here? become root of a user namespace, which is what the daemon checks (its euid)
    as_root = [] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user"]
    require(not as_root or shutil.which("unshare") is not None, "unshare (util-linux) to run the daemon as root")
    result = subprocess.run([*as_root, sys.executable, "-m", "agents.daemon", "--backend", "local", "--token", "x",
                             "--manager-url", "http://127.0.0.1:9"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "--local-allow-root" in result.stderr and "root" in result.stderr and "Traceback" not in result.stderr


def test_the_local_runtime_python_comes_from_the_flag_or_variable_and_reaches_the_backend(tmp_path):
    from agents.daemon.backends.base import BackendSettings

    config, _ = load_config(["--scratch-root", str(tmp_path)], {"BAI_AGENT_RUNTIME_PYTHON": "/opt/py/bin/python3"})
    assert config.runtime_python == Path("/opt/py/bin/python3")
    assert BackendSettings.from_config(config).runtime_python == "/opt/py/bin/python3"
    default, _ = load_config(["--scratch-root", str(tmp_path)], {})
    assert default.runtime_python is None and BackendSettings.from_config(default).runtime_python is None
