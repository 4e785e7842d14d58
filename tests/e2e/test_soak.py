"""Issue 10: the soak's short mode in CI.  The embedded stack, started exactly as
a user starts it (``scripts/run`` with no database or Redis URL), takes a minute
of mixed work from four concurrent users (session creates, terminals, app pages
through the proxy, folder uploads and downloads, destroys) and must come out with
no process restarted, no session stuck or duplicated, every agent's occupancy
equal to its live kernels (and to the kernel processes on the machine), and no
5xx other than 503.  The same code as ``bench/soak/run`` (which runs it for an
hour); latencies are printed, never asserted.  The checks themselves are shown
to see what they look for, on made-up cluster states."""
from __future__ import annotations

import json

import pytest

from helpers import load_bench


@pytest.fixture(scope="module")
def soak():
    return load_bench("soak/soak.py")


@pytest.mark.e2e
def test_the_embedded_stack_survives_a_minute_of_mixed_work_with_every_invariant_intact(soak, tmp_path):
    lines: list[str] = []
    report = soak.run_soak(1.0, actors=4, data_dir=tmp_path / "stack", check_every=0.5, seed=10,
                           log=lines.append)
    print(report.render())  # the table, for whoever reads the CI log
    assert not report.problems, "\n".join([report.render(), "--- soak log ---", *lines[-60:],
                                           "--- stack console ---", report.console_tail])
    # the run did what it claims: every kind of operation happened
    done = {record.op for record in report.ops if record.ok}
    assert {"create", "terminal", "transfer", "destroy"} <= done, report.render()


def _session(name, status="RUNNING", kernels=(("k1", "RUNNING", "a1", {"cpu": "0.1", "mem": "134217728"}),),
             status_info="", changed="2020-01-01T00:00:00+00:00"):
    return {"id": name, "name": name, "status": status, "status_info": status_info, "status_changed": changed,
            "created_at": changed, "cluster_size": 1,
            "containers": [{"id": kid, "status": st, "agent": agent, "requested_slots": json.dumps(slots)}
                           for kid, st, agent, slots in kernels]}


def test_the_checks_see_occupancy_that_differs_from_the_live_kernels(soak):
    sessions = [_session("s1"),
                _session("s2", kernels=(("k2", "TERMINATED", "a1", {"cpu": "1", "mem": "1"}),), status="TERMINATED")]
    agrees = [{"id": "a1", "status": "ALIVE", "occupied_slots": json.dumps({"cpu": "0.10", "mem": "134217728",
                                                                            "cuda.device": "0"})}]
    assert soak.occupancy_mismatches(sessions, agrees) == []
    leaks = [{"id": "a1", "status": "ALIVE", "occupied_slots": json.dumps({"cpu": "1.1", "mem": "134217729"})}]
    assert soak.occupancy_mismatches(sessions, leaks) == [
        "agent a1 occupies {cpu=1.1, mem=134217729} but its live kernels hold {cpu=0.1, mem=134217728}"]


def test_the_checks_see_duplicated_and_stuck_sessions(soak):
    limits = soak.Limits(terminating_timeout=20, reconcile_slack=10)
    recent = soak.datetime.now(soak.timezone.utc).isoformat()
    sessions = [_session("twice"), _session("twice"),
                _session("stuck", status="TERMINATING"),
                _session("leaving", status="TERMINATING", changed=recent),
                _session("forced", status="TERMINATED", status_info="hang-timeout"),
                _session("two-kernels", kernels=(("k3", "RUNNING", "a1", {}), ("k4", "RUNNING", "a1", {})))]
    assert soak.duplicated_sessions(sessions) == ["2 sessions named twice",
                                                  "session two-kernels has 2 kernels for cluster size 1"]
    stuck = soak.stuck_sessions(sessions, limits)
    assert [line.split()[1] for line in stuck] == ["stuck", "forced"]
    assert [line.split()[1] for line in soak.stuck_sessions(sessions, limits, forced_is_stuck=False)] == ["stuck"]


def test_the_supervisor_lines_that_tell_of_an_exit_or_a_restart_are_caught(soak):
    caught = ["[stack ] worker exited with status -9; restarting in 1.0 s (restart 1)",
              "[stack ] beat not ticking for 20 s; restarting it (restart 1)",
              "[stack ] agent exited with status 1: 5 failures within 60 s (limit 5); stopping the stack"]
    ordinary = ["[stack ] web started (pid 123)",
                "[stack ] web http://127.0.0.1:8091, agent ports 31000-31999, app ports 32000-32099, "
                "app proxy setup port 8092; access log var/logs/access.log"]
    assert all(soak.RESTART_LINE.search(line) for line in caught)
    assert not any(soak.RESTART_LINE.search(line) for line in ordinary)
