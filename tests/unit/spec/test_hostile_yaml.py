"""Hostile spec files through the real `deployer validate` console script.

Alias bombs, deep nesting, huge files, binaries, undecodable bytes and forbidden characters must each
give exit 2, one located error (`file:line:col:` where the input has a position) naming the limit, no
traceback, within 5 s wall and 500 MB peak RSS of the child. Big inputs are generated here, never
committed. A hypothesis test feeds random bytes and YAML-ish text to `validate` in-process.
"""

from __future__ import annotations

import contextlib
import io
import random
import re
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.spec.yamlsafe import MAX_ALIASES, MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES, MAX_TAG_CHARS
from tests.measured import run_deployer

DATA = Path(__file__).resolve().parents[2] / "data"
MODELS = DATA / "specs" / "models"
DEPLOYER = Path(sys.executable).parent / "deployer"  # the installed console script, as the corpus test runs it
CPU_LIMIT_S = 5.0  # CPU seconds of the child: wall time on a loaded machine measures the neighbours
RSS_LIMIT_KB = 500 * 1024
HARD_TIMEOUT_S = 120.0  # only so a regression fails instead of hanging the suite
SPEC = "case.yaml"
VALID = "models:\n  - name: relu\n    source: models/relu.onnx\n"


@dataclass(frozen=True)
class Outcome:
    """One run of the console script: exit code, stdout+stderr, CPU and wall time, the child's peak RSS."""

    code: int
    output: str
    cpu_seconds: float
    wall_seconds: float
    max_rss_kb: int


