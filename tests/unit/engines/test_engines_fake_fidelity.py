"""The FAKE tensorrt module may only expose names (and parameter names) that tensorrt-stubs declares."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

STUB_ROOT: Path | None = None
_spec = importlib.util.find_spec("tensorrt_stubs")
if _spec is not None and _spec.origin is not None:
    STUB_ROOT = Path(_spec.origin).resolve().parent.parent

pytestmark = pytest.mark.skipif(STUB_ROOT is None, reason="tensorrt-stubs is not installed")

VERSIONS = ["8.6.1.6", "10.13.0.35", "11.1.0.106"]


def _stub_index() -> tuple[set[str], dict[str, dict[str, list[list[str]]]]]:
    """(public module names, {class: {member: [param-name lists per overload]}}) from the .pyi files."""
    assert STUB_ROOT is not None
    init = ast.parse((STUB_ROOT / "tensorrt" / "__init__.pyi").read_text())
    exported: set[str] = set()
    for node in init.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            exported = set(ast.literal_eval(node.value))
    # The generated stubs contain `in:` parameters (invalid syntax); rename before parsing.
    src = (STUB_ROOT / "tensorrt_bindings" / "tensorrt.pyi").read_text().replace("(self, in:", "(self, in_:")
    src = src.replace(", in:", ", in_:").replace("channel_axis: int)", "channel_axis: int = ...)")
    tree = ast.parse(src)
    classes: dict[str, dict[str, list[list[str]]]] = {}

    def visit(cls: ast.ClassDef, prefix: str) -> None:
        members: dict[str, list[list[str]]] = {}
        for item in cls.body:
            if isinstance(item, ast.FunctionDef):
                params = [a.arg for a in item.args.args[1:]]
                members.setdefault(item.name, []).append(params)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                members.setdefault(item.target.id, [])
            elif isinstance(item, ast.ClassDef):
                members.setdefault(item.name, [])
                visit(item, f"{prefix}{cls.name}.")
        for base in cls.bases:  # inherit members declared on stub base classes
            if isinstance(base, ast.Name) and base.id in classes:
                for k, v in classes[base.id].items():
                    members.setdefault(k, v)
        classes[prefix + cls.name] = members

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            visit(node, "")
    return exported, classes


@pytest.fixture(scope="module")
def stubs() -> tuple[set[str], dict[str, dict[str, list[list[str]]]]]:
    return _stub_index()


def _own_members(cls: type) -> dict[str, object]:
    out: dict[str, object] = {}
    for klass in cls.__mro__:
        if klass.__module__ in ("builtins",) or klass is object:
            continue
        for k, v in vars(klass).items():
            if not k.startswith("_") or k in ("__init__", "__eq__", "__len__", "__getitem__", "__bool__"):
                out.setdefault(k, v)
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_fake_exposes_only_stub_names_and_parameters(
    version: str, fake_trt: Callable[..., ModuleType], stubs: tuple[set[str], dict[str, dict[str, list[list[str]]]]]
) -> None:
    exported, classes = stubs
    mod = fake_trt(version)
    problems: list[str] = []
    public = [n for n in vars(mod) if not n.startswith("_")]
    assert {"Builder", "OnnxParser", "Runtime", "BuilderFlag"} <= set(public)
    for name in public:
        if name not in exported:
            problems.append(f"module attribute {name} is not in the stubs")
            continue
        obj = getattr(mod, name)
        stub = classes.get(name, {})
        for member, value in _own_members(obj).items():
            if member.startswith("__") and member not in stub:
                continue  # dunders the stubs do not list are Python plumbing (e.g. __init__ of a pybind class)
            if member not in stub:
                problems.append(f"{name}.{member} is not declared by the stubs")
                continue
            func = value.fget if isinstance(value, property) else value
            if callable(func) and not isinstance(value, property) and stub[member]:
                params = [p for p in inspect.signature(func).parameters if p != "self"]
                if params not in stub[member]:
                    problems.append(f"{name}.{member}{tuple(params)} does not match the stubs' {stub[member]}")
    assert not problems, "\n".join(problems)


def test_version_specific_members(fake_trt: Callable[..., ModuleType]) -> None:
    t8, t10, t11 = (fake_trt(v) for v in VERSIONS)
    assert hasattr(t8.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(t8.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    assert not hasattr(t8.BuilderFlag, "BF16") and not hasattr(t8.DataType, "INT64")
    assert hasattr(t10.BuilderFlag, "FP16") and hasattr(t10.BuilderFlag, "BF16")
    for removed in ("FP16", "INT8", "BF16", "FP8", "OBEY_PRECISION_CONSTRAINTS"):
        assert not hasattr(t11.BuilderFlag, removed), removed
    assert not hasattr(t11.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(t11, "IInt8EntropyCalibrator2")
    assert not hasattr(t11.IBuilderConfig(), "int8_calibrator")
    assert hasattr(t10.IBuilderConfig(), "int8_calibrator")


def test_instance_attributes_are_stub_names(
    fake_trt: Callable[..., ModuleType], stubs: tuple[set[str], dict[str, dict[str, list[list[str]]]]]
) -> None:
    _, classes = stubs
    trt = fake_trt("10.13.0.35")
    logger = trt.Logger()
    instances = {
        "IBuilderConfig": trt.IBuilderConfig(),
        "Builder": trt.Builder(logger),
        "Runtime": trt.Runtime(logger),
        "Logger": logger,
        "INetworkDefinition": trt.Builder(logger).create_network(0),
    }
    bad = [
        f"{cls}.{attr}"
        for cls, obj in instances.items()
        for attr in vars(obj)
        if not attr.startswith("_") and attr not in classes[cls]
    ]
    assert not bad
