"""Write-back changes only the tuned keys: every other byte of a heavily commented spec stays."""

from __future__ import annotations

import difflib

from deployer.tune.writeback import MARKER, Sub, check_rewrite, rewrite

SPEC = """\
# top comment   with  odd   spacing
repository:   repo      # trailing
defaults:
  dynamic_batching: {max_queue_delay_microseconds: 500}   # defaults are never changed
models:
  # the first model
  - name: "a"                # quoted
    source: 'a.onnx'
    max_batch_size:    8     # spaced value
    dynamic_batching:
        # deeper indentation here
        preferred_batch_size:
          - 4
          - 8
        max_queue_delay_microseconds: 100   # keep this comment
    instance_group: [ {kind: CPU,   count: 1} ]
    # after instance_group
  - {name: b, source: b.onnx, dynamic_batching: {preserve_ordering: true}}
  - name: c
    source: c.onnx
    # last line comment
"""


def _changed_lines(old: str, new: str) -> list[str]:
    return sorted(line[0] + line[2:] for line in difflib.ndiff(old.splitlines(), new.splitlines())
                  if line[:1] in "+-")


def test_only_tuned_keys_and_the_comment_change() -> None:
    upd = {"max_batch_size": 16, "dynamic_batching": Sub({"preferred_batch_size": [8, 16]}),
           "instance_group": Sub({0: Sub({"count": 2})})}
    new = rewrite(SPEC, 0, upd, [f"{MARKER} x"])
    check_rewrite(SPEC, new, 0, upd)
    changed = _changed_lines(SPEC, new)
    assert changed == sorted([
        "-    max_batch_size:    8     # spaced value",
        f"+    {MARKER} x",
        "+    max_batch_size:    16     # spaced value",
        "-        preferred_batch_size:",
        "-          - 4",
        "-          - 8",
        "+        preferred_batch_size: [8, 16]",
        "-    instance_group: [ {kind: CPU,   count: 1} ]",
        "+    instance_group: [ {kind: CPU,   count: 2} ]",
    ]), changed
    # a second run replaces the older comment block instead of stacking another
    again = rewrite(new, 0, {"max_batch_size": 32}, [f"{MARKER} y"])
    assert again.count(MARKER) == 1 and f"{MARKER} y" in again


def test_missing_keys_are_inserted_in_flow_and_block_models() -> None:
    upd_b = {"dynamic_batching": Sub({"max_queue_delay_microseconds": 250}), "max_batch_size": 4}
    new = rewrite(SPEC, 1, upd_b, [f"{MARKER} b"])
    check_rewrite(SPEC, new, 1, upd_b)
    assert "  - {name: b, source: b.onnx, dynamic_batching: {preserve_ordering: true, " \
           "max_queue_delay_microseconds: 250}, max_batch_size: 4}" in new
    upd_c = {"dynamic_batching": {"max_queue_delay_microseconds": 1000},
             "instance_group": [{"kind": "CPU", "count": 2}]}
    new_c = rewrite(SPEC, 2, upd_c, [f"{MARKER} c"])
    check_rewrite(SPEC, new_c, 2, upd_c)
    assert new_c.startswith(SPEC.split("  - name: c")[0])  # nothing before model c changed
    assert f"    {MARKER} c\n    dynamic_batching: {{max_queue_delay_microseconds: 1000}}\n" in new_c
    assert "defaults:\n  dynamic_batching: {max_queue_delay_microseconds: 500}   # defaults are never changed" in new_c


def test_crlf_specs_keep_crlf() -> None:
    text = SPEC.replace("\n", "\r\n")
    new = rewrite(text, 2, {"max_batch_size": 4}, [f"{MARKER} c"])
    assert "\n" not in new.replace("\r\n", "")
