"""Run the whole stack on one machine in the foreground (the embedded mode of
``scripts/run``): the web/websocket server, a Celery worker with beat, a
local agent and an app proxy worker.  Output is prefixed per process; Ctrl-C stops everything.

If a process dies, the others are stopped too and the exit status says which,
so a broken stack never looks half alive."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def processes(args, euid: int | None = None) -> dict[str, list[str]]:
    """The command line of every process; ``euid`` is who runs them (default: this process's user)."""
    euid = os.geteuid() if euid is None else euid
    py = sys.executable
    url = f"http://127.0.0.1:{args.port}"
    data = Path(args.data_dir)
    return {
        "web": [py, "-m", "daphne", "-b", args.host, "-p", str(args.port), "backendai.asgi:application"],
        "worker": [py, "-m", "celery", "-A", "backendai.celery", "worker", "--beat", "--pool=solo", "--loglevel=INFO",
                   "--schedule", str(data / "celerybeat-schedule"), "--without-gossip", "--without-mingle",
                   "--hostname", f"embedded@{args.port}"],
        "agent": [py, "-m", "agents.daemon", "--manager-url", url, "--agent-id", args.agent_id,
                  "--scaling-group", "default", "--backend", args.agent_backend,
                  "--scratch-root", str(data / "agent"), "--port-range", args.agent_ports,
                  *(["--local-allow-root"] if local_as_root(args, euid) else [])],
        # the app proxy worker: one port per opened app from --proxy-ports, setup links on --proxy-api-port
        "proxy": [py, "-m", "appproxy.worker", "--coordinator-url", url, "--name", "local-proxy", "--mode", "port",
                  "--bind-host", args.host, "--advertised-host", "127.0.0.1" if args.host in ("0.0.0.0", "::")
                  else args.host, "--port-range", args.proxy_ports,
                  "--api-port", str(args.proxy_api_port or args.port + 1),
                  "--heartbeat-interval", "5", "--sync-interval", "10"],
    }


def local_as_root(args, euid: int) -> bool:
    """The local agent would run as root: the daemon refuses that unless told, so the embedded stack tells it."""
    return args.agent_backend == "local" and euid == 0


def local_backend_banner(args, euid: int | None = None) -> str | None:
    """One line saying what the local backend is (None with the Docker backend)."""
    if args.agent_backend != "local":
        return None
    import pwd

    uid = os.geteuid() if euid is None else euid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    root = " (as root: started with --local-allow-root)" if uid == 0 else ""
    return (f"[stack ] WARNING: the local agent runs every session's code as user {user}{root} on this machine "
            "with no isolation; never use it for untrusted users (--agent-backend docker isolates them)")


def _pump(name: str, stream, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sys.stdout.write(f"[{name:6}] {line.decode(errors='replace')}")
            sys.stdout.flush()


def wait_for_http(url: str, timeout: float = 60) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.3)
    return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--data-dir", default=str(ROOT / "var"))
    parser.add_argument("--agent-id", default="local-agent")
    parser.add_argument("--agent-backend", default="local", choices=["local", "docker"])
    parser.add_argument("--agent-ports", default="31000-31999")
    parser.add_argument("--proxy-ports", default="32000-32099", help="ports the app proxy gives opened apps")
    parser.add_argument("--proxy-api-port", type=int, default=0, help="app proxy setup port (default: --port + 1)")
    args = parser.parse_args(argv)

    metrics_dir = Path(args.data_dir) / "prometheus"
    if metrics_dir.exists():
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
    metrics_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BACKEND_DATA_DIR=str(args.data_dir), PYTHONUNBUFFERED="1",
               PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    lock = threading.Lock()
    children: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def stop(*_):
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    commands = processes(args)
    banner = local_backend_banner(args)
    if banner:
        print(banner, flush=True)
    order = ["web", "worker", "agent", "proxy"]
    proxy_token = Path(args.data_dir) / "proxy-token"
    if not proxy_token.exists():
        print(f"[stack ] no {proxy_token} (populate --proxy-token writes it): running without the app proxy",
              flush=True)
        order.remove("proxy")
    for name in order:
        if name == "agent" and not wait_for_http(f"http://127.0.0.1:{args.port}/healthz"):
            print("[stack ] the web server did not come up; stopping", flush=True)
            stopping.set()
            break
        child_env = dict(env)
        if name == "agent":  # the token travels in the environment, never on a command line
            child_env["BAI_AGENT_TOKEN"] = (Path(args.data_dir) / "agent-token").read_text().strip()
        if name == "proxy":
            child_env["BAI_PROXY_TOKEN"] = proxy_token.read_text().strip()
        child = subprocess.Popen(commands[name], cwd=ROOT, env=child_env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        children[name] = child
        threading.Thread(target=_pump, args=(name, child.stdout, lock), daemon=True).start()

    failed = None
    while not stopping.is_set():
        for name, child in children.items():
            if child.poll() is not None:
                failed = name
                print(f"[stack ] {name} exited with status {child.returncode}; stopping the stack", flush=True)
                stopping.set()
                break
        time.sleep(0.5)

    for name in reversed(order):  # the proxy and agent first, so they can say goodbye to the web server
        child = children.get(name)
        if child and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
    print("[stack ] stopped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
