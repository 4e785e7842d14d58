"""Autoscaling rules of model-serving endpoints (docs/serving.md, "Autoscaling").

A rule says: when ``metric`` (measured over the last ``window_seconds``) compared with
``threshold`` by ``comparator`` holds, change the endpoint's replicas by ``step_size``
(positive: up, negative: down), kept within ``[min_replicas, max_replicas]``, at most once
per ``cooldown_seconds`` (counted from the rule's own last trigger).

Metrics, by source:

* ``proxy`` (Backend.AI's ``INFERENCE_FRAMEWORK``): what the app-proxy worker measured for the
  endpoint's circuit, read with ``coordinator().endpoint_traffic(endpoint_id, window)``:
  ``request_rate`` (requests/s), ``request_rate_per_replica`` (over the healthy replicas),
  ``inflight``, ``inflight_per_replica``, ``latency_mean`` and ``latency_p99`` (seconds),
  ``error_rate`` (errors/s).
* ``kernel``: the agents' statistics of the replicas' kernels, the mean over the endpoint's
  live replicas: ``cpu_util`` (percent, 100 per core, as the agents report it), ``mem_util``
  (used memory as a percentage of the kernel's memory slot) and ``cuda_util`` (percent, where
  the agent reports it).  Each kernel's value is the mean of its utilisation samples within the
  window (``status_data.util_series``, one per 15 s), else its last report (``last_stat``).

``evaluate_rules`` (Celery beat ``serving.tasks.autoscale_endpoints``, every 5 s) measures every
enabled rule of every live endpoint (one traffic read per endpoint and window), stores the value
in ``last_value`` and, where a rule fires, scales through ``endpoints.apply_replicas`` (kind
``autoscale``: the endpoint's event log shows the rule, metric, value, threshold and the change).
No measurement (no samples yet, no running replica) decides nothing.  Of the rules of one
endpoint that fire in one pass, a scale-up wins over a scale-down, and at most one change is
made per endpoint per pass.

Who may read and change an endpoint's rules: whoever may manage the endpoint
(``endpoints.get_endpoint``: its owner, an admin of its domain, a superadmin).
"""
from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from appproxy.gateway import coordinator
from backendai.actions import audited
from backendai.api import errors
from serving.models import (
    LIVE_ROUTE,
    MAX_REPLICAS,
    AutoScalingRule,
    Comparator,
    Endpoint,
    LifecycleStage,
    MetricSource,
    Routing,
)
from serving.services import endpoints
from sessions.lifecycle import KernelStatus
from sessions.models import Kernel

log = logging.getLogger(__name__)

PROXY_METRICS = ("request_rate", "request_rate_per_replica", "inflight", "inflight_per_replica",
                 "latency_mean", "latency_p99", "error_rate")
KERNEL_METRICS = ("cpu_util", "mem_util", "cuda_util")
METRICS = {MetricSource.PROXY: PROXY_METRICS, MetricSource.KERNEL: KERNEL_METRICS}

#: Backend.AI's enum spellings (GraphQL ``AutoScalingMetricSource`` / ``AutoScalingMetricComparator``)
SOURCE_NAMES = {"proxy": MetricSource.PROXY, "inference_framework": MetricSource.PROXY,
                "kernel": MetricSource.KERNEL}
COMPARATOR_NAMES = {
    "lt": Comparator.LESS_THAN, "<": Comparator.LESS_THAN, "less_than": Comparator.LESS_THAN,
    "le": Comparator.LESS_THAN_OR_EQUAL, "<=": Comparator.LESS_THAN_OR_EQUAL,
    "less_than_or_equal": Comparator.LESS_THAN_OR_EQUAL,
    "gt": Comparator.GREATER_THAN, ">": Comparator.GREATER_THAN, "greater_than": Comparator.GREATER_THAN,
    "ge": Comparator.GREATER_THAN_OR_EQUAL, ">=": Comparator.GREATER_THAN_OR_EQUAL,
    "greater_than_or_equal": Comparator.GREATER_THAN_OR_EQUAL,
}
SOURCE_ENUM = {MetricSource.PROXY: "INFERENCE_FRAMEWORK", MetricSource.KERNEL: "KERNEL"}
COMPARATOR_ENUM = {Comparator.LESS_THAN: "LESS_THAN", Comparator.LESS_THAN_OR_EQUAL: "LESS_THAN_OR_EQUAL",
                   Comparator.GREATER_THAN: "GREATER_THAN",
                   Comparator.GREATER_THAN_OR_EQUAL: "GREATER_THAN_OR_EQUAL"}

