"""`run_smoke`: prove a running deployment, model by model, and return a report (never prints)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy.typing as npt

from deployer.errors import DeployerError, MissingDependency
from deployer.onnx.runtime import OrtModel
from deployer.server.backends import served_by
from deployer.server.base import ServerState
from deployer.smoke.checks import (
    check_config,
    check_metadata,
    check_model_ready,
    check_outputs,
    check_server,
    guarded,
    infer,
)
from deployer.smoke.inputs import InferCase, load_golden, make_inputs, plan_cases, shape_range
from deployer.smoke.load.loadchecks import check_batching, check_metrics, check_perf, scrape_metrics
from deployer.smoke.report import CheckResult, ModelReport, SmokeReport
from deployer.smoke.targets import SmokeModel, SmokeOptions

__all__ = ["run_smoke"]

LOGGER = logging.getLogger(__name__)
Array = npt.NDArray[Any]


def _clients(state: ServerState, options: SmokeOptions) -> tuple[Any, Any]:
    try:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient
    except ImportError as exc:  # pragma: no cover - a core dependency, but say what to do
        raise MissingDependency(
            f"tritonclient is not importable: {exc}", hint="pip install 'tritonclient[grpc,http]'"
        ) from exc
    http = httpclient.InferenceServerClient(
        state.http_url, connection_timeout=options.timeout_s, network_timeout=options.timeout_s
    )
    grpc = grpcclient.InferenceServerClient(state.grpc_url)
    return http, grpc


def run_smoke(
    state: ServerState,
    models: Sequence[SmokeModel],
    options: SmokeOptions | None = None,
    *,
    progress: Callable[[str, CheckResult], None] | None = None,
) -> SmokeReport:
    """Run every smoke check against the server in `state` and return the report.

    Args:
        state: the running server (`Runtime.up()` result or loaded from server.json).
        models: what to check; see `SmokeModel`.
        options: how hard to test; defaults to `SmokeOptions()`.
        progress: called with (suite, result) after each check, e.g. to show live progress.

    Returns:
        A `SmokeReport`; `report.passed` / `report.exit_code` give the verdict. Check failures are data,
        not exceptions (use `raise_for_failures`). Raises only for bad inputs (UserError, e.g. an
        unreadable golden file) or a missing dependency.
    """
    options = options or SmokeOptions()
    started, t0 = time.time(), time.perf_counter()
    http, grpc = _clients(state, options)
    try:
        server_checks = check_server(http)
        for c in server_checks:
            _emit(progress, "server", c)
        reachable = server_checks[0].status == "pass"
        reports = []
        for model in models:
            LOGGER.info("smoke: checking model %s", model.name)
            emit = functools.partial(_emit, progress, model.name)
            checks, served_config = _run_model(http, grpc, state, model, options, reachable, emit)
            # what ran it: the served config's backend, the implementation the runtime found for it
            reports.append(ModelReport(model.name, tuple(checks), served_by(served_config, dict(state.backends))))
    finally:
        http.close()
        grpc.close()
    return SmokeReport(
        server=ModelReport("server", tuple(server_checks)),
        models=tuple(reports),
        target=f"{state.runtime} http={state.http_url} grpc={state.grpc_url}",
        started_at=started,
        duration_s=time.perf_counter() - t0,
    )


def _emit(progress: Callable[[str, CheckResult], None] | None, suite: str, c: CheckResult) -> None:
    LOGGER.info("smoke: %s %s %s %s", suite, c.name, c.status.upper(), c.message)
    if progress is not None:
        progress(suite, c)


def _run_model(
    http: Any,
    grpc: Any,
    state: ServerState,
    model: SmokeModel,
    options: SmokeOptions,
    reachable: bool,
    emit: Callable[[CheckResult], None],
) -> tuple[list[CheckResult], Mapping[str, Any]]:
    """The model's checks, and its served config ({} when the model is not ready or it was not served)."""
    out: list[CheckResult] = []

    def add(c: CheckResult) -> CheckResult:
        out.append(c)
        emit(c)
        return c

    if not reachable:
        add(CheckResult("ready", "fail", f"server at {state.http_url} is not reachable; nothing was checked"))
        return out, {}
    if add(check_model_ready(http, model)).status == "fail":
        return out, {}  # everything else would only repeat "not ready"
    metrics_before = (
        scrape_metrics(state.metrics_url, model.name, options.timeout_s) if options.wants("metrics") else ""
    )
    served_config: Mapping[str, Any] = {}
    if options.wants("config"):
        result, served_config = check_config(http, model)
        add(result)
    else:  # still needed: the report names the backend that served the model
        served_config = _served_config(http, model)
    if options.wants("metadata"):
        add(check_metadata(http, model))

    cases = plan_cases(model)
    feeds = [make_inputs(model, case, options.seed, i) for i, case in enumerate(cases)]
    if options.wants("infer"):
        for c in _infer_checks(http, grpc, model, options, cases, feeds):
            add(c)
    if options.wants("golden") and model.golden is not None:
        for c in _golden_checks(http, grpc, model, options):
            add(c)

    batch1 = _batch1_feeds(model, options)
    if options.wants("batching"):
        add(
            guarded(
                "batching",
                lambda: check_batching(http, state.grpc_url, model, batch1, options, served_config),
            )
        )
    if options.wants("perf") and options.perf:
        batch = min(options.batch_size, model.max_batch_size) if model.max_batch_size > 0 else 0
        load_feeds = _batch1_feeds(model, options, batch=batch)
        add(guarded("perf", lambda: check_perf(state, model, load_feeds, options, batch)))
    if options.wants("metrics"):
        sent = any(c.name.startswith(("infer[", "golden[", "batching", "perf")) and c.status != "skip" for c in out)
        if sent:
            completed = _completed_requests(out)
            add(
                guarded(
                    "metrics",
                    lambda: check_metrics(state.metrics_url, model, options.timeout_s, metrics_before, completed),
                )
            )
        else:
            add(CheckResult("metrics", "skip", "no inference requests were sent by the selected checks"))
    return out, served_config


