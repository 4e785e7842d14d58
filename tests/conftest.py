"""Fixtures shared by every test package.

Permission tests use an owner, a member and an outsider (another domain),
plus a domain admin and a superadmin.  ``signed`` builds a client that signs
requests exactly as the official Backend.AI client does.
"""
from __future__ import annotations

import shutil
import signal

import pytest


from helpers import PASSWORD, STRICT, SignedClient, require  # noqa: F401

# A run started in the background by a non-interactive shell (``nohup .ci/run &``) inherits SIGINT ignored,
# and so would every process the tests start (an ignored signal survives exec): the official client ends
# its ``backend.ai app`` tunnel with SIGINT (``session ssh``/``scp``), which then never exits.  Processes
# started from here get the default disposition again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The longest files first, then the other end-to-end tests (these took a minute or more each, ``--durations``).
# This is the order of a run in one process; with one worker per core (scripts/test) pytest-xdist hands out
# whole files with the most tests first (this order only breaks ties), which mixes the heavy end-to-end files
# with light ones (measured best: 30 min) but would leave the one-test files for the end.  The official CLI's
# conformance run (minutes per client version) is one file per version, each with a live stack of its own
# (tests/cli_conformance_support.py; 26.9.6 is the slowest, 23.9.10 the fastest), and XDIST_FIRST hands
# those files out before everything else, so that the run ends on short files instead.
LONGEST_FIRST = ("e2e/test_cli_conformance_26.py", "e2e/test_cli_conformance_24.py", "e2e/test_cli_conformance_23.py",
                 "e2e/test_serving_e2e.py", "e2e/test_soak.py",
                 "backendai/test_bench_api_reads.py", "e2e/test_stack_supervisor.py",
                 "backendai/test_hostile_input_sweep.py", "sessions/test_start_bench_short.py")
# Handed out first under ``--dist loadfile``, in this order.  Left at the end of xdist's queue (one test each),
# they could end up one after the other on one worker: a worker with two or fewer tests pending takes the next
# file at once.  At the start each worker takes two files, so with two workers the first takes 24.9.14, then
# 23.9.10 (about 2.5 + 1.5 min alone), and the second 26.9.6 (about 4 min), then the rest of the queue.
XDIST_FIRST = ("e2e/test_cli_conformance_24.py", "e2e/test_cli_conformance_26.py", "e2e/test_cli_conformance_23.py")


def _run_order(item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0].removeprefix("tests/")
    if path in LONGEST_FIRST:
        return 0, LONGEST_FIRST.index(path)
    return (1 if item.get_closest_marker("e2e") else 2), 0


