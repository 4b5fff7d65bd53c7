"""The call planner every host uses: facts in, one plan per model call out.

``facts`` (what a host reads off its model and each call), ``call`` (the frozen plan the
blocks and attention calls read), ``run`` (the per-run planner: window, twins, execution,
guide/reuse, the cache's store), ``report`` (what the run did, as JSON).
"""
from .call import CallPlan, Mode
from .facts import CallFacts, ModelFacts
from .report import RunReport
from .run import HostServices, Names, Run

__all__ = ["CallFacts", "CallPlan", "HostServices", "Mode", "ModelFacts", "Names", "Run", "RunReport"]
