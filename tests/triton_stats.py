"""Triton's statistics in tests: wait for the counts a test expects instead of reading them once.

The backend records a request's statistics after its response went out, so a client holding every
response can still read counters that miss some (under CPU load: all 16 of a burst, hardening #13).
`wait_for_inferences` polls with a deadline (deployer's own `wait_until`) and returns the last entry
seen either way, so the test's asserts report real values.
"""

from __future__ import annotations

from typing import Any

from deployer.smoke.waiting import wait_until

__all__ = ["model_stats", "wait_for_inferences"]


def model_stats(client: Any, model: str) -> dict[str, Any]:
    """The statistics entry of `model` (its only version) from a `tritonclient.http` client."""
    entry: dict[str, Any] = client.get_inference_statistics(model)["model_stats"][0]
    return entry


def _all_executed(entry: dict[str, Any]) -> bool:
    """Every inference counted is accounted to an execution (Triton records the two separately)."""
    executed = sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in entry.get("batch_stats", []))
    return executed == int(entry["inference_count"])


def wait_for_inferences(client: Any, model: str, count: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """`model`'s statistics entry once it shows at least `count` inferences, each accounted to an
    execution; at the deadline, the last entry seen."""
    return wait_until(
        lambda: model_stats(client, model),
        lambda entry: int(entry["inference_count"]) >= count and _all_executed(entry),
        timeout_s,
        interval_s=0.05,
    ).value
