"""The config a candidate is loaded with: what Triton serves back must equal it (the trial's check)."""

from __future__ import annotations

from deployer.config.diff import diff_config
from deployer.tune.session import candidate_config
from deployer.tune.space import Candidate

SERVED = {"name": "m", "platform": "onnxruntime_onnx", "max_batch_size": 8,
          "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100},
          "instance_group": [{"kind": "KIND_CPU", "count": 1}]}


def test_no_preferred_set_leaves_the_key_out_for_triton_to_fill() -> None:
    cfg = candidate_config(SERVED, Candidate(16, (), 500, 2))
    assert "preferred_batch_size" not in cfg["dynamic_batching"]
    # Triton normalizes "none" to [max_batch_size]; the check must accept what it serves back
    served = {**cfg, "dynamic_batching": {**cfg["dynamic_batching"], "preferred_batch_size": [16]}}
    assert diff_config(cfg, served) == []
    assert cfg["max_batch_size"] == 16 and cfg["instance_group"][0]["count"] == 2


def test_a_preferred_set_is_sent_and_checked() -> None:
    cfg = candidate_config(SERVED, Candidate(8, (2, 8), 0, 1))
    assert cfg["dynamic_batching"]["preferred_batch_size"] == [2, 8]
    served = {**cfg, "dynamic_batching": {**cfg["dynamic_batching"], "preferred_batch_size": [8]}}
    assert [d.path for d in diff_config(cfg, served)] == ["dynamic_batching.preferred_batch_size"]