def pytest_collection_modifyitems(config, items):
    items.sort(key=_run_order)  # stable: the order inside each group stays the collection's


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` as pytest-xdist does it (files with the most tests first), but XDIST_FIRST before all."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FirstFilesFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            first = sorted((scope for scope in self.workqueue if scope.removeprefix("tests/") in XDIST_FIRST),
                           key=lambda scope: XDIST_FIRST.index(scope.removeprefix("tests/")))
            for scope in reversed(first):
                self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return FirstFilesFirst(config, log)


# Hypothesis: a fixed seed under CI (a run is reproducible and never fails by luck); random locally,
# where the example database under .hypothesis/ replays what an earlier run found.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if STRICT:
    _hypothesis_settings.load_profile("ci")


@pytest.fixture
def chromium_path():
    path = shutil.which("chromium")
    require(path is not None, "Debian's chromium")
    return path


@pytest.fixture(autouse=True)
def _no_request_context_from_earlier_tests():
    """A test that leaves a streamed response unread (a server always closes it) keeps that
    request's log and audit context in this thread: every test starts without one."""
    from backendai import requestctx

    token = requestctx.set_current(None)
    yield
    requestctx.reset(token)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _keypair_use_written_per_call(settings):
    """Each signed call writes its keypair's last use, so statement counts do not depend on timing
    (production writes once a second: tests/accounts/test_keypair_use.py)."""
    settings.KEYPAIR_USE_INTERVAL = 0


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    from backendai.api import ratelimit

    try:
        ratelimit.get_limiter().reset()
    except Exception as exc:  # Redis configured but down
        require(False, f"Redis ({exc})")
    yield


@pytest.fixture
def defaults(db):
    from accounts import services

    return services.ensure_defaults()


@pytest.fixture
def make_user(defaults):
    from accounts import services
    from accounts.models import Domain, UserRole

    counter = {"n": 0}

    def make(email=None, role=UserRole.USER, domain=None, password=PASSWORD, **fields):
        counter["n"] += 1
        email = email or f"user{counter['n']}@example.com"
        if isinstance(domain, str):
            domain, _ = Domain.objects.get_or_create(name=domain)
        return services.create_user(email=email, password=password, role=role, domain=domain or defaults.domain, **fields)

    return make


@pytest.fixture
def owner(make_user):
    return make_user("owner@example.com")


@pytest.fixture
def member(make_user):
    return make_user("member@example.com")


@pytest.fixture
def outsider(make_user):
    return make_user("outsider@other.example.com", domain="other")


@pytest.fixture
def domain_admin(make_user):
    from accounts.models import UserRole

    return make_user("domainadmin@example.com", role=UserRole.ADMIN)


@pytest.fixture
def foreign_admin(make_user):
    """A domain admin of another domain (the outsider's)."""
    from accounts.models import UserRole

    return make_user("otheradmin@other.example.com", role=UserRole.ADMIN, domain="other")


@pytest.fixture
def superadmin(make_user):
    from accounts.models import UserRole

    return make_user("root@example.com", role=UserRole.SUPERADMIN)


@pytest.fixture
def signed(client):
    """``signed(user)`` -> a SignedClient using the user's main keypair."""

    def make(user_or_keypair, **kwargs):
        keypair = getattr(user_or_keypair, "main_keypair", user_or_keypair)
        return SignedClient(client, keypair.access_key, keypair.secret_key, **kwargs)

    return make


# Docker engine, test images, free ports (tests/docker_support.py)
from docker_support import docker_client, free_port, make_container, test_images  # noqa: E402,F401


# --- the storage proxy (docs/vfolders.md): ONE real ``python -m storageproxy`` per pytest process --------------
#: The volumes the tests use (``local:<volume>`` hosts), all under one directory of the run.
TEST_VOLUMES = ("volume1", "volume2", "volume3")
TEST_STORAGE_SECRET = "test-storage-proxy-secret-0123456789"


@pytest.fixture(scope="session")
def storage_proxy(tmp_path_factory):
    """The storage proxy of the run, on free ports, its volumes under ``handle.root`` (``<root>/<volume>``);
    started the first time a test needs the database."""
    from storageproxy_support import start_storage_proxy

    root = tmp_path_factory.mktemp("storage") / "vfroot"
    volumes = {name: root / name for name in TEST_VOLUMES}
    for path in volumes.values():
        path.mkdir(parents=True)
    handle = start_storage_proxy(volumes, TEST_STORAGE_SECRET, extra_args=("--token-lifetime", "3600"))
    handle.root = root
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _storage_proxy_settings(request):
    """Tests that use the database reach the run's storage proxy as the embedded proxy ``local``."""
    uses_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db", "live_server", "django_db_setup"} & set(request.fixturenames))
    if not uses_db:
        yield None
        return
    handle = request.getfixturevalue("storage_proxy")
    settings = request.getfixturevalue("settings")
    settings.STORAGE_PROXY_MANAGER_URL = handle.manager_url
    settings.STORAGE_PROXY_CLIENT_URL = handle.client_url
    settings.STORAGE_PROXY_SECRET = TEST_STORAGE_SECRET
    settings.VFOLDER_ROOT = handle.root
    if handle.process is None or handle.process.poll() is not None:  # a test stopped it: back for the next
        handle.start()
    for volume in TEST_VOLUMES:  # every test starts with empty volumes, as with a volume of its own
        for child in (handle.root / volume).iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    yield handle
