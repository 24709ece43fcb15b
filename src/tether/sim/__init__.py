"""Local simulators of the systems Tether governs (used by the quickstart, tests and benchmarks).

`tether.sim.m365` is a Microsoft Graph v1.0–shaped service with its own OAuth token
endpoint, seeded with a small deterministic organisation.
"""

from tether.sim.m365 import M365Sim, create_app

__all__ = ["M365Sim", "create_app"]