def run_validate(workdir: Path, spec: str = SPEC) -> Outcome:
    """`deployer validate SPEC` in `workdir`, measured by a small wrapper process (tests/measured.py).

    Not os.wait4 on a child of this process: a child forked from the suite counts the suite's resident
    pages (hundreds of MB once engines and models are loaded) in its peak RSS until it execs.
    """
    r = run_deployer("validate", spec, cwd=workdir, timeout_s=HARD_TIMEOUT_S)
    return Outcome(r.code, r.output, r.cpu_s, r.wall_s, r.peak_rss_bytes // 1024)


def assert_bounded(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    assert outcome.code != -9, f"killed after {outcome.wall_seconds:.1f} s wall (hang)\n{outcome.output[-2000:]}"
    assert outcome.cpu_seconds < CPU_LIMIT_S, (
        f"used {outcome.cpu_seconds:.1f} s of CPU ({outcome.wall_seconds:.1f} s wall)\n{outcome.output[-2000:]}")
    assert outcome.max_rss_kb < RSS_LIMIT_KB, f"peak RSS {outcome.max_rss_kb // 1024} MB"


ANY = "any"  # a position must be given, wherever it is
NONE = "none"  # the input has no position (a file that is too large)


@dataclass(frozen=True)
class Hostile:
    """A hostile input, the message fragment it must produce, and where the error must point."""

    make: Callable[[], bytes | str]
    expect: str
    where: tuple[int, int] | tuple[int, None] | str = ANY


def billion_laughs() -> str:
    """The classic: nine levels of nine aliases, ~300 bytes, 9**9 strings once expanded."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join([*lines, "models: *a9", ""])


def comments(size: int) -> str:
    line = "# " + "x" * 70 + "\n"
    return line * (size // len(line))


def largest_accepted() -> str:
    """Just under the size limit, of what ruamel's round-trip scanner handled quadratically (leading blank
    lines: 20 s for this file; a long comment; trailing spaces after a block scalar header), ending in a
    located mistake."""
    tail = "models:\n  - name: >-" + " " * 100_000 + "\n      relu\n    source: missing.onnx\n"
    comment = "# " + "x" * 200_000 + "\n"
    return "\n" * (MAX_SPEC_BYTES - len(comment) - len(tail) - 1) + comment + tail


LARGEST_LINES = largest_accepted().count("\n")

LIMITS = {
    "billion_laughs": Hostile(billion_laughs, f"more than {MAX_NODES} nodes once aliases are expanded"),
    "alias_fan_out": Hostile(lambda: "a: &a [" + "x, " * 200 + "]\nb: [" + "*a, " * 200 + "]\n",
                             f"more than {MAX_NODES} nodes once aliases are expanded", (2, None)),
    "alias_count": Hostile(lambda: "a: &a 1\nb: [" + "*a, " * (MAX_ALIASES + 5) + "]\n",
                           f"more than {MAX_ALIASES} aliases", (2, 5 + 4 * MAX_ALIASES)),
    "alias_depth_chain": Hostile(lambda: "l0: &l0 [1]\n" + "".join(f"l{i}: &l{i} [*l{i - 1}]\n" for i in range(1, 80)),
                                 f"more than {MAX_DEPTH} levels", (64, 12)),
    "alias_cycle": Hostile(lambda: "a: &a [1, *a]\nmodels: *a\n", "alias *a is inside the node it names", (1, 11)),
    "flow_sequences_10000_deep": Hostile(lambda: "models: " + "[" * 10_000 + "]" * 10_000 + "\n",
                                         f"more than {MAX_DEPTH} levels", (1, 9 + MAX_DEPTH - 1)),
    "flow_mappings_10000_deep": Hostile(lambda: "models: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
                                        f"more than {MAX_DEPTH} levels", (1, 9 + 4 * (MAX_DEPTH - 1))),
    "block_mappings_500_deep": Hostile(lambda: "".join(" " * i + f"k{i}:\n" for i in range(500)),
                                       f"more than {MAX_DEPTH} levels", (MAX_DEPTH + 1, MAX_DEPTH + 1)),
    "block_sequences_50000_deep": Hostile(lambda: "- " * 50_000 + "\n", f"more than {MAX_DEPTH} levels",
                                          (1, 2 * MAX_DEPTH + 1)),
    "too_many_nodes": Hostile(lambda: "models:\n" + "  - 1\n" * (2 * MAX_NODES), f"more than {MAX_NODES} nodes"),
    "many_documents": Hostile(lambda: "a: 1\n" + "---\n" * 200_000, "expected a single document", (2, 1)),
    "long_tag": Hostile(lambda: "models: !" + "t" * 500_000 + " 1\n", f"tag longer than {MAX_TAG_CHARS}", (1, 9)),
    "long_number": Hostile(lambda: "models: 1" + "0" * 500_000 + "\n", "number longer than 4300", (1, 9)),
    "yaml11_sexagesimal": Hostile(lambda: "%YAML 1.1\n---\nmodels: 1" + ":1" * 200_000 + "\n",
                                  "number longer than 4300", (3, 9)),
    "block_header_trailing_spaces": Hostile(lambda: "models: |" + " " * 900_000 + "\n  x\n",
                                            "input should be a valid list", (1, 9)),
    "largest_accepted_file": Hostile(largest_accepted, "file not found", (LARGEST_LINES, 13)),
    "file_just_over_limit": Hostile(lambda: "#" * MAX_SPEC_BYTES + "\n", f"the limit is {MAX_SPEC_BYTES} bytes", NONE),
    "file_10_mb_comments": Hostile(lambda: comments(10 * 2**20), "spec file too large", NONE),
    "file_50_mb_comments": Hostile(lambda: comments(50 * 2**20), "spec file too large", NONE),
}

BYTES = {
    "nul_in_value": Hostile(lambda: b"models:\n  - name: a\x00b\n", "NUL character", (2, 12)),
    "bel": Hostile(lambda: b"models:\n  - name: a\x07b\n", "BEL U+0007 is not allowed", (2, 12)),
    "esc_sequence": Hostile(lambda: b"models: 1\nx: \x1b[31mred\n", "ESC U+001B", (2, 4)),
    "del": Hostile(lambda: b"a: \x7f\n", "DEL U+007F", (1, 4)),
    "c1_control": Hostile(lambda: "a: b\n  c: \x9b\n".encode(), "control character U+009B", (2, 6)),
    "noncharacter_fffe": Hostile(lambda: "a: x\ufffe\n".encode(), "U+FFFE", (1, 5)),
    "cr_line_ends": Hostile(lambda: b"a: 1\rb: 2\rc: \x07\r", "BEL", (3, 4)),
    "latin1": Hostile(lambda: "models:\n  - name: café\n".encode("latin-1"), "not valid UTF-8: byte 0xe9",
                      (2, 14)),
    "bad_utf8_after_multibyte": Hostile(lambda: "models:\n  - name: éé".encode() + b"\xff\n",
                                        "not valid UTF-8: byte 0xff", (2, 13)),
    "utf8_encoded_surrogate": Hostile(lambda: b"a: 1\nb: \xed\xa0\x80\n", "not valid UTF-8", (2, 4)),
    "onnx_model_as_spec": Hostile(lambda: (MODELS / "relu.onnx").read_bytes(), "not a text file: NUL"),
    "random_binary": Hostile(lambda: random.Random(8).randbytes(4096), "not a text file"),
    "utf16_lone_surrogate": Hostile(lambda: "\ufeffa: 1\nb: ".encode("utf-16-le") + b"\x00\xd8x\x00",
                                    "not valid UTF-16 LE", (2, 4)),
    "utf16_odd_length": Hostile(lambda: "\ufeffmodels:\n".encode("utf-16-le") + b"a", "truncated data", (2, 1)),
    "utf16_schema_error_located": Hostile(lambda: (VALID + "    colour: red\n").encode("utf-16"),
                                          "unknown key 'colour'", (4, 5)),
    "utf32_be_schema_error_located": Hostile(lambda: ("\ufeff" + VALID + "    max_batch_size: x\n").encode("utf-32-be"),
                                             "valid integer", (4, 21)),
}


def _write(workdir: Path, content: bytes | str) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    (workdir / SPEC).write_bytes(data)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(MODELS, tmp_path / "models")
    return tmp_path


@pytest.mark.parametrize("case", [pytest.param(c, id=k) for k, c in {**LIMITS, **BYTES}.items()])
def test_hostile_spec_is_refused_fast_and_located(case: Hostile, workdir: Path) -> None:
    _write(workdir, case.make())
    outcome = run_validate(workdir)
    report = f"exit {outcome.code}\n{outcome.output[-3000:]}"
    assert outcome.code == 2, report
    assert_bounded(outcome)
    flat = " ".join(outcome.output.split())
    assert case.expect in flat, report
    assert flat.count("error:") == 1, report  # printed once
    located = re.search(rf"{re.escape(SPEC)}:(\d+):(\d+): ", flat)
    if case.where == NONE:
        assert located is None and f"{SPEC}: " in flat, report
        return
    assert located, f"no {SPEC}:line:col in\n{report}"
    if isinstance(case.where, tuple):
        line, column = case.where
        assert int(located.group(1)) == line, report
        if column is not None:
            assert int(located.group(2)) == column, report


def test_dev_zero_is_read_only_up_to_the_limit(workdir: Path) -> None:
    """No size to stat: the bounded read must stop it."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    outcome = run_validate(workdir, "/dev/zero")
    assert outcome.code == 2, outcome.output
    assert_bounded(outcome)
    assert "spec file too large" in outcome.output and "read stopped at the limit" in outcome.output


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be-bom", "utf-32", "utf-32-be-bom", "utf-16-le"])
def test_spec_in_another_unicode_encoding_is_read(encoding: str, workdir: Path) -> None:
    """YAML 1.2 allows UTF-16/32 (BOM, or the zero bytes of an ASCII first character): decode, don't refuse."""
    text = VALID
    if encoding.endswith("-bom"):
        encoding, text = encoding.removesuffix("-bom"), "\ufeff" + text
    _write(workdir, text.encode(encoding))
    outcome = run_validate(workdir)
    assert outcome.code == 0, outcome.output
    assert_bounded(outcome)
    assert "valid (1 model)" in outcome.output


# --------------------------------------------------------------------------- random input, in-process


def validate_in_process(spec: Path) -> tuple[int, str]:
    """`deployer validate` through the console script's entry point (deployer.cli:main), output captured."""
    from deployer.cli import main

    out = io.StringIO()
    argv = sys.argv
    sys.argv = ["deployer", "validate", str(spec)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException:  # recorded, and rejected below
                traceback.print_exc()
                code = -1
    finally:
        sys.argv = argv
    return code, out.getvalue()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(MODELS, root / "models")
    (root / SPEC).write_text(VALID, encoding="utf-8")
    assert validate_in_process(root / SPEC)[0] == 0  # warm the imports: the deadline is for the input
    return root


TOKENS = [
    "models:", "\n", "  ", "    ", "- ", "name: ", "relu", "source: ", "models/relu.onnx", "max_batch_size: ",
    "8", "-1", "1.5", "0x1f", "1:30", "2020-13-45", "yes", "~", "[", "]", "{", "}", ", ", ": ", "? ", "&a ",
    "*a", "<<: ", "!!str ", "!!int ", "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!custom ",
    "!<tag:x> ", "|", ">-", "|2", "#", " # c", '"', "'", "\\", "\\x00", "---", "...", "%YAML 1.1\n",
    "%TAG !e! tag:e:\n", "\t", "\r\n", "\r", "\x00", "\x07", "\x85", "\u2028", "\ufeff", "é", "😀",
    "defaults:", "inputs:", "dims: ", "dtype: ", "dynamic_batching:", "config_overrides:", "ensemble:",
]


def assert_handled(fuzz_dir: Path, data: bytes) -> None:
    (fuzz_dir / SPEC).write_bytes(data)
    code, output = validate_in_process(fuzz_dir / SPEC)
    assert code in (0, 2), output
    assert "Traceback" not in output, output


# Small inputs: a few ms each; the deadline only catches a runaway. ~550 examples, well under 20 s.
FUZZ = settings(deadline=timedelta(seconds=3), suppress_health_check=[HealthCheck.too_slow])


@settings(FUZZ, max_examples=150)
@given(data=st.binary(max_size=400))
def test_random_bytes_are_refused_cleanly(fuzz_dir: Path, data: bytes) -> None:
    assert_handled(fuzz_dir, data)


@settings(FUZZ, max_examples=250)
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=50),
       encoding=st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32-le", "latin-1"]))
def test_random_yamlish_text_is_handled(fuzz_dir: Path, tokens: list[str], encoding: str) -> None:
    assert_handled(fuzz_dir, "".join(tokens).encode(encoding, errors="replace"))


@settings(FUZZ, max_examples=150)
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 3), st.sampled_from(TOKENS)), max_size=4))
def test_edited_valid_spec_is_handled(fuzz_dir: Path, edits: list[tuple[int, int, str]]) -> None:
    text = VALID
    for at, delete, token in edits:
        text = text[:at] + token + text[at + delete:]
    assert_handled(fuzz_dir, text.encode("utf-8"))
