"""A local stand-in for Mixpanel's Experiments API: see server.StandIn.

Part of the product's development story (`make run`, `manage.py mixpanel_standin`),
and what integration tests, browser tests and benchmarks talk to over real HTTP.
"""

from __future__ import annotations

from experiments.standin.data import DEMO_FAULT_ROWS, DEMO_WORKSPACES, DemoWorkspace
from experiments.standin.server import FAULT_KINDS, Fault, RequestRecord, StandIn

__all__ = ["DEMO_FAULT_ROWS", "DEMO_WORKSPACES", "FAULT_KINDS", "DemoWorkspace", "Fault", "RequestRecord", "StandIn"]
