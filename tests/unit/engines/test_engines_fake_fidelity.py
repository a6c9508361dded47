"""The FAKE tensorrt module may only expose names (and parameter names) that tensorrt-stubs declares."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
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


# ---- against the REAL TensorRT-RTX module and the stubs' enum values ------------------------------------

# The only differences allowed between the fake and the real module it is checked against, and why.
ALLOWED_DIFFERENCES: dict[str, str] = {
    # pybind11 keeps the C++ overload set; the fake implements the one overload deployer calls.
    "Runtime.deserialize_cuda_engine": "overloaded in the binding (bytes / IStreamReader); the fake takes bytes",
    # Python-side helpers of the fake classes that the real ones get from pybind11 (no docstring signature).
    "Dims.__init__": "pybind11 has several constructors; the fake takes one list",
}
_SIG = re.compile(r"^(\w+)\(self: [\w.]+(?:, )?(.*)\) -> .*$")


def _doc_params(func: object) -> list[tuple[str, str]] | None:
    """[(name, type)] from a pybind11 docstring's first line, None when it has none (overloads, properties)."""
    doc = (getattr(func, "__doc__", None) or "").strip().splitlines()
    m = _SIG.match(doc[0]) if doc else None
    if not m:
        return None
    out: list[tuple[str, str]] = []
    depth, cur = 0, ""
    for ch in m.group(2) + ",":
        if ch == "," and depth == 0:
            if cur.strip():
                name, _, typ = cur.strip().partition(":")
                out.append((name.strip(), typ.split("=")[0].strip()))
            cur = ""
            continue
        depth += (ch in "[(" and 1) or ((ch in "])" and -1) or 0)
        cur += ch
    return out


def _stub_enum_values() -> dict[str, dict[str, int]]:
    assert STUB_ROOT is not None
    src = (STUB_ROOT / "tensorrt_bindings" / "tensorrt.pyi").read_text()
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"__members__: typing\.ClassVar\[dict\[str, (\w+)\]\]  # value = \{(.*)\}", src):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"'(\w+)': <\w+\.\w+: (\d+)>", m.group(2))}
    return out


def _enum_classes(mod: ModuleType) -> dict[str, dict[str, int]]:
    return {n: {k: int(v) for k, v in getattr(mod, n).__members__.items()}
            for n in vars(mod) if not n.startswith("_") and hasattr(getattr(mod, n), "__members__")}


@pytest.mark.parametrize("version", ["8.6.1.6", "10.13.0.35"])
def test_fake_enum_values_are_the_stubs(version: str, fake_trt: Callable[..., ModuleType]) -> None:
    stub = _stub_enum_values()
    wrong = [f"{cls}.{k} = {v} (stubs: {stub[cls].get(k)})"
             for cls, members in _enum_classes(fake_trt(version)).items() if cls in stub
             for k, v in members.items() if stub[cls].get(k) != v and cls not in ("ErrorCode", "Severity")]
    assert not wrong, "\n".join(wrong)
    assert int(fake_trt(version).BuilderFlag.TF32) == 6  # position 4 in the old fake; 6 in the real module


@pytest.fixture(scope="module")
def rtx() -> ModuleType:
    """The real TensorRT-RTX bindings (trt-rtx extra, installed by the test set-up)."""
    module: ModuleType = pytest.importorskip("tensorrt_rtx_bindings", reason="the trt-rtx extra is not installed")
    return module


@pytest.mark.trt_rtx
def test_fake_11_names_values_and_signatures_are_the_real_tensorrt_rtx(
    fake_trt: Callable[..., ModuleType], rtx: ModuleType
) -> None:
    fake = fake_trt("11.1.0.106")
    problems: list[str] = []
    real_enums = _enum_classes(rtx)
    for cls, members in _enum_classes(fake).items():
        if cls in ("Severity",):
            continue
        for k, v in members.items():
            if cls not in real_enums or k not in real_enums[cls]:
                problems.append(f"{cls}.{k} does not exist in TensorRT-RTX")
            elif real_enums[cls][k] != v:
                problems.append(f"{cls}.{k} = {v}, TensorRT-RTX: {real_enums[cls][k]}")
    for name in (n for n in vars(fake) if not n.startswith("_")):
        obj, real = getattr(fake, name), getattr(rtx, name, None)
        if real is None:
            problems.append(f"{name} does not exist in TensorRT-RTX")
            continue
        if not isinstance(obj, type) or hasattr(obj, "__members__"):
            continue
        for member, value in vars(obj).items():
            if member.startswith("_") and member != "__init__":
                continue
            if not hasattr(real, member):
                problems.append(f"{name}.{member} does not exist in TensorRT-RTX")
                continue
            if f"{name}.{member}" in ALLOWED_DIFFERENCES or isinstance(value, property) or not callable(value):
                continue
            want = _doc_params(getattr(real, member))
            if want is None:
                continue
            got = [p for p in inspect.signature(value).parameters.values() if p.name != "self"]
            if [p.name for p in got] != [n for n, _ in want]:
                problems.append(f"{name}.{member}{tuple(p.name for p in got)} vs TensorRT-RTX {want}")
            for p, (_, typ) in zip(got, want, strict=False):
                expected = "str" if typ == "str" else "int"
                if typ in ("str", "typing.SupportsInt") and expected not in str(p.annotation):
                    problems.append(f"{name}.{member}: {p.name} is {p.annotation}, TensorRT-RTX says {typ}")
    assert not problems, "\n".join(problems)


@pytest.mark.trt_rtx
def test_fake_behaves_like_tensorrt_rtx(tmp_path: Path, fake_trt: Callable[..., ModuleType], rtx: ModuleType) -> None:
    """Behaviour both must share: strongly typed networks, shape-tensor inputs, timing caches it cannot read."""
    import warnings

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 12]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "reshape.onnx"
    onnx.save(model, str(path))
    from deployer.engines.adapters import shared_logger

    for mod in (rtx, fake_trt("11.1.0.106")):
        logger, captured = shared_logger(mod)
        builder = mod.Builder(logger)
        network = builder.create_network(0)
        assert network.get_flag(mod.NetworkDefinitionCreationFlag.STRONGLY_TYPED), mod
        assert mod.OnnxParser(network, logger).parse_from_file(str(path))
        assert [network.get_input(i).is_shape_tensor for i in range(network.num_inputs)] == [False, True], mod
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cache = builder.create_builder_config().create_timing_cache(b"not a timing cache")
        assert cache is not None and captured.errors(), mod  # an empty cache back, and an ERROR logged
