"""The invalid-spec corpus, run through the real `deployer` console script.

Every file in tests/data/invalid/ is a spec with one mistake. Its header names the expected message
fragment (`# expect: ...`) and YAML path (`# path: ...`); the line the error must point at carries a
`# <-- error` marker. Each case must give exit code 2, the fragment, `file:line:col: path:` on the
marked line, no traceback, and leave an already populated repository byte-identical.

`deployer publish` runs once per case through the installed console script; `deployer validate` runs
for all cases in one interpreter through the same entry point (deployer.cli:main) to halve the cost.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
CORPUS = DATA / "invalid"
MODELS = DATA / "specs" / "models"
DEPLOYER = Path(sys.executable).parent / "deployer"
MARKER = "# <-- error"


@dataclass(frozen=True)
class Case:
    """One invalid spec and what it must produce."""

    file: Path
    expect: str
    path: str
    line: int
    xfail: str | None = None  # a known bug outside the spec stage, named in the case file


def _load_case(file: Path) -> Case:
    text = file.read_text(encoding="utf-8")
    expect = re.search(r"^# expect: (.+)$", text, re.M)
    path = re.search(r"^# path: (.+)$", text, re.M)
    lines = [i for i, line in enumerate(text.splitlines(), 1) if MARKER in line]
    assert expect and path and len(lines) == 1, f"{file.name}: needs '# expect:', '# path:' and one marker"
    xfail = re.search(r"^# xfail: (.+)$", text, re.M)
    return Case(file, expect.group(1).strip(), path.group(1).strip(), lines[0], xfail.group(1) if xfail else None)


CASES = [_load_case(f) for f in sorted(CORPUS.glob("*.yaml"))]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes (None for directories) under `root`, by relative path."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def flat(text: str) -> str:
    """Undo terminal line wrapping (rich wraps long lines at spaces when stderr is not a TTY)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def seeded_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding one published model, made by the real pipeline."""
    from deployer import pipeline
    from deployer.spec import load_deployment

    root = tmp_path_factory.mktemp("seed")
    shutil.copytree(MODELS, root / "models")
    spec = root / "seed.yaml"
    spec.write_text("models:\n  - name: relu\n    source: models/relu.onnx\n", encoding="utf-8")
    pipeline.publish(load_deployment(spec))
    repo = root / "model_repository"
    assert (repo / "relu" / "1" / "model.onnx").is_file()
    return repo


def test_corpus_is_large_and_covers_every_marker() -> None:
    assert len(CASES) >= 45
    assert len({(c.expect, c.path) for c in CASES}) == len(CASES), "duplicate case"


def test_committed_models_match_their_generator(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_models", MODELS / "make_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.write(tmp_path):
        assert path.read_bytes() == (MODELS / path.name).read_bytes(), f"regenerate {path.name}"


@dataclass(frozen=True)
class Run:
    """One command's exit code and output."""

    code: int
    stdout: str
    stderr: str


# `deployer validate` for many specs in ONE interpreter, through the console script's entry point
# (`deployer = deployer.cli:main`): interpreter start-up and imports (~1.3 CPU-s) would otherwise be paid
# per case. Uncaught exceptions are recorded as tracebacks, which the test rejects.
VALIDATE_MANY = """
import contextlib, io, json, os, sys, traceback
from deployer.cli import main
results = []
for cwd, spec in json.load(sys.stdin):
    os.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["deployer", "validate", spec]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:
            traceback.print_exc()
            code = -1
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
sys.__stdout__.write(json.dumps(results))
"""


def _prepare(case: Case, workdir: Path, seed: Path) -> Path:
    shutil.copytree(MODELS, workdir / "models")
    shutil.copytree(seed, workdir / "model_repository")
    shutil.copyfile(case.file, workdir / case.file.name)
    return workdir


def _publish(workdir: Path, case: Case) -> tuple[Run, bool]:
    """`deployer publish` through the installed console script; whether the repository stayed identical."""
    repo = workdir / "model_repository"
    before = snapshot(repo)
    for attempt in range(3):
        try:
            proc = subprocess.run([str(DEPLOYER), "publish", case.file.name], cwd=workdir, capture_output=True,
                                  text=True, timeout=300, check=False)
            break
        except OSError:  # the spawn itself failed (seen: EFAULT from exec on an overloaded host); not a result
            if attempt == 2:
                raise
    return Run(proc.returncode, proc.stdout, proc.stderr), snapshot(repo) == before


