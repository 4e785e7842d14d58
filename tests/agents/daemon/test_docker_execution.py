"""Code execution in a Docker kernel: the runner starts with ``docker exec`` (no TTY, its stream
demultiplexed) in ``bai-test/python:3.11``, whose labels name its Python; an image without a
runtime label answers ``unsupported``."""
from __future__ import annotations

import time

import pytest

from agents.daemon import execution
from agents.daemon.backends.base import KernelError

from .test_docker_backend import _remove_test_containers, backend, backend_settings, spec  # noqa: F401


def ask(backend, kernel_id, mode, run_id, code="", options=None, flush_timeout=5.0):  # noqa: F811
    return execution.execute(backend, kernel_id, {"mode": mode, "run_id": run_id, "code": code,
                                                  "options": options or {}, "flush_timeout": flush_timeout})


def finish(backend, kernel_id, answer):  # noqa: F811
    answers = [answer]
    while answers[-1]["status"] != "finished":
        answers.append(ask(backend, kernel_id, "continue", answer["runId"]))
    return answers


def text(answers, stream="stdout"):
    return "".join(t for a in answers for s, t in a["console"] if s == stream)


def test_the_python_image_runs_queries_streams_and_batches_in_its_container(backend, test_images):  # noqa: F811
    kernel = backend.create(spec(test_images["python"]))
    kernel_id = kernel.kernel_id
    assert backend.runtime(kernel_id) == ("python", "/usr/local/bin/python3")
    first = ask(backend, kernel_id, "query", "q1", "import os, sys\nx = 6 * 7\nprint(x, os.getcwd(), sys.version_info[0])")
    assert text(finish(backend, kernel_id, first)) == "42 /home/work 3\n"
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.5)\nprint(x, file=sys.stderr)"
    answers = finish(backend, kernel_id, ask(backend, kernel_id, "query", "q2", code, flush_timeout=0.3))
    assert len(answers) >= 3 and text(answers) == "tick 0\ntick 1\ntick 2\n" and text(answers, "stderr") == "42\n"
    waiting = ask(backend, kernel_id, "query", "q3", "print('hi', input('name? '))")
    assert waiting["status"] == "waiting-input"
    assert text(finish(backend, kernel_id, ask(backend, kernel_id, "input", "q3", "ada"))) == "hi ada\n"
    batch = finish(backend, kernel_id, ask(backend, kernel_id, "batch", "b1", options={
        "build": "echo 'print(1 + 1)' > main.py", "exec": "*"}))
    assert [a["status"] for a in batch if a["status"] != "continued"] == ["build-finished", "finished"]
    assert text(batch) == "2\n" and batch[-1]["exitCode"] == 0
    error = finish(backend, kernel_id, ask(backend, kernel_id, "query", "q4", "1/0"))
    assert error[-1]["exitCode"] == 1 and "ZeroDivisionError" in text(error, "stderr")
    runner = execution.runner_for(backend, kernel_id)
    backend.stop(kernel_id, "user-requested")
    deadline = time.monotonic() + 10
    while runner.alive and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not runner.alive  # the docker exec ended with its container


def test_an_image_without_a_runtime_label_is_unsupported(backend, test_images):  # noqa: F811
    kernel = backend.create(spec(test_images["shell"]))
    with pytest.raises(KernelError) as caught:
        ask(backend, kernel.kernel_id, "query", "q1", "print(1)")
    assert caught.value.reason == "unsupported"
