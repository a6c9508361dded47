"""docs/spec.md is generated from the schema and stays in sync; its example is a working spec."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from deployer import pipeline
from deployer.spec import docs, load_deployment
from deployer.spec.schema import Spec

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "tests" / "data" / "specs" / "models"


# docs/spec.md is generated on the project's CI Python (3.11); the other-Python unit containers render some
# schema texts differently (seen on 3.13, not yet explained), which is not a behaviour difference.
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="docs/spec.md is generated with Python 3.11")
def test_docs_spec_md_is_in_sync_with_the_generator() -> None:
    on_disk = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert on_disk == docs.generate(), "run `python -m deployer.spec.docs docs/spec.md` and commit the result"


def test_every_key_is_documented_with_type_default_and_description() -> None:
    text = docs.generate()
    classes = docs.sections()
    assert Spec in classes and len(classes) > 30
    for cls in classes:
        assert f'<a id="{cls.__name__.lower()}"></a>' in text
        for key, field in cls.model_fields.items():
            assert docs.description(cls, key, field), f"{cls.__name__}.{key} has no description"
            row = f"| `{key}` | {docs.type_name(field.annotation)}"
            assert row in text, row


def test_notes_only_fill_gaps_in_the_schema() -> None:
    by_name: dict[str, type[BaseModel]] = {c.__name__: c for c in docs.sections()}
    for ref in docs.NOTES:
        cls_name, key = ref.split(".")
        field = by_name[cls_name].model_fields[key]
        assert not field.description, f"{ref}: the schema now has a description; drop the note"


def test_defaults_are_rendered_as_yaml_values() -> None:
    fields = Spec.model_fields
    assert docs.default_text(fields["models"]) == "**required**"
    assert docs.default_text(fields["repository"]) == '`"model_repository"`'
    assert docs.default_text(fields["templates"]) == "unset"
    assert docs.type_name(fields["fallback"].annotation) == '`"onnxruntime"`'


def test_the_example_validates_and_publishes(tmp_path: Path) -> None:
    shutil.copytree(MODELS, tmp_path / "models")
    spec = tmp_path / "example.yaml"
    spec.write_text(docs.EXAMPLE, encoding="utf-8")
    dep = load_deployment(spec)
    assert [m.name for m in dep.models] == ["relu", "image", "add", "pipe"]
    assert dep.model("relu").config["dynamic_batching"] == {"preferred_batch_size": [4, 8],
                                                           "max_queue_delay_microseconds": 100}
    result = pipeline.publish(dep)
    assert {m.name: m.version for m in result.models} == {"relu": 1, "image": 1, "add": 1, "pipe": 1}


def test_main_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "d" / "spec.md"
    assert docs.main([str(out)]) == 0
    assert out.read_text(encoding="utf-8") == docs.generate()
