"""The invalid-spec corpus, run through the real `deployer` console script.

Every file in tests/data/invalid/ is a spec with one mistake. Its header names the expected message
fragment (`# expect: ...`) and YAML path (`# path: ...`); the line the error must point at carries a
`# <-- error` marker. Each case must give exit code 2, the fragment, `file:line:col: path:` on the
marked line, no traceback, and leave an already populated repository byte-identical.
"""

from __future__ import annotations

import importlib.util
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

DATA = Path(__file__).resolve().parents[1] / "data"
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


def _load_case(file: Path) -> Case:
    text = file.read_text(encoding="utf-8")
    expect = re.search(r"^# expect: (.+)$", text, re.M)
    path = re.search(r"^# path: (.+)$", text, re.M)
    lines = [i for i, line in enumerate(text.splitlines(), 1) if MARKER in line]
    assert expect and path and len(lines) == 1, f"{file.name}: needs '# expect:', '# path:' and one marker"
    return Case(file, expect.group(1).strip(), path.group(1).strip(), lines[0])


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
class Outcome:
    """What the console script did for one case."""

    results: dict[str, subprocess.CompletedProcess[str]]
    spec: Path
    unchanged: bool


def _run_case(case: Case, workdir: Path, seed: Path) -> Outcome:
    shutil.copytree(MODELS, workdir / "models")
    repo = workdir / "model_repository"
    shutil.copytree(seed, repo)
    spec = workdir / case.file.name
    shutil.copyfile(case.file, spec)
    before = snapshot(repo)
    results = {
        cmd: subprocess.run([str(DEPLOYER), cmd, spec.name], cwd=workdir, capture_output=True, text=True,
                            timeout=300, check=False)
        for cmd in ("validate", "publish")
    }
    return Outcome(results, spec, snapshot(repo) == before)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seeded_repository: Path
) -> Iterator[dict[str, Future[Outcome]]]:
    """Run the selected cases concurrently (one worker per core): the cost is interpreter start-up."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_invalid_spec_is_rejected_with_location"]
    root = tmp_path_factory.mktemp("corpus")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {c.file.stem: pool.submit(_run_case, c, root / c.file.stem, seeded_repository) for c in selected}
        yield futures
        for f in futures.values():
            f.cancel()


@pytest.mark.parametrize("case", CASES, ids=[c.file.stem for c in CASES])
def test_invalid_spec_is_rejected_with_location(case: Case, outcomes: dict[str, Future[Outcome]]) -> None:
    outcome = outcomes[case.file.stem].result(timeout=600)
    for cmd, proc in outcome.results.items():
        report = f"deployer {cmd} {case.file.name}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert proc.returncode == 2, report
        assert "Traceback" not in proc.stderr, report
        assert case.expect in flat(proc.stderr), report
        where = re.escape(f"{outcome.spec.name}:{case.line}:") + r"\d+: " + re.escape(f"{case.path}: ")
        assert re.search(where, proc.stderr), f"no issue at line {case.line} for {case.path}\n{report}"
    assert outcome.unchanged, "the repository changed"


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
