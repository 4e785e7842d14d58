"""What the web UI's dashboard shows (``dashboard_context``), and the gauges it draws.

Accounts knows the user, their keypair policy and user policy; what lives above accounts
(running sessions with their live usage, slots in use, folders, the resource groups'
capacity, recent session events) comes from the providers the apps register in
``accounts.hooks`` (``register_dashboard_provider``).  Every part reads the database in a fixed
number of queries whatever the user owns: the dashboard's live fragment polls every few seconds.

A ``Gauge`` is one used-vs-limit figure: the template draws it as a ``<meter>`` with its text
("3 of 8 cores"); a limit of None means unlimited (text only, no meter)."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Q

from accounts import hooks
from accounts.models import Project, User

GIB = Decimal(1024 ** 3)

#: How slots read to people: (label, unit); bytes slots are shown in GiB.
SLOT_NAMES = {
    "cpu": ("CPU", "cores"),
    "mem": ("Memory", "GiB"),
    "cuda.device": ("GPU", "GPUs"),
    "cuda.shares": ("GPU (fractional)", "fGPU"),
    "rocm.device": ("ROCm GPU", "GPUs"),
    "tpu.device": ("TPU", "TPUs"),
}


def _short(value: float) -> str:
    """12.0 -> "12", 1.25 -> "1.25", 0.5 -> "0.5"."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Gauge:
    key: str  # a stable id for the page (data-gauge) and tests: "sessions", "cpu", "mem", "cuda.device"...
    label: str
    used: float
    limit: float | None  # None: no limit
    unit: str = ""

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    @property
    def high(self) -> float | None:
        """Where the meter turns to a warning (90 % of the limit)."""
        return None if self.limit is None else self.limit * 0.9

    @property
    def percent(self) -> float | None:
        if self.limit is None or self.limit <= 0:
            return None
        return 100.0 * self.used / self.limit

    @property
    def meter_max(self) -> float:
        """A meter needs max > min: a zero limit draws a full meter of 1."""
        return self.limit if self.limit else 1.0

    @property
    def meter_value(self) -> float:
        return self.used if self.limit else (1.0 if self.used else 0.0)

    def _amounts(self, free: bool) -> str:
        """"3 of 8 cores" ("5 free of 8 cores" when ``free``); without a limit "3 cores · no limit"
        ("3 cores in use · no limit")."""
        unit = f" {self.unit}" if self.unit else ""
        if self.limit is None:
            return f"{_short(self.used)}{unit}{' in use' if free else ''} · no limit"
        if free:
            return f"{_short(max(self.limit - self.used, 0.0))} free of {_short(self.limit)}{unit}"
        return f"{_short(self.used)} of {_short(self.limit)}{unit}"

    @property
    def text(self) -> str:
        return self._amounts(free=False)

    @property
    def free_text(self) -> str:
        """For a capacity: "5 free of 8 cores"."""
        return self._amounts(free=True)


def slot_amount(name: str, value: Decimal, slot_types: dict[str, str]) -> float:
    """A slot's amount as people read it: bytes slots in GiB, counts as they are."""
    if slot_types.get(name) == "bytes":
        return float(value / GIB)
    return float(value)


def slot_label(name: str, slot_types: dict[str, str]) -> tuple[str, str]:
    if name in SLOT_NAMES:
        return SLOT_NAMES[name]
    return name, "GiB" if slot_types.get(name) == "bytes" else ""


def slot_gauge(name: str, used: Decimal, limit: Decimal | None, slot_types: dict[str, str]) -> Gauge:
    """A gauge of one slot; an infinite (or absent) limit is no limit."""
    label, unit = slot_label(name, slot_types)
    shown_limit = None if limit is None or limit.is_infinite() else slot_amount(name, limit, slot_types)
    return Gauge(name, label, slot_amount(name, used, slot_types), shown_limit, unit)


def slot_order(names) -> list[str]:
    """cpu, mem, then the accelerators by name."""
    first = [n for n in ("cpu", "mem") if n in names]
    return first + sorted(n for n in names if n not in first)


def dashboard_context(user: User) -> dict:
    """What the dashboard shows: the account (domain, projects, role, API keys), the keypair
    and user policies, and what the registered providers add (``hooks.dashboard_parts``)."""
    keypair = user.main_keypair
    policy = keypair.resource_policy if keypair else None
    projects = list(
        Project.objects.filter(Q(memberships__user=user)).select_related("resource_policy").order_by("name")
    )
    context = {
        "domain": user.domain,
        "projects": projects,
        "role": user.get_role_display(),
        "keypair": keypair,
        "keypair_policy": policy,
        "user_policy": user.resource_policy,
        "active_keypairs": user.keypairs.filter(is_active=True).count(),
    }
    context.update(live_context(user))
    return context


def live_context(user: User) -> dict:
    """The dashboard's live part (what its fragment re-renders every few seconds)."""
    return {"keypair": user.main_keypair, **hooks.dashboard_parts(user)}
