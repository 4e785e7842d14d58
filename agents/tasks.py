"""Celery entry points for agents (thin: call services)."""
from celery import shared_task

from agents import services


@shared_task(name="agents.tasks.mark_lost_agents")
def mark_lost_agents() -> int:
    return services.mark_lost_agents()
