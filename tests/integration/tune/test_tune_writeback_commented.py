"""A real `deployer tune` on the quickstart writes back into a heavily commented spec: every byte outside
the classifier's tuned keys and the tune comment stays, the result validates, `defaults:` is untouched.

The spec starts the classifier with a preferred batch of 8 and a 100 ms queue delay under 4 clients:
batches never fill, every request waits the full delay (~40 req/s), so any neighbour (delay 0, or
max_batch_size 4 with [2, 4]) wins by orders of magnitude even on loaded shared cores and the tuner
always has something to write (the quickstart MLP is too small for batching alone to win reliably).
The budget is 4 short trials.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployer.spec import load_deployment
from deployer.tune.writeback import MARKER

ROOT = Path(__file__).resolve().parents[3]
QUICKSTART = ROOT / "examples" / "quickstart"
TUNED = ("max_batch_size", "dynamic_batching", "instance_group")

pytestmark = [pytest.mark.triton]

# Comments on every line, odd quoting (single, double, quoted keys, a quoted number-like string), flow
# and block styles side by side, uneven indentation, a `defaults:` section the model inherits from.
SPEC = """\
# a spec written by hand -- every line carries a comment   (odd   spacing kept)
"repository":   'repo'          # quoted key, single-quoted value
server:                         # block mapping
  runtime:  "local"             # double-quoted
  http_port: {http}             # port 1 of 3
  grpc_port:   {grpc}           # port 2 of 3
  metrics_port: {metrics}       # port 3 of 3
smoke: {{concurrency: 4, duration: 1, "sla": {{p99_ms: 2000}}}}   # flow mapping, nested, a quoted key
defaults:                       # inherited by both models; the tuner must never write here
    instance_group:             # deeper indentation than elsewhere
        - kind: CPU             # block sequence of a block mapping
          count: 1              # the classifier inherits this count
    version_policy: {{ latest: 1 }}   # spaces inside the braces
models:                         # the models
  # ---- the one being tuned ----
  - name: 'classifier'          # single-quoted name
    source: "classifier.onnx"   # double-quoted path
    max_batch_size: 8           # batches of 8 never fill with 4 clients
    dynamic_batching:           # block style
      preferred_batch_size:     # a block sequence ...
        - 8                     # ... of one item
      'max_queue_delay_microseconds': 100000   # a quoted key: 100 ms, far too long
    # a comment between the tuned keys and the tune section
    tune:                       # a tiny budget: 4 short trials
      p99_ms: 2000              # generous: every candidate meets it
      budget: {{trials: 4}}     # flow
      load: {{concurrency: [4], warmup_s: 0.3, window_s: 0.5, max_windows: 3}}   # short windows
      space:                    # a small space
        max_batch_size: [4, 8]                      # flow sequence
        max_queue_delay_microseconds: [0, 100000]   # two delays
        instance_count: [1, 2]                      # two counts
  - name: labels                # the python-backend model: untouched
    source: labels.py           # plain
    backend: "python"           # quoted
    max_batch_size: 16          # not tuned
    inputs: [{{name: logits, dtype: FP32, dims: [4]}}]    # flow list of a flow mapping
    outputs:                    # block list
      - {{name: label, dtype: STRING, dims: [1]}}        # of flow mappings
# the end: a trailing comment on the last line
"""


def _last_line(node: Any) -> int:
    """0-based line of the last character of `node`'s content (block collections end at their last child)."""
    kind = type(node).__name__
    if kind == "ScalarNode" or node.flow_style:
        return int(node.end_mark.line)
    lines = [int(node.start_mark.line)]
    for item in node.value:
        for n in item if isinstance(item, tuple) else (item,):
            lines.append(_last_line(n))
    return max(lines)


def _tuned_lines(text: str) -> set[int]:
    """Lines of the classifier's tuned keys (key line to the line of the value's last character)."""
    from ruamel.yaml import YAML

    root = YAML(typ="rt").compose(text)
    models = next(v for k, v in root.value if k.value == "models")
    classifier = models.value[0]
    out: set[int] = set()
    for k, v in classifier.value:
        if k.value in TUNED:
            out.update(range(int(k.start_mark.line), _last_line(v) + 1))
    return out


