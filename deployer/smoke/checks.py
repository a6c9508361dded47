"""Individual smoke checks. Each returns a `CheckResult`; talking to the server is the only side effect.

Server errors (connection refused, HTTP 4xx/5xx, gRPC status) become failed checks with the server's
message, never exceptions: one broken model must not hide the results of the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from deployer.config.diff import diff_config, model_metadata_diffs
from deployer.dtypes import wire_dtype
from deployer.errors import DeployerError
from deployer.smoke.compare import compare_arrays, default_tolerance
from deployer.smoke.load.loadgen import to_wire_array
from deployer.smoke.report import CheckResult
from deployer.smoke.targets import Protocol, SmokeModel

__all__ = [
    "check_config",
    "check_metadata",
    "check_model_ready",
    "check_outputs",
    "check_server",
    "guarded",
    "infer",
]

LOGGER = logging.getLogger(__name__)
Array = npt.NDArray[Any]


def _server_errors() -> tuple[type[BaseException], ...]:
    import grpc  # type: ignore[import-untyped,unused-ignore]
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, grpc.RpcError, OSError, DeployerError, TimeoutError)


def guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    """Run `fn`, timing it; a server/client error becomes a failed `name` check quoting the error."""
    t0 = time.perf_counter()
    try:
        result = fn()
    except _server_errors() as exc:
        text = exc.render() if isinstance(exc, DeployerError) else str(exc) or type(exc).__name__
        LOGGER.debug("check %s raised", name, exc_info=True)
        result = CheckResult(name, "fail", f"error: {text}")
    return CheckResult(
        result.name, result.status, result.message, result.numbers, result.details, time.perf_counter() - t0
    )


def check_server(http: Any) -> list[CheckResult]:
    """`live` and `ready` (strict readiness: all loaded models READY)."""

    def is_live() -> CheckResult:
        if http.is_server_live():
            return CheckResult("live", "pass", "server is live")
        return CheckResult("live", "fail", "GET v2/health/live did not return 200")

    live = guarded("live", is_live)
    if live.status == "fail":
        return [live, CheckResult("ready", "skip", "server is not live")]

    def ready() -> CheckResult:
        if http.is_server_ready():
            return CheckResult("ready", "pass", "server is ready")
        return CheckResult(
            "ready",
            "fail",
            "GET v2/health/ready did not return 200 (a model is not READY)",
            details=tuple(_index_lines(http)),
        )

    return [live, guarded("ready", ready)]


def _index_lines(http: Any) -> list[str]:
    try:
        index = http.get_model_repository_index()
    except _server_errors():
        return []
    return [
        f"{m.get('name')} v{m.get('version', '?')}: {m.get('state', '?')} {m.get('reason', '')}".rstrip() for m in index
    ]


def check_model_ready(http: Any, model: SmokeModel) -> CheckResult:
    """The model is READY; otherwise quote the repository index state and reason."""

    def run() -> CheckResult:
        if http.is_model_ready(model.name, model.version):
            return CheckResult("ready", "pass", "model is ready")
        mine = [line for line in _index_lines(http) if line.startswith(f"{model.name} ")]
        reason = "; ".join(mine) if mine else "not in the repository index (not loaded?)"
        return CheckResult("ready", "fail", f"model {model.name!r} is not READY: {reason}")

    return guarded("ready", run)


def check_config(http: Any, model: SmokeModel) -> tuple[CheckResult, Mapping[str, Any]]:
    """Served `/config` vs the rendered config, field by field; also returns the served config."""
    served: dict[str, Any] = {}

    def run() -> CheckResult:
        served.update(http.get_model_config(model.name, model.version))
        if not model.expected_config:
            return CheckResult("config", "skip", "no expected config given")
        diffs = diff_config(model.expected_config, served)
        n = len(model.expected_config)
        if not diffs:
            return CheckResult(
                "config", "pass", f"served config agrees ({n} top-level fields compared)", {"differences": 0}
            )
        return CheckResult(
            "config",
            "fail",
            f"{len(diffs)} field{'s' if len(diffs) != 1 else ''} differ: {diffs[0].format()}",
            {"differences": len(diffs)},
            tuple(d.format() for d in diffs),
        )

    return guarded("config", run), served


def full_shape(model: SmokeModel, dims: tuple[int, ...]) -> tuple[int, ...]:
    """Shape as metadata reports it: `[-1] + dims` for batching models, else `dims`."""
    return (-1, *dims) if model.max_batch_size > 0 else tuple(dims)


def check_metadata(http: Any, model: SmokeModel) -> CheckResult:
    """Served metadata: input/output names, wire datatypes and full shapes (with the -1 batch dim)."""

    def run() -> CheckResult:
        meta = http.get_model_metadata(model.name, model.version)
        exp_in = {t.name: (wire_dtype(t.dtype), full_shape(model, t.dims)) for t in model.inputs}
        exp_out = {o.name: (wire_dtype(o.dtype), full_shape(model, o.dims)) for o in model.outputs}
        problems = model_metadata_diffs(exp_in, exp_out, meta)
        if problems:
            return CheckResult(
                "metadata",
                "fail",
                f"{len(problems)} mismatch(es): {problems[0]}",
                {"differences": len(problems)},
                tuple(problems),
            )
        return CheckResult(
            "metadata",
            "pass",
            f"{_n(len(exp_in), 'input')}, {_n(len(exp_out), 'output')}: names, datatypes, shapes agree",
            {"differences": 0},
        )

    return guarded("metadata", run)


def infer(
    client: Any, protocol: Protocol, model: SmokeModel, feeds: Mapping[str, Array], timeout_s: float
) -> dict[str, tuple[str, Array]]:
    """One request over `protocol`; returns `{output: (wire datatype, array)}` for every declared output."""
    if protocol == "http":
        import tritonclient.http as mod

        dtypes = {t.name: t.dtype for t in model.inputs}
        inputs = []
        for name, arr in feeds.items():
            ii = mod.InferInput(name, list(arr.shape), wire_dtype(dtypes[name]))
            ii.set_data_from_numpy(to_wire_array(arr, dtypes[name]), binary_data=True)
            inputs.append(ii)
        outs = [mod.InferRequestedOutput(o.name, binary_data=True) for o in model.outputs]
        result = client.infer(
            model.name, inputs, model_version=model.version, outputs=outs, timeout=int(timeout_s * 1e6)
        )
        return {
            o.name: (str((result.get_output(o.name) or {}).get("datatype", "")), result.as_numpy(o.name))
            for o in model.outputs
        }
    import tritonclient.grpc as gmod

    dtypes = {t.name: t.dtype for t in model.inputs}
    ginputs = []
    for name, arr in feeds.items():
        gi = gmod.InferInput(name, list(arr.shape), wire_dtype(dtypes[name]))
        gi.set_data_from_numpy(to_wire_array(arr, dtypes[name]))
        ginputs.append(gi)
    gouts = [gmod.InferRequestedOutput(o.name) for o in model.outputs]
    gres = client.infer(model.name, ginputs, model_version=model.version, outputs=gouts, client_timeout=timeout_s)
    out: dict[str, tuple[str, Array]] = {}
    for o in model.outputs:
        meta = gres.get_output(o.name)
        out[o.name] = (meta.datatype if meta is not None else "", gres.as_numpy(o.name))
    return out


def check_outputs(
    name: str,
    model: SmokeModel,
    batch: int,
    served: Mapping[str, tuple[str, Array | None]],
    expected: Mapping[str, Array] | None,
    *,
    what: str = "reference",
    require_all: bool = True,
) -> CheckResult:
    """Served outputs: present, right datatype and shape, and within tolerance of `expected`.

    `expected` None = no reference (presence/dtype/shape only). With `require_all`, an output the
    reference lacks is a failure (the reference is not the deployed model); golden files may cover
    a subset. Numbers: `<output>.max_abs/.max_rel`.
    """
    problems: list[str] = []
    numbers: dict[str, float] = {}
    compared = 0
    for o in model.outputs:
        dt, arr = served.get(o.name, ("", None))
        if arr is None:
            problems.append(f"output {o.name!r} missing from the response")
            continue
        if dt and dt != wire_dtype(o.dtype):
            problems.append(f"output {o.name!r} datatype {dt}, expected {wire_dtype(o.dtype)}")
        want = full_shape(model, o.dims)
        shape = tuple(arr.shape)
        if (
            len(shape) != len(want)
            or any(w >= 0 and w != s for w, s in zip(want, shape, strict=False))
            or (batch > 0 and shape[:1] != (batch,))
        ):
            problems.append(f"output {o.name!r} shape {list(shape)} does not fit {list(want)} at batch {batch}")
        if expected is None:
            continue
        if o.name not in expected:
            if require_all:
                problems.append(f"output {o.name!r} is not produced by the {what} (it has {sorted(expected)})")
            continue
        atol, rtol = default_tolerance(o.dtype, model.precision)
        atol = o.atol if o.atol is not None else atol
        rtol = o.rtol if o.rtol is not None else rtol
        cmp = compare_arrays(_as_float_if_bf16(arr, o.dtype), expected[o.name], atol, rtol)
        compared += 1
        numbers[f"{o.name}.max_abs"] = cmp.max_abs
        numbers[f"{o.name}.max_rel"] = cmp.max_rel
        if not cmp.ok:
            problems.append(
                f"output {o.name!r} vs {what}: {cmp.message} (max abs {cmp.max_abs:.3g}, max rel {cmp.max_rel:.3g})"
            )
    if problems:
        return CheckResult(name, "fail", problems[0], numbers, tuple(problems))
    if expected is None:
        msg = f"{_n(len(model.outputs), 'output')} present with the right dtype/shape (no numeric {what})"
    else:
        msg = f"{compared}/{len(model.outputs)} outputs match the {what}"
    return CheckResult(name, "pass", msg, numbers)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _as_float_if_bf16(arr: Array, dtype: str) -> Array:
    # ml_dtypes.bfloat16 arrays compare fine once widened; keep everything else as served.
    return np.asarray(arr, dtype=np.float32) if dtype == "BF16" else arr
