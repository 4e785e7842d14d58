"""``backend.ai run`` of the official client 23.9.10 against the real-process stack with a local
agent: the code runs in the kernel's runner (the agent's Python), its output streams back over
the execute websocket while it runs, ``input()`` is answered from the CLI's stdin, an exception
gives a traceback and exit code 1, and a file runs in batch mode with build and exec commands."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from helpers import logged_in_page
from sessions.models import Session

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

AGENT = "e2e-exec-local"
RESOURCES = ["-r", "cpu=0.25", "-r", "mem=256m"]


@pytest.fixture
def local_agent(live_stack, cluster):
    live_stack.start_local_agent(AGENT, cluster[1])
    yield
    live_stack.kill_local_kernels()


def plain(text: str) -> str:
    """Without the CLI's colours and line clearing."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "")


def run_cli(stack_client, keypair, *args):
    done = stack_client.cli(keypair, "run", *RESOURCES, *args)
    out, err = plain(done.stdout), plain(done.stderr)
    assert done.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return out, err


def test_run_c_prints_the_output_and_exit_code_and_keeps_the_namespace(live_stack, local_agent, owner,
                                                                         stack_client):
    keypair = owner.main_keypair
    out, err = run_cli(stack_client, keypair, "-t", "execsess1", "-c", "x = 6 * 7\nprint(x)", "local/shell:1.0")
    assert "42\n" in out
    assert "Execution finished. (exit code = 0)" in err
    out, err = run_cli(stack_client, keypair, "-t", "execsess1", "-c", "print(x + 1)", "local/shell:1.0")
    assert "Reusing session execsess1" in err and "43\n" in out
    out, err = run_cli(stack_client, keypair, "-t", "execsess1", "-c", "def f():\n    return 1 / 0\nf()",
                       "local/shell:1.0")
    assert "ZeroDivisionError: division by zero" in err and 'File "<input>", line 2, in f' in err
    assert "Execution finished. (exit code = 1)" in err
    out, err = run_cli(stack_client, keypair, "-t", "execsess1", "-c", "import sys; sys.exit(7)", "local/shell:1.0")
    assert "Execution finished. (exit code = 7)" in err
    assert Session.objects.get(name="execsess1").num_queries == 4


def test_long_running_output_streams_in_order_before_the_run_ends(live_stack, local_agent, owner, stack_client):
    keypair = owner.main_keypair
    run_cli(stack_client, keypair, "-t", "execsess2", "-c", "pass", "local/shell:1.0")  # the session, up
    code = "import time\nfor i in range(4):\n    print('tick', i, flush=True)\n    time.sleep(1.5)"
    proc = stack_client.popen(keypair, "run", *RESOURCES, "-t", "execsess2", "-c", code, "local/shell:1.0")
    seen: list[tuple[float, str]] = []
    try:
        for line in proc.stdout:
            seen.append((time.monotonic(), plain(line)))
            if "Execution finished" in line:
                break
    finally:
        proc.wait(30)
    ticks = [(t, line.strip()) for t, line in seen if line.startswith("tick")]
    assert [line for _, line in ticks] == [f"tick {i}" for i in range(4)], seen
    finished = next(t for t, line in seen if "Execution finished. (exit code = 0)" in line)
    assert finished - ticks[0][0] > 3.0, "the first tick came only at the end"
    assert ticks[1][0] - ticks[0][0] > 0.8


