"""The web console (architecture §7): approvals queue, agents, tasks and their event chain,
policies, break-glass and a dashboard, server-rendered at /console/."""

from tether.console.app import create_console

__all__ = ["create_console"]