MAX_RULES_PER_ENDPOINT = 16
MAX_COOLDOWN = 86400
MIN_WINDOW, MAX_WINDOW = 5, 3600
MAX_THRESHOLD = 1e12
DEFAULT_COOLDOWN = 300
DEFAULT_WINDOW = 30
FIELDS = ("metric_source", "metric_name", "threshold", "comparator", "step_size", "cooldown_seconds",
          "min_replicas", "max_replicas", "window_seconds", "enabled")
REQUIRED = ("metric_source", "metric_name", "threshold", "comparator", "step_size")


# --- validation -------------------------------------------------------------------------------

def _bad(field: str, problem: str):
    return errors.InvalidAPIParameters(f"{field}: {problem}")


def _choice(field: str, value, names: dict):
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(field, f"expected one of {sorted(set(v.value for v in names.values()))}")
    key = value.strip().lower()
    if key not in names:
        raise _bad(field, f"unknown value {value[:64]!r}; expected one of "
                          f"{sorted(set(v.value for v in names.values()))}")
    return names[key]


def _integer(field: str, value, low: int, high: int, *, nullable: bool = False):
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise _bad(field, "expected an integer" + (" or null" if nullable else ""))
    if not low <= value <= high:
        raise _bad(field, f"must be between {low} and {high}")
    return value


def _threshold(value) -> float:
    """A finite number (Backend.AI sends it as a decimal string)."""
    if isinstance(value, bool):
        raise _bad("threshold", "expected a number")
    if isinstance(value, str):
        if len(value) > 64:
            raise _bad("threshold", "expected a number")
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise _bad("threshold", f"not a number: {value[:64]!r}") from None
        if not value.is_finite():
            raise _bad("threshold", "must be finite")
        value = float(value)
    if not isinstance(value, (int, float)):
        raise _bad("threshold", "expected a number")
    try:
        value = float(value)
    except OverflowError:  # an integer past any float
        raise _bad("threshold", f"must be a finite number within ±{MAX_THRESHOLD:g}") from None
    if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
        raise _bad("threshold", f"must be a finite number within ±{MAX_THRESHOLD:g}")
    return value