def test_input_is_asked_for_and_read_from_the_clis_stdin(live_stack, local_agent, owner, stack_client, tmp_path,
                                                         client_bin):
    keypair = owner.main_keypair
    run_cli(stack_client, keypair, "-t", "execsess3", "-c", "pass", "local/shell:1.0")
    env = {"PATH": f"{client_bin.parent}:/usr/bin:/bin", "HOME": str(tmp_path / "client-home"),
           "BACKEND_ENDPOINT": live_stack.url, "BACKEND_ACCESS_KEY": keypair.access_key,
           "BACKEND_SECRET_KEY": keypair.secret_key, "BACKEND_ENDPOINT_TYPE": "api"}
    done = subprocess.run([str(client_bin), "run", *RESOURCES, "-t", "execsess3", "-c",
                           "name = input('who? ')\nprint('hello', name)", "local/shell:1.0"],
                          input="ada\n", capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out, err = plain(done.stdout), plain(done.stderr)
    assert done.returncode == 0, err
    assert "who? " in out and "hello ada\n" in out
    assert "Execution finished. (exit code = 0)" in err


def test_a_file_runs_in_batch_mode_with_build_and_exec_commands(live_stack, local_agent, owner, stack_client,
                                                                tmp_path):
    keypair = owner.main_keypair
    workdir = tmp_path / "client-cwd"
    workdir.mkdir(exist_ok=True)
    (workdir / "main.py").write_text("import sys\nprint('main says hi')\nsys.exit(4)\n")
    out, err = run_cli(stack_client, keypair, "-t", "execsess4", "--build", "echo building; ls main.py",
                       "--exec", "python3 main.py", "local/shell:1.0", "main.py")
    assert "building\nmain.py\n" in out and "main says hi\n" in out
    assert "Build finished. (exit code = 0)" in err
    assert "Execution finished. (exit code = 4)" in err
    out, err = run_cli(stack_client, keypair, "-t", "execsess4", "--build", "exit 3", "--exec", "echo never",
                       "local/shell:1.0", "main.py")
    assert "Build finished. (exit code = 3)" in err and "never" not in out
    assert "Execution finished. (exit code = 3)" in err


SDK_POLLING = r"""
import json
from ai.backend.client.session import Session

with Session() as api:
    kernel = api.ComputeSession("execsess5")
    first = kernel.execute("long1", "import os, time\nprint('start', flush=True)\ntime.sleep(60)", mode="query")
    kernel.interrupt()
    answers = [first]
    while answers[-1]["status"] != "finished":
        answers.append(kernel.execute("long1", "", mode="continue"))
    completions = kernel.complete("os.pa", {"row": 0, "col": 5, "line": "os.pa", "post": ""})
print(json.dumps({"answers": answers, "completions": completions}))
"""


def test_the_sdks_polling_execute_interrupt_and_complete(live_stack, local_agent, owner, stack_client):
    keypair = owner.main_keypair
    run_cli(stack_client, keypair, "-t", "execsess5", "-c", "pass", "local/shell:1.0")
    result = stack_client.script_json(keypair, SDK_POLLING)
    answers = result["answers"]
    assert answers[0]["status"] == "continued" and answers[0]["console"] == [["stdout", "start\n"]]
    assert answers[-1]["exitCode"] == 130
    assert "KeyboardInterrupt" in "".join(t for a in answers for s, t in a["console"] if s == "stderr")
    assert "os.path" in result["completions"]["result"]["completions"]


def test_run_c_in_a_docker_kernel_of_the_python_image(live_stack, docker_node, owner, stack_client):
    keypair = owner.main_keypair
    out, err = run_cli(stack_client, keypair, "-t", "execdock1", "-c",
                       "import os, sys\nprint(6 * 7, os.getcwd(), sys.executable)", "bai-test/python:3.11")
    assert "42 /home/work /usr/local/bin/python3\n" in out
    assert "Execution finished. (exit code = 0)" in err
    done = stack_client.cli(keypair, "run", *RESOURCES, "-t", "execdock2", "-c", "print(1)", "bai-test/shell:1.0")
    assert "unsupported" in plain(done.stdout + done.stderr)


def test_the_session_pages_run_code_card_streams_output_and_takes_input(live_stack, local_agent, owner, password,
                                                                        browser, stack_client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]  # daphne checks for real
    owner.set_password(password)
    owner.save(update_fields=["password"])
    run_cli(stack_client, owner.main_keypair, "-t", "execweb1", "-c", "greeting = 'hi'", "local/shell:1.0")
    session = Session.objects.get(name="execweb1")
    with logged_in_page(browser, live_stack.url, owner, password, viewport={"width": 1280, "height": 900}) as page:
        page.goto(f"/ui/sessions/{session.pk}/")
        page.fill("#execute-code", "import time\nprint(greeting, flush=True)\ntime.sleep(1)\n"
                                   "name = input('name? ')\nprint('hello', name)\n1/0")
        page.click("#execute-run")
        page.wait_for_function("() => document.getElementById('execute-output').textContent.includes('hi')")
        page.wait_for_selector("#execute-input-form:not([hidden])")
        page.fill("#execute-input", "ada")
        page.press("#execute-input", "Enter")
        page.wait_for_function("() => document.getElementById('execute-state').textContent.includes('exit code 1')")
        output = page.locator("#execute-output").inner_text()
        assert "hi\nname? ada\nhello ada\n" in output and "ZeroDivisionError" in output
        assert "ZeroDivisionError" in page.locator("#execute-output .stderr").last.inner_text()


@pytest.mark.parametrize("client_bin", ["24.9.14", "26.9.6"], indirect=True)
def test_the_newer_clients_run_code_with_its_output_and_exit_code(live_stack, local_agent, owner, stack_client,
                                                                  client_bin):
    name = "execnew" + client_bin.parent.parent.name.rsplit("-", 1)[-1]  # per client: .venv-client-24 -> 24
    out, err = run_cli(stack_client, owner.main_keypair, "-t", name, "-c", "print(6 * 7)", "local/shell:1.0")
    assert "42\n" in out and "Execution finished. (exit code = 0)" in err
    out, err = run_cli(stack_client, owner.main_keypair, "-t", name, "-c", "raise SystemExit(3)", "local/shell:1.0")
    assert "Execution finished. (exit code = 3)" in err
