"""CPU ONNX Runtime for Triton as a Python-based backend (`<backend-dir>/onnxruntime/model.py`).

Installed by the local runtime only when the server has no native onnxruntime backend (the
nvidia-pytriton wheel ships none). It serves `backend: "onnxruntime"` / `platform: "onnxruntime_onnx"`
models with `CPUExecutionProvider`. Triton's schedulers (dynamic batching, instance groups) stay
Triton's own; this file only executes what Triton hands it.

Run by Triton's python-backend stub, never imported by `deployer` itself. It must not print.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

Array = npt.NDArray[Any]

# Identifies this file in a backend dir (deployer.server.backends.DEPLOYER_MARKER): how deployer tells
# its own backend from a native one when it reports what served a model. Keep the value.
DEPLOYER_BACKEND = "deployer-cpu-onnxruntime"

# Triton config type -> ONNX Runtime type string (as `InferenceSession.get_inputs()[i].type` reports it).
_TRITON_TO_ORT = {
    "TYPE_BOOL": "tensor(bool)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_UINT16": "tensor(uint16)",
    "TYPE_UINT32": "tensor(uint32)",
    "TYPE_UINT64": "tensor(uint64)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_INT16": "tensor(int16)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP64": "tensor(double)",
    "TYPE_STRING": "tensor(string)",
}


def _param(config: dict[str, Any], key: str) -> str | None:
    entry = config.get("parameters", {}).get(key)
    if isinstance(entry, dict):
        value = entry.get("string_value")
        return str(value) if value not in (None, "") else None
    return None


def _int_param(config: dict[str, Any], key: str) -> int | None:
    value = _param(config, key)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise pb_utils.TritonModelException(f"parameter {key!r} must be an integer, got {value!r}") from None


def _session_options(config: dict[str, Any]) -> Any:
    """Honour the same knobs as Triton's native onnxruntime backend where they mean something on CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    intra = _int_param(config, "intra_op_thread_count")
    if intra is None:
        # Triton runs `count` instances side by side on the same cores; ONNX Runtime's default (one
        # spinning thread per core in every instance) oversubscribes them. Split the cores instead
        # (measured: +55% batched, +75% unbatched throughput on 2 cores; benchmarks/README.md).
        import os

        instances = sum(int(g.get("count", 1) or 1) for g in config.get("instance_group", [])) or 1
        intra = max(1, (os.cpu_count() or 1) // instances)
    opts.intra_op_num_threads = intra
    if _param(config, "allow_spinning") != "1":
        # Busy-waiting workers burn the CPU the server, the other instances and the clients need.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    inter = _int_param(config, "inter_op_thread_count")
    if inter is not None:
        opts.inter_op_num_threads = inter
    if _int_param(config, "execution_mode") == 1:
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    for key, attr in (
        ("enable_mem_arena", "enable_cpu_mem_arena"),
        ("enable_mem_pattern", "enable_mem_pattern"),
    ):
        flag = _int_param(config, key)
        if flag is not None:
            setattr(opts, attr, bool(flag))
    # Native backend mapping: -1 basic, 1 extended, anything else (default 0) all.
    level = int(config.get("optimization", {}).get("graph", {}).get("level", 0) or 0)
    opts.graph_optimization_level = {
        -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }.get(level, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return opts


def _dims(entry: dict[str, Any]) -> list[int]:
    reshape = entry.get("reshape")
    if isinstance(reshape, dict) and "shape" in reshape:
        return [int(d) for d in reshape["shape"]]
    return [int(d) for d in entry.get("dims", [])]


class TritonPythonModel:
    """One model instance: one ONNX Runtime session."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        self.config: dict[str, Any] = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.max_batch_size = int(self.config.get("max_batch_size", 0))
        filename = self.config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        if not path.is_file():
            raise pb_utils.TritonModelException(
                f"model '{self.name}': ONNX file not found: {path} "
                "(set default_model_filename or put model.onnx in the version directory)"
            )
        self.session = ort.InferenceSession(
            str(path), sess_options=_session_options(self.config), providers=["CPUExecutionProvider"]
        )
        self.inputs = {i["name"]: i for i in self.config.get("input", [])}
        self.outputs = {o["name"]: o for o in self.config.get("output", [])}
        self._check_signature()
        self.output_names = list(self.outputs)
        self._warned_unbatchable = False
        pb_utils.Logger.log_info(
            f"deployer onnxruntime (Python, CPU) backend: model '{self.name}' from {path}, "
            f"max_batch_size={self.max_batch_size}, ORT {ort.__version__}"
        )

    def _check_signature(self) -> None:
        """Fail the load with a clear reason when config.pbtxt and the ONNX graph disagree."""
        ort_in = {i.name: i for i in self.session.get_inputs()}
        ort_out = {o.name: o for o in self.session.get_outputs()}
        problems: list[str] = []
        for kind, declared, actual in (("input", self.inputs, ort_in), ("output", self.outputs, ort_out)):
            for name, entry in declared.items():
                if name not in actual:
                    problems.append(f"{kind} '{name}' is not in the ONNX model (it has {sorted(actual)})")
                    continue
                dtype = entry.get("data_type", "")
                if dtype not in _TRITON_TO_ORT:
                    problems.append(f"{kind} '{name}': data_type {dtype} is not supported by this CPU backend")
                elif _TRITON_TO_ORT[dtype] != actual[name].type:
                    problems.append(f"{kind} '{name}': config says {dtype} but the ONNX model has {actual[name].type}")
        missing = [n for n, i in ort_in.items() if n not in self.inputs]
        if missing:
            problems.append(f"ONNX inputs {missing} are not declared in config.pbtxt")
        if problems:
            raise pb_utils.TritonModelException(f"model '{self.name}': " + "; ".join(problems))

    # -- execution -------------------------------------------------------------------------------

    def _feeds(self, request: Any) -> dict[str, Array]:
        feeds: dict[str, Array] = {}
        for name, entry in self.inputs.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                if entry.get("optional", False):
                    continue
                raise ValueError(f"input '{name}' is missing from the request")
            array = tensor.as_numpy()
            if array.dtype == np.object_:
                # ONNX Runtime wants str for tensor(string); Triton hands BYTES elements as bytes.
                array = np.vectorize(
                    lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v), otypes=[np.object_]
                )(array)
            if "reshape" in entry:
                lead = [array.shape[0]] if self.max_batch_size > 0 else []
                array = array.reshape(lead + _dims(entry))
            feeds[name] = array
        return feeds

    def _responses(self, results: list[Array], sizes: list[int]) -> list[Any]:
        per_request: list[list[Any]] = [[] for _ in sizes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]  # plain slices: np.split is slow here
        for name, result in zip(self.output_names, results, strict=True):
            entry = self.outputs[name]
            array = np.asarray(result)
            if array.dtype.kind in "US":
                array = array.astype(np.object_)
            parts = [array] if len(sizes) == 1 else [array[a : a + n] for a, n in zip(starts, sizes, strict=True)]
            for i, part in enumerate(parts):
                if "reshape" in entry:
                    lead = [part.shape[0]] if self.max_batch_size > 0 else []
                    part = part.reshape(lead + [int(d) for d in entry.get("dims", [])])
                per_request[i].append(pb_utils.Tensor(name, part))
        return [pb_utils.InferenceResponse(output_tensors=tensors) for tensors in per_request]

    def _run(self, feeds: dict[str, Array]) -> list[Array]:
        return list(self.session.run(self.output_names, feeds))

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run every request; with batching, concatenate compatible requests into one ORT call."""
        responses: list[Any] = [None] * len(requests)
        batch: list[tuple[int, dict[str, Array]]] = []
        for i, request in enumerate(requests):
            try:
                batch.append((i, self._feeds(request)))
            except Exception as exc:  # a bad request must not fail its neighbours in the batch
                responses[i] = self._error(exc)

        if self.max_batch_size > 0 and len(batch) > 1 and self._concatenable([f for _, f in batch]):
            sizes = [next(iter(f.values())).shape[0] if f else 0 for _, f in batch]
            try:
                merged = {n: np.concatenate([f[n] for _, f in batch], axis=0) for n in batch[0][1]}
                results = self._run(merged)
                if not all(r.shape[:1] == (sum(sizes),) for r in results):
                    raise ValueError(f"output dim 0 is not the batch size {sum(sizes)}")
                for (i, _), response in zip(batch, self._responses(results, sizes), strict=True):
                    responses[i] = response
                batch = []
            except Exception as exc:
                # e.g. a model whose batch dim is fixed: run request by request below, and say so once
                if not self._warned_unbatchable:
                    self._warned_unbatchable = True
                    pb_utils.Logger.log_warn(
                        f"model '{self.name}': {len(batch)} requests could not run as one batch "
                        f"({type(exc).__name__}: {exc}); running them one by one (slower)"
                    )
        for i, feeds in batch:
            try:
                results = self._run(feeds)
                size = next(iter(feeds.values())).shape[0] if feeds and self.max_batch_size > 0 else 0
                responses[i] = self._responses(results, [size])[0]
            except Exception as exc:
                responses[i] = self._error(exc)
        return responses

    @staticmethod
    def _concatenable(all_feeds: list[dict[str, Array]]) -> bool:
        """Same input names, dtypes and non-batch dims, and one batch size per request."""
        first = all_feeds[0]
        if not first:
            return False
        for feeds in all_feeds:
            if feeds.keys() != first.keys():
                return False
            if len({a.shape[0] if a.ndim else -1 for a in feeds.values()}) != 1:
                return False
            for name, array in feeds.items():
                ref = first[name]
                if array.ndim == 0 or array.shape[1:] != ref.shape[1:] or array.dtype != ref.dtype:
                    return False
        return True

    def _error(self, exc: Exception) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[],
            error=pb_utils.TritonError(f"model '{self.name}' (onnxruntime CPU): {type(exc).__name__}: {exc}"),
        )

    def finalize(self) -> None:
        self.session = None