def _served_config(http: Any, model: SmokeModel) -> Mapping[str, Any]:
    """The served config, or {} when the server does not give it (the report then names no backend)."""
    served: dict[str, Any] = {}

    def fetch() -> CheckResult:
        served.update(http.get_model_config(model.name, model.version))
        return CheckResult("config", "pass")

    guarded("config", fetch)  # an error is only logged: no check was asked for
    return served


def _completed_requests(checks: Sequence[CheckResult]) -> int:
    """Requests the checks know the server answered successfully: what the metrics must count at least."""
    n = 0
    for c in checks:
        if c.name.startswith(("infer[", "golden[")) and c.status == "pass":
            n += 1
        elif c.name == "batching" and c.status == "pass":
            n += int(c.numbers.get("inference_count", 0))  # N batch-1 requests of the last burst
        elif c.name == "perf":
            n += int(c.numbers.get("requests", 0))  # measured successes (warmup not counted)
    return n


def _lead(model: SmokeModel, arr: Array) -> tuple[int, ...]:
    return tuple(arr.shape[:1]) if model.max_batch_size > 0 else ()


def _as_model_sees(model: SmokeModel, feeds: Mapping[str, Array]) -> dict[str, Array]:
    """Apply each input's config `reshape`, as Triton does before the model runs."""
    out = dict(feeds)
    for t in model.inputs:
        if t.reshape is not None and t.name in out:
            arr = out[t.name]
            out[t.name] = arr.reshape(_lead(model, arr) + t.reshape)
    return out