def _clean(props, current: dict | None = None) -> dict:
    """The validated fields of a new rule (``current`` None) or of a change to one: every
    problem is a 400 before anything is written."""
    if not isinstance(props, dict):
        raise errors.InvalidAPIParameters("expected an object with the rule's fields")
    unknown = sorted(str(k)[:64] for k in props if k not in FIELDS)
    if unknown:
        raise errors.InvalidAPIParameters(f"unknown fields: {', '.join(unknown)}")
    if current is None:
        missing = [f for f in REQUIRED if props.get(f) is None]
        if missing:
            raise errors.InvalidAPIParameters(f"required: {', '.join(missing)}")
    cleaned: dict = {}
    if "metric_source" in props:
        cleaned["metric_source"] = _choice("metric_source", props["metric_source"], SOURCE_NAMES).value
    if "comparator" in props:
        cleaned["comparator"] = _choice("comparator", props["comparator"], COMPARATOR_NAMES).value
    if "metric_name" in props:
        name = props["metric_name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise _bad("metric_name", "expected a metric name")
        cleaned["metric_name"] = name.strip().lower()
    if "threshold" in props:
        cleaned["threshold"] = _threshold(props["threshold"])
    if "step_size" in props:
        step = _integer("step_size", props["step_size"], -MAX_REPLICAS, MAX_REPLICAS)
        if step == 0:
            raise _bad("step_size", "must not be 0 (positive adds replicas, negative removes them)")
        cleaned["step_size"] = step
    if "cooldown_seconds" in props:
        cleaned["cooldown_seconds"] = _integer("cooldown_seconds", props["cooldown_seconds"], 0, MAX_COOLDOWN)
    for field in ("min_replicas", "max_replicas"):
        if field in props:
            cleaned[field] = _integer(field, props[field], 0, MAX_REPLICAS, nullable=True)
    if "window_seconds" in props:
        cleaned["window_seconds"] = _integer("window_seconds", props["window_seconds"], MIN_WINDOW, MAX_WINDOW)
    if "enabled" in props:
        if not isinstance(props["enabled"], bool):
            raise _bad("enabled", "expected true or false")
        cleaned["enabled"] = props["enabled"]
    merged = {**(current or {}), **cleaned}
    source = MetricSource(merged["metric_source"])
    if merged["metric_name"] not in METRICS[source]:
        raise _bad("metric_name", f"unknown {source.value} metric {merged['metric_name']!r}; "
                                  f"expected one of {list(METRICS[source])}")
    low, high = merged.get("min_replicas"), merged.get("max_replicas")
    if low is not None and high is not None and low > high:
        raise errors.InvalidAPIParameters("min_replicas must not be greater than max_replicas")
    return cleaned


def _fields_of(rule: AutoScalingRule) -> dict:
    return {f: getattr(rule, f) for f in FIELDS}


# --- the CRUD services ------------------------------------------------------------------------

def _endpoint(actor, endpoint_ref) -> Endpoint:
    """The live endpoint ``actor`` may manage (404 otherwise, as for any endpoint they cannot see)."""
    endpoint = endpoints.get_endpoint(actor, endpoint_ref)
    if not endpoint.is_live:
        raise errors.object_not_found("endpoint", f"endpoint {endpoint.pk} is being destroyed")
    return endpoint


def get_rule(actor, rule_id, endpoint_ref=None) -> AutoScalingRule:
    """The rule ``rule_id`` of an endpoint ``actor`` may manage (of ``endpoint_ref`` when given)."""
    try:
        rule_uuid = uuid.UUID(str(rule_id))
    except ValueError:
        raise errors.object_not_found("auto-scaling rule", f"no such rule: {str(rule_id)[:64]!r}") from None
    rule = AutoScalingRule.objects.filter(pk=rule_uuid).first()
    if rule is None:
        raise errors.object_not_found("auto-scaling rule", f"no such rule: {rule_uuid}")
    endpoint = _endpoint(actor, endpoint_ref if endpoint_ref is not None else str(rule.endpoint_id))
    if rule.endpoint_id != endpoint.pk:
        raise errors.object_not_found("auto-scaling rule", f"no such rule: {rule_uuid}")
    rule.endpoint = endpoint
    return rule


def rules_of(actor, endpoint_ref):
    """The rules of an endpoint ``actor`` may manage, as a query (oldest first)."""
    return AutoScalingRule.objects.filter(endpoint=_endpoint(actor, endpoint_ref)).order_by("created_at", "id")


def list_rules(actor, endpoint_ref) -> list[AutoScalingRule]:
    return list(rules_of(actor, endpoint_ref))


@audited("autoscaling-rule", "create", "endpoint_ref")
def create_rule(actor, endpoint_ref, props) -> AutoScalingRule:
    endpoint = _endpoint(actor, endpoint_ref)
    cleaned = _clean(props)
    with transaction.atomic():
        Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()  # counts and inserts in turn
        if AutoScalingRule.objects.filter(endpoint=endpoint).count() >= MAX_RULES_PER_ENDPOINT:
            raise errors.InvalidAPIParameters(f"an endpoint has at most {MAX_RULES_PER_ENDPOINT} "
                                              "auto-scaling rules")
        rule = AutoScalingRule.objects.create(endpoint=endpoint, **cleaned)
    log.info("endpoint %s: auto-scaling rule %s created by user %s: %s", endpoint.pk, rule.pk,
             getattr(actor, "pk", None), rule)
    return rule


@audited("autoscaling-rule", "modify", "rule_id")
def modify_rule(actor, rule_id, props, endpoint_ref=None) -> AutoScalingRule:
    rule = get_rule(actor, rule_id, endpoint_ref)
    cleaned = _clean(props, _fields_of(rule))
    if cleaned:
        with transaction.atomic():
            locked = AutoScalingRule.objects.select_for_update().get(pk=rule.pk)
            for field, value in cleaned.items():
                setattr(locked, field, value)
            if {"metric_source", "metric_name", "window_seconds"} & cleaned.keys():
                locked.last_value = None  # measured differently from now on
            locked.save(update_fields=[*cleaned, "last_value"])
        locked.endpoint = rule.endpoint
        rule = locked
    log.info("endpoint %s: auto-scaling rule %s modified by user %s: %s", rule.endpoint_id, rule.pk,
             getattr(actor, "pk", None), sorted(cleaned))
    return rule


@audited("autoscaling-rule", "delete", "rule_id")
def delete_rule(actor, rule_id, endpoint_ref=None) -> None:
    rule = get_rule(actor, rule_id, endpoint_ref)
    AutoScalingRule.objects.filter(pk=rule.pk).delete()
    log.info("endpoint %s: auto-scaling rule %s deleted by user %s", rule.endpoint_id, rule.pk,
             getattr(actor, "pk", None))


def rule_data(rule: AutoScalingRule) -> dict:
    """The REST shape of a rule."""
    return {
        "id": str(rule.pk),
        "endpoint_id": str(rule.endpoint_id),
        "metric_source": rule.metric_source,
        "metric_name": rule.metric_name,
        "threshold": rule.threshold,
        "comparator": rule.comparator,
        "step_size": rule.step_size,
        "cooldown_seconds": rule.cooldown_seconds,
        "min_replicas": rule.min_replicas,
        "max_replicas": rule.max_replicas,
        "window_seconds": rule.window_seconds,
        "enabled": rule.enabled,
        "last_value": rule.last_value,
        "last_triggered_at": rule.last_triggered_at.isoformat() if rule.last_triggered_at else None,
        "created_at": rule.created_at.isoformat() if rule.created_at else None,
    }


# --- measuring --------------------------------------------------------------------------------

def _number(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def proxy_metric(traffic: dict | None, name: str) -> float | None:
    """``name`` from one ``endpoint_traffic`` answer; None when there is nothing to measure."""
    if not traffic or not traffic.get("samples"):
        return None
    if name not in ("inflight", "inflight_per_replica") and not _number(traffic.get("span")):
        return None  # one sample: no rate or latency measured yet (a zero here would read as "idle")
    if name in ("request_rate_per_replica", "inflight_per_replica"):
        total = _number(traffic.get(name.removesuffix("_per_replica")))
        replicas = _number(traffic.get("healthy_routes"))
        if total is None or not replicas or replicas <= 0:
            return None
        return total / replicas
    return _number(traffic.get(name))


def _kernel_value(kernel: Kernel, name: str, since: float) -> float | None:
    """One kernel's ``name`` (cpu_util / mem_util / cuda_util): the mean of its samples since
    ``since`` (a timestamp), else its last report."""
    key = "mem_used" if name == "mem_util" else name
    series = (kernel.status_data or {}).get("util_series") if isinstance(kernel.status_data, dict) else None
    values = []
    for sample in series if isinstance(series, list) else ():
        if isinstance(sample, dict) and (_number(sample.get("t")) or 0) >= since:
            value = _number(sample.get(key))
            if value is not None:
                values.append(value)
    if not values:
        stat = kernel.last_stat if isinstance(kernel.last_stat, dict) else {}
        value = _number(stat.get(key))
        if value is not None:
            values.append(value)
    if not values:
        return None
    value = sum(values) / len(values)
    if name == "mem_util":
        slots = kernel.occupied_slots if isinstance(kernel.occupied_slots, dict) else {}
        memory = _number(slots.get("mem"))
        if not memory or memory <= 0:
            return None
        return value / memory * 100.0
    return value


def kernel_metric(endpoint: Endpoint, name: str, window_seconds: int, now: datetime) -> float | None:
    """The mean of ``name`` over the endpoint's live replicas whose kernels run and report it
    (a replica of several kernels counts once, with its kernels' mean)."""
    sessions = list(Routing.objects.filter(endpoint=endpoint, status__in=LIVE_ROUTE, session__isnull=False)
                    .values_list("session_id", flat=True))
    if not sessions:
        return None
    since = (now - timedelta(seconds=window_seconds)).timestamp()
    per_session: dict = {}
    kernels = Kernel.objects.filter(session_id__in=sessions, status=KernelStatus.RUNNING).only(
        "id", "session_id", "last_stat", "status_data", "occupied_slots")
    for kernel in kernels:
        value = _kernel_value(kernel, name, since)
        if value is not None:
            per_session.setdefault(kernel.session_id, []).append(value)
    if not per_session:
        return None
    means = [sum(values) / len(values) for values in per_session.values()]
    return sum(means) / len(means)


def holds(comparator: str, value: float, threshold: float) -> bool:
    return {
        Comparator.LESS_THAN: value < threshold,
        Comparator.LESS_THAN_OR_EQUAL: value <= threshold,
        Comparator.GREATER_THAN: value > threshold,
        Comparator.GREATER_THAN_OR_EQUAL: value >= threshold,
    }[Comparator(comparator)]


def target_replicas(rule: AutoScalingRule, current: int) -> int:
    """``current + step_size`` kept within the rule's bounds (0 and ``MAX_REPLICAS`` where unset).
    A bound only stops a rule: a scale-up rule never removes replicas (an endpoint scaled by hand
    above its ``max_replicas`` stays there), a scale-down rule never adds any."""
    low = rule.min_replicas if rule.min_replicas is not None else 0
    high = min(rule.max_replicas if rule.max_replicas is not None else MAX_REPLICAS, MAX_REPLICAS)
    if rule.step_size > 0:
        return max(current, min(high, current + rule.step_size))
    return min(current, max(low, current + rule.step_size))


# --- evaluation -------------------------------------------------------------------------------

@dataclass
class Candidate:
    rule: AutoScalingRule
    value: float
    target: int


def _cooled_down(rule: AutoScalingRule, now: datetime) -> bool:
    return (rule.last_triggered_at is None
            or now - rule.last_triggered_at >= timedelta(seconds=rule.cooldown_seconds))


def _measure(endpoint: Endpoint, rules: list[AutoScalingRule], now: datetime) -> dict:
    """rule id -> value (None: no data).  One traffic read per distinct window of the
    endpoint's proxy rules (normally one), one kernel query per kernel rule."""
    traffic: dict[int, dict | None] = {}
    values = {}
    for rule in rules:
        if rule.metric_source == MetricSource.PROXY:
            if rule.window_seconds not in traffic:
                try:
                    traffic[rule.window_seconds] = coordinator().endpoint_traffic(
                        str(endpoint.pk), window_seconds=rule.window_seconds)
                except errors.BackendAIError as exc:
                    log.warning("endpoint %s: no traffic figures from the app proxy: %s", endpoint.pk, exc)
                    traffic[rule.window_seconds] = None
            values[rule.pk] = proxy_metric(traffic[rule.window_seconds], rule.metric_name)
        else:
            values[rule.pk] = kernel_metric(endpoint, rule.metric_name, rule.window_seconds, now)
    return values


def _evaluate_endpoint(endpoint_id, now: datetime) -> dict | None:
    """Measure the endpoint's enabled rules and make at most one change; the change made, if any."""
    endpoint = Endpoint.objects.filter(pk=endpoint_id, lifecycle_stage=LifecycleStage.CREATED).first()
    if endpoint is None:
        return None
    rules = list(AutoScalingRule.objects.filter(endpoint=endpoint, enabled=True).order_by("created_at", "id"))
    if not rules:
        return None
    values = _measure(endpoint, rules, now)  # outside the lock: the proxy may be remote
    with transaction.atomic():
        endpoint = (Endpoint.objects.select_for_update(skip_locked=True)
                    .filter(pk=endpoint_id, lifecycle_stage=LifecycleStage.CREATED).first())
        if endpoint is None:  # destroyed meanwhile, or another pass holds it
            return None
        locked = {r.pk: r for r in AutoScalingRule.objects.select_for_update().filter(
            pk__in=[r.pk for r in rules], enabled=True)}
        candidates: list[Candidate] = []
        for measured in rules:
            rule = locked.get(measured.pk)
            if rule is None or (rule.metric_source, rule.metric_name, rule.window_seconds) != (
                    measured.metric_source, measured.metric_name, measured.window_seconds):
                continue  # disabled, deleted or changed since it was measured: the next pass
            value = values.get(rule.pk)
            if value != rule.last_value:
                AutoScalingRule.objects.filter(pk=rule.pk).update(last_value=value)
                rule.last_value = value
            if value is None:
                log.debug("endpoint %s: rule %s (%s): no data yet", endpoint.pk, rule.pk, rule.metric_name)
                continue
            if not holds(rule.comparator, value, rule.threshold):
                continue
            if not _cooled_down(rule, now):
                log.debug("endpoint %s: rule %s holds (%s=%g) but cools down until %s", endpoint.pk, rule.pk,
                          rule.metric_name, value, rule.last_triggered_at + timedelta(seconds=rule.cooldown_seconds))
                continue
            target = target_replicas(rule, endpoint.replicas)
            if target == endpoint.replicas:
                log.debug("endpoint %s: rule %s holds (%s=%g) but replicas stay at %d (bounds %s..%s)",
                          endpoint.pk, rule.pk, rule.metric_name, value, endpoint.replicas,
                          rule.min_replicas, rule.max_replicas)
                continue
            candidates.append(Candidate(rule, value, target))
        if not candidates:
            return None
        # a scale-up wins over a scale-down; among equals, the oldest rule
        ups = [c for c in candidates if c.target > endpoint.replicas]
        chosen = (ups or candidates)[0]
        rule, before = chosen.rule, endpoint.replicas
        comparator = rule.get_comparator_display()
        message = (f"Scaled from {before} to {chosen.target} replicas: {rule.metric_source} metric "
                   f"{rule.metric_name} = {chosen.value:g} {comparator} {rule.threshold:g} "
                   f"(rule {rule.pk}, step {rule.step_size:+d}, over {rule.window_seconds}s)")
        data = {"rule_id": str(rule.pk), "metric": rule.metric_name, "metric_source": rule.metric_source,
                "value": chosen.value, "threshold": rule.threshold, "comparator": rule.comparator,
                "from": before, "to": chosen.target}
        log.info("endpoint %s: autoscaling %d -> %d by rule %s (%s=%g %s %g)", endpoint.pk, before, chosen.target,
                 rule.pk, rule.metric_name, chosen.value, comparator, rule.threshold)
        endpoints.apply_replicas(endpoint, chosen.target, kind="autoscale", message=message, data=data)
        AutoScalingRule.objects.filter(pk=rule.pk).update(last_triggered_at=now)
    return {"endpoint_id": str(endpoint.pk), **data}


def evaluate_rules(now: datetime | None = None) -> list[dict]:
    """One autoscaling pass over every live endpoint with an enabled rule; the changes made."""
    now = now or timezone.now()
    endpoint_ids = list(AutoScalingRule.objects.filter(
        enabled=True, endpoint__lifecycle_stage=LifecycleStage.CREATED)
        .values_list("endpoint_id", flat=True).distinct().order_by())
    changes = []
    for endpoint_id in endpoint_ids:
        try:
            change = _evaluate_endpoint(endpoint_id, now)
        except errors.BackendAIError as exc:  # the endpoint refused the change (e.g. being destroyed)
            log.warning("endpoint %s: autoscaling skipped: %s", endpoint_id, exc)
            continue
        except Exception:  # one endpoint's trouble must not stop the others' autoscaling
            log.exception("endpoint %s: autoscaling failed", endpoint_id)
            continue
        if change is not None:
            changes.append(change)
    log.debug("autoscaling pass: %d endpoint(s) with rules, %d change(s)", len(endpoint_ids), len(changes))
    return changes


__all__ = ["create_rule", "modify_rule", "delete_rule", "list_rules", "rules_of", "get_rule", "rule_data",
           "evaluate_rules", "proxy_metric", "kernel_metric", "target_replicas", "holds",
           "PROXY_METRICS", "KERNEL_METRICS", "SOURCE_ENUM", "COMPARATOR_ENUM"]
