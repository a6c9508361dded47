"""`deployer tune`: find the dynamic-batching and instance settings that meet an objective, measured
through Triton without restarts, and write them back into the spec (docs/tune.md).

`plan_tune(dep, model)` decides the run (pure); `tune_model(plan, validator, server)` runs it on a
server; `Pipeline.tune` wires the two to the pipeline's own server (or one given by URL).
"""

from __future__ import annotations

from deployer.tune.plan import TunePlan, Validator, plan_tune
from deployer.tune.run import Trial, TuneResult, TuneServer, tune_model
from deployer.tune.search import Budget, Objective, coordinate_descent, grid
from deployer.tune.space import Candidate, Space

__all__ = [
    "Budget",
    "Candidate",
    "Objective",
    "Space",
    "Trial",
    "TunePlan",
    "TuneResult",
    "TuneServer",
    "Validator",
    "coordinate_descent",
    "grid",
    "plan_tune",
    "tune_model",
]
