"""Load generation and measurement: the raw-socket HTTP generator, the gRPC generator, the smoke
load checks, and `measure` (windows until stable, open or closed loop, Triton's breakdown)."""

from __future__ import annotations

from deployer.smoke.load.measure import LoadSpec, Measurement, ServerBreakdown, measure

__all__ = ["LoadSpec", "Measurement", "ServerBreakdown", "measure"]