@dataclass
class Outcomes:
    """Results of the selected cases, computed concurrently (the cost is interpreter start-up)."""

    publish: dict[str, Future[tuple[Run, bool]]]
    validate: Future[dict[str, Run]]


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seeded_repository: Path
) -> Iterator[Outcomes]:
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_invalid_spec_is_rejected_with_location"]
    root = tmp_path_factory.mktemp("corpus")
    dirs = {c.file.stem: _prepare(c, root / c.file.stem, seeded_repository) for c in selected}

    def validate_all() -> dict[str, Run]:
        jobs = json.dumps([[str(dirs[c.file.stem]), c.file.name] for c in selected])
        proc = subprocess.run([sys.executable, "-c", VALIDATE_MANY], input=jobs, capture_output=True, text=True,
                              timeout=900, check=True)
        return {c.file.stem: Run(**r) for c, r in zip(selected, json.loads(proc.stdout), strict=True)}

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        validate = pool.submit(validate_all)
        publish = {c.file.stem: pool.submit(_publish, dirs[c.file.stem], c) for c in selected}
        yield Outcomes(publish, validate)
        for f in publish.values():
            f.cancel()


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.file.stem, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
     for c in CASES],
)
def test_invalid_spec_is_rejected_with_location(case: Case, outcomes: Outcomes) -> None:
    published, unchanged = outcomes.publish[case.file.stem].result(timeout=900)
    validated = outcomes.validate.result(timeout=900)[case.file.stem]
    for cmd, run in (("validate", validated), ("publish", published)):
        report = f"deployer {cmd} {case.file.name}\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}"
        assert run.code == 2, report
        assert "Traceback" not in run.stderr, report
        assert case.expect in flat(run.stderr), report
        where = re.escape(f"{case.file.name}:{case.line}:") + r"\d+: " + re.escape(f"{case.path}: ")
        assert re.search(where, run.stderr), f"no issue at line {case.line} for {case.path}\n{report}"
    assert unchanged, "the repository changed"


def test_many_rule_errors_are_all_reported_in_one_run(tmp_path: Path) -> None:
    shutil.copytree(MODELS, tmp_path / "models")
    spec = tmp_path / "many.yaml"
    spec.write_text(
        """models:
  - name: relu
    source: models/relu.onnx
    max_batch_size: 4
    version: 0
    dynamic_batching: {preferred_batch_size: [8]}
    instance_group: [{kind: CPU, gpus: [0]}]
  - name: static
    source: models/static.onnx
    max_batch_size: 2
  - name: image
    source: models/image.onnx
  - name: relu
    source: models/nope.onnx
""",
        encoding="utf-8",
    )
    proc = subprocess.run([str(DEPLOYER), "validate", str(spec)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    expected = {
        5: "version must be >= 1",
        6: "preferred batch size must be <= max_batch_size (4)",
        7: "kind CPU may not list GPUs",
        10: "batching needs a variable first dim",
        11: "has variable dims [3, -1, -1] but no min/opt/max shapes",
        13: "duplicate model name",
        14: "file not found",
    }
    text = flat(proc.stderr)
    for line, fragment in expected.items():
        assert f"many.yaml:{line}:" in proc.stderr and fragment in text, (line, fragment, proc.stderr)
    assert "problems in spec" in proc.stderr


def test_many_schema_errors_are_all_reported_in_one_run(tmp_path: Path) -> None:
    spec = tmp_path / "schema.yaml"
    spec.write_text(
        """repositry: out
server: {http_port: 0}
models:
  - name: a
    max_batch_sise: 1
  - name: b
    inputs: [{name: x, dims: [1]}]
  - source: x.onnx
""",
        encoding="utf-8",
    )
    proc = subprocess.run([str(DEPLOYER), "validate", str(spec)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    text = flat(proc.stderr)
    for line, fragment in {1: "did you mean 'repository'", 2: "greater than or equal to 1",
                           5: "did you mean 'max_batch_size'", 7: "models[1].inputs[0].dtype",
                           8: "models[2].name"}.items():
        assert f"schema.yaml:{line}:" in proc.stderr and fragment in text, (line, fragment, proc.stderr)


def test_every_issue_has_a_location_and_a_fix(tmp_path: Path) -> None:
    """In-process over the whole corpus: no issue without a line or a 'how to fix'."""
    from deployer.errors import SpecError
    from deployer.spec import load_deployment

    shutil.copytree(MODELS, tmp_path / "models")
    for case in CASES:
        spec = tmp_path / case.file.name
        shutil.copyfile(case.file, spec)
        with pytest.raises(SpecError) as info:
            load_deployment(spec)
        for issue in info.value.issues:
            assert issue.line > 0 and issue.column > 0, issue.format()
            assert issue.hint, f"{case.file.name}: no hint in {issue.format()}"
