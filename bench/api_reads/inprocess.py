#!/usr/bin/env python
"""Benchmark: the Python cost of each API read in one process, this tree against another, side by side.

    .venv/bin/python bench/api_reads/inprocess.py [--baseline-root DIR] [--requests 200] [--rounds 2]
        [--sessions 10000] [--profile DIR] [--pg ...] [--db bai_bench_4_inproc] [--redis ...] [--short]

The same data as ``bench/api_reads/run.py`` (its ``seed`` and ``add_sessions``, into a scratch
PostgreSQL database dropped at the end) and the same five reads, each sent ``--requests`` times
through Django's test client (WSGI, all the middleware, the production settings with Redis), no
server and no load generator: it prints the CPU time per request (``time.process_time``, the best
of five batches), the number that decides how many requests a core serves, and the Python function
calls per request (cProfile of one more batch), which no other load on the machine moves.  With ``--baseline-root DIR`` (an earlier tree, ``git archive REV |
tar -x -C DIR``) each round measures that tree, then this one, in fresh processes, ``--rounds``
times interleaved, and prints the best of each with the ratio.  ``--profile DIR``: a cProfile dump
per read of this tree (``DIR/<read>.prof``).  ``--short``: 1 000 sessions, 10 requests per read, one
round (CI: tests/backendai/test_bench_api_reads.py).  Not a test: it exits 0 unless it could not run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["healthz", "session info (REST)", "compute_session_list", "vfolder_list", "sessions page"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-root", metavar="DIR", help="also measure this tree, interleaved")
    parser.add_argument("--requests", type=int, default=200, help="requests per read and round (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per tree (default 2)")
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions in the table (default 10000)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each read of this tree into DIR")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--db", default="bai_bench_4_inproc", help="scratch database (created and dropped)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/4"))
    parser.add_argument("--short", action="store_true", help="1 000 sessions, 10 requests, one round (CI)")
    parser.add_argument("--measure", metavar="ROOT", help=argparse.SUPPRESS)  # internal: one tree, one process
    args = parser.parse_args(argv)
    if args.short:
        args.sessions, args.requests, args.rounds = min(args.sessions, 1000), 10, 1
    if args.requests < 5 or args.rounds < 1 or not 100 <= args.sessions <= 1_000_000:
        parser.error("need --requests >= 5, --rounds >= 1 and 100 <= --sessions <= 1000000")
    return args


def measure(args) -> None:
    """In a fresh process: the tree ``args.measure`` on the seeded database; one JSON line of ms per read."""
    root = Path(args.measure)
    sys.path[:0] = [str(root), str(root / "bench" / "api_reads")]
    from types import SimpleNamespace

    import run as bench  # the tree's own bench module: its settings, its seed, its reads

    env = bench.server_env(SimpleNamespace(pg=args.pg, db=args.db, redis=args.redis),
                           tempfile.mkdtemp(), tempfile.mkdtemp())
    env["SECRET_KEY"] = "bench-inprocess-" + "0" * 32
    bench.setup_django(env)
    import logging

    logging.disable(logging.INFO)  # one access-log line per request would measure the terminal
    from django.test import Client

    from accounts.models import User
    from sessions.models import Session

    user = User.objects.get(email="user00@bench.example.com")
    session_id = str(Session.objects.filter(user=user, status="RUNNING").values_list("id", flat=True).first())
    keypair = user.main_keypair
    requests = bench.read_requests(0, (keypair.access_key, keypair.secret_key), session_id, bench.login_cookie(user))
    client = Client(HTTP_HOST="127.0.0.1:0")

    def send(name):
        method, target, headers, body = requests[name]
        headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
        if method == "GET":
            response = client.generic("GET", target, headers=headers)
        else:
            response = client.generic(method, target, data=body, content_type=headers.pop("Content-Type"),
                                      headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{name}: {response.status_code} {response.content[:300]!r}")

    results = {}
    for name in ORDER:
        for _ in range(20):  # warm-up: caches, pools, compiled shapes
            send(name)
        batch, best = max(args.requests // 5, 1), []
        for _ in range(5):
            started = time.process_time()
            for _ in range(batch):
                send(name)
            best.append((time.process_time() - started) * 1000 / batch)
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(batch):
            send(name)
        profiler.disable()
        results[name] = [min(best), pstats.Stats(profiler).total_calls / batch]
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(Path(args.profile) / f"{name.split()[0]}.prof"))
    print(json.dumps(results))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.measure:
        measure(args)
        return 0
    sys.path[:0] = [str(HERE.parents[1]), str(HERE)]
    import run as bench

    bench.scratch_database(args.pg, args.db)
    try:
        child = [sys.executable, "-c",
                 "import sys; sys.path.insert(0, sys.argv[1]); import run; run.setup_django(run.server_env("
                 "__import__('types').SimpleNamespace(pg=sys.argv[2], db=sys.argv[3], redis=sys.argv[4]), '/tmp', '/tmp'));"
                 "u, p, g = run.seed(); run.add_sessions(u, p, g, 0, int(sys.argv[5]))",
                 str(HERE), args.pg, args.db, args.redis, str(args.sessions)]
        print(f"seeding {args.sessions} sessions", file=sys.stderr, flush=True)
        subprocess.run(child, check=True, env={**os.environ, "SECRET_KEY": "bench-inprocess-" + "0" * 32},
                       stdout=subprocess.DEVNULL)
        trees = {"this tree": HERE.parents[1]}
        if args.baseline_root:
            trees = {"baseline": Path(args.baseline_root).resolve(), **trees}
        best: dict[tuple[str, str], float] = {}
        calls_of: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for tag, root in trees.items():
                command = [sys.executable, str(HERE / "inprocess.py"), "--measure", str(root), "--requests",
                           str(args.requests), "--pg", args.pg, "--db", args.db, "--redis", args.redis]
                if args.profile and tag == "this tree":
                    command += ["--profile", args.profile]
                done = subprocess.run(command, cwd=root, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{tag}: {done.stdout[-2000:]}{done.stderr[-2000:]}")
                for name, (ms, calls) in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    best[(name, tag)] = min(best.get((name, tag), float("inf")), ms)
                    calls_of[(name, tag)] = calls
        print(f"\nAPI reads in one process: CPU ms per request (best of 5 batches x {args.rounds} rounds) and "
              f"Python function calls per request (cProfile; steady whatever the load), {args.requests} requests "
              f"per read and round, {args.sessions} sessions")
        based = bool(args.baseline_root)
        header = (f"{'read':24s}" + "".join(f" {tag + ' ms':>14s}" for tag in trees) + (f" {'vs base':>8s}" if based else "")
                  + "".join(f" {tag + ' calls':>17s}" for tag in trees) + (f" {'vs base':>8s}" if based else ""))
        print(header)
        print("-" * len(header))
        for name in ORDER:
            row = f"{name:24s}" + "".join(f" {best[(name, tag)]:14.2f}" for tag in trees)
            if based:
                row += f" {best[(name, 'this tree')] / best[(name, 'baseline')]:7.2f}x"
            row += "".join(f" {calls_of[(name, tag)]:17.0f}" for tag in trees)
            if based:
                row += f" {calls_of[(name, 'this tree')] / calls_of[(name, 'baseline')]:7.2f}x"
            print(row)
    finally:
        bench.scratch_database(args.pg, args.db, drop_only=True)
        bench.redis_cleanup(args.redis, [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