def _as_served(model: SmokeModel, outputs: Mapping[str, Array]) -> dict[str, Array]:
    """Reshape reference outputs that the config reshapes back to the served `dims`."""
    out = dict(outputs)
    for o in model.outputs:
        arr = out.get(o.name)
        if o.reshape is not None and arr is not None:
            lead = _lead(model, arr)
            if o.dims.count(-1) <= 1:
                out[o.name] = arr.reshape(lead + o.dims)
    return out


def _reference(model: SmokeModel) -> tuple[OrtModel | None, CheckResult | None]:
    """The ONNX Runtime reference, or a result explaining why there is none (None = by choice)."""
    if model.onnx_path is None:
        return None, None
    try:
        ref = OrtModel(model.onnx_path)
    except DeployerError as exc:
        return None, CheckResult("reference", "fail", exc.message)
    reason = ref.unsupported_reason()
    if reason:
        return None, CheckResult("reference", "skip", reason)
    return ref, None


def _infer_checks(
    http: Any,
    grpc: Any,
    model: SmokeModel,
    options: SmokeOptions,
    cases: Sequence[InferCase],
    feeds: Sequence[Mapping[str, Array]],
) -> list[CheckResult]:
    results: list[CheckResult] = []
    ref, problem = _reference(model)
    if problem is not None:
        results.append(problem)
    clients = {"http": http, "grpc": grpc}
    for case, case_feeds in zip(cases, feeds, strict=True):
        expected: Mapping[str, Array] | None = None
        if ref is not None:
            try:
                raw = ref.run(_as_model_sees(model, case_feeds), [o.name for o in model.outputs])
                expected = _as_served(model, raw)
            except DeployerError as exc:
                results.append(CheckResult(f"reference[{case.label}]", "fail", exc.message))
        for protocol in options.protocols:
            name = f"infer[{protocol},{case.label}]"

            def one(
                protocol: Any = protocol,
                name: str = name,
                case: InferCase = case,
                case_feeds: Mapping[str, Array] = case_feeds,
                expected: Mapping[str, Array] | None = expected,
            ) -> CheckResult:
                served = infer(clients[protocol], protocol, model, case_feeds, options.timeout_s)
                result = check_outputs(name, model, case.batch, served, expected)
                shapes = ", ".join(f"{k}{list(v)}" for k, v in case.shapes.items())
                return CheckResult(
                    result.name, result.status, f"{result.message} [{shapes}]", result.numbers, result.details
                )

            results.append(guarded(name, one))
    return results


def _golden_checks(http: Any, grpc: Any, model: SmokeModel, options: SmokeOptions) -> list[CheckResult]:
    assert model.golden is not None
    inputs, outputs = load_golden(model.golden, model)
    dtypes = {t.name: t.dtype for t in model.inputs}
    from deployer.dtypes import numpy_dtype

    feeds = {
        n: (a if dtypes[n] == "STRING" else a.astype(numpy_dtype(dtypes[n]), copy=False))
        for n, a in inputs.items()
        if n in dtypes
    }
    batch = int(next(iter(feeds.values())).shape[0]) if model.max_batch_size > 0 and feeds else 0
    clients = {"http": http, "grpc": grpc}
    results = []
    for protocol in options.protocols:
        name = f"golden[{protocol}]"

        def one(protocol: Any = protocol, name: str = name) -> CheckResult:
            served = infer(clients[protocol], protocol, model, feeds, options.timeout_s)
            return check_outputs(name, model, batch, served, outputs, what="golden outputs", require_all=False)

        results.append(guarded(name, one))
    return results


def _batch1_feeds(model: SmokeModel, options: SmokeOptions, batch: int = 1) -> dict[str, Array]:
    """Inputs at the opt shape with the batch dim set to `batch` (0 = the model does not batch)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for t in model.inputs:
        opt = shape_range(model, t).opt
        shapes[t.name] = (batch, *opt[1:]) if model.max_batch_size > 0 else opt
    case = InferCase("load", shapes, batch if model.max_batch_size > 0 else 0)
    return make_inputs(model, case, options.seed, 1000)