def _kept(text: str, *, comments: bool) -> list[str]:
    """The lines outside the tuned keys (and, in the new text, outside the tune comment), with line ends."""
    tuned = _tuned_lines(text)
    return [ln for i, ln in enumerate(text.splitlines(keepends=True))
            if i not in tuned and not (comments and ln.lstrip().startswith(MARKER))]


def _data(path: Path) -> Any:
    from ruamel.yaml import YAML

    return json.loads(json.dumps(YAML(typ="safe").load(path.read_text(encoding="utf-8"))))


def test_write_back_keeps_a_heavily_commented_spec_byte_identical_outside_the_tuned_keys(
    tmp_path: Path, find_free_ports: Callable[..., list[int]]
) -> None:
    for f in ("classifier.onnx", "labels.py"):
        shutil.copy(QUICKSTART / f, tmp_path / f)
    http, grpc, metrics = find_free_ports(3)
    spec = tmp_path / "deployer.yaml"
    spec.write_bytes(SPEC.format(http=http, grpc=grpc, metrics=metrics).encode("utf-8"))
    old_text = spec.read_text(encoding="utf-8")
    old_data = _data(spec)
    assert all("#" in ln for ln in old_text.splitlines())  # a comment on every line

    report = tmp_path / "tune.json"
    r = subprocess.run([sys.executable, "-m", "deployer", "tune", str(spec), "classifier", "--json", str(report)],
                       capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(report.read_text())
    assert result["written"], f"the tuner kept the original config (100 ms delay); trials: {result['trials']}"
    assert 2 <= len(result["trials"]) <= 4
    new_text = spec.read_text(encoding="utf-8")

    # 1. line by line: outside the tuned keys of the classifier and the tune comment, nothing changed
    assert _kept(new_text, comments=True) == _kept(old_text, comments=False)
    new_lines = new_text.splitlines()
    at = [i for i, ln in enumerate(new_lines) if ln.lstrip().startswith(MARKER)]
    comment = [new_lines[i].strip() for i in at]
    assert len(comment) == 3 and "max_throughput" in comment[0] and "c=4" in comment[1], comment
    assert at == list(range(at[0], at[0] + 3)) and at[-1] + 1 in _tuned_lines(new_text)  # right above the block
    assert MARKER not in old_text
    changed = [ln for i, ln in enumerate(new_text.splitlines()) if i in _tuned_lines(new_text)]
    assert changed != [ln for i, ln in enumerate(old_text.splitlines()) if i in _tuned_lines(old_text)]
    # scalar values are replaced in place: their lines keep their comments (a block list turned flow keeps
    # only its last item's, which is inside the tuned block)
    for kept in ("# batches of 8 never fill with 4 clients", "# a quoted key: 100 ms, far too long"):
        assert any(kept in ln for ln in changed), (kept, changed)

    # 2. the written spec validates, and the classifier now has the winner's settings
    best = result["trials"][result["best"] - 1]["candidate"]
    m = load_deployment(spec).model("classifier")
    assert best != result["trials"][0]["candidate"]
    assert m.max_batch_size == best["max_batch_size"]
    assert m.spec.dynamic_batching is not None
    assert m.spec.dynamic_batching.max_queue_delay_microseconds == best["max_queue_delay_microseconds"]
    assert list(m.spec.dynamic_batching.preferred_batch_size) == best["preferred_batch_size"]
    assert [g.count for g in m.spec.instance_group or []] == [best["instance_count"]]

    # 3. defaults: unchanged (text and data); the data differs only in the classifier's tuned keys
    new_data = _data(spec)
    assert new_data["defaults"] == old_data["defaults"]
    lines = old_text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.startswith("defaults:"))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("models:"))
    assert "".join(lines[start:end]) in new_text
    for key in set(old_data) | set(new_data):
        if key != "models":
            assert new_data[key] == old_data[key], key
    assert new_data["models"][1] == old_data["models"][1]
    assert {k: v for k, v in new_data["models"][0].items() if k not in TUNED} == \
        {k: v for k, v in old_data["models"][0].items() if k not in TUNED}
    assert not [p for p in tmp_path.iterdir() if ".tune-" in p.name]  # no temp copy left
