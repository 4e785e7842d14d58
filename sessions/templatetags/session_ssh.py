"""``{% ssh_hint session as hint %}``: the SSH commands for a session whose image has an SSH server."""
from __future__ import annotations

from django import template

from sessions import ssh

register = template.Library()


@register.simple_tag
def ssh_hint(session):
    return ssh.ssh_hint(session)
