"""INT8 calibration from .npy/.npz files (TensorRT <= 10; calibrators were removed in TensorRT 11).

Pure part (tested here): loading arrays, batching, the max-batches limit, and a calibration cache that
is reused only when data, inputs and batching are unchanged. GPU part: a `trt.IInt8EntropyCalibrator2`
(or MinMax) subclass that copies each batch to device memory through cuda-python.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from deployer._files import atomic_write
from deployer.errors import MissingDependency, UserError

from .cache import files_digest
from .request import CalibrationSettings, Shape

if TYPE_CHECKING:
    import tensorrt as trt_stub  # type: ignore[import-untyped, unused-ignore]

    from .adapters import TrtModule

LOGGER = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype for calibration inputs.
TRT_NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


def load_calibration_arrays(
    files: Sequence[Path], input_names: Sequence[str], dtypes: Mapping[str, str] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """Read calibration samples: one array per input, files concatenated along axis 0.

    `.npz` files are keyed by input name (a single-array .npz may use any key for a single-input
    network); `.npy` files are only valid for single-input networks.

    Raises:
        UserError: missing file, missing input, unsupported suffix, inconsistent sample shapes.
    """
    parts: dict[str, list[npt.NDArray[Any]]] = {n: [] for n in input_names}
    for f in files:
        if not f.is_file():
            raise UserError(f"calibration data file not found: {f}", hint="check calibration.data_files")
        if f.suffix == ".npy":
            if len(input_names) != 1:
                raise UserError(
                    f"{f} is a .npy file but the network has {len(input_names)} inputs {list(input_names)}",
                    hint="use a .npz with one array per input name",
                )
            parts[input_names[0]].append(np.load(f, allow_pickle=False))
        elif f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as npz:
                keys = list(npz.keys())
                for name in input_names:
                    if name in keys:
                        parts[name].append(npz[name])
                    elif len(input_names) == 1 and len(keys) == 1:
                        parts[name].append(npz[keys[0]])
                    else:
                        raise UserError(
                            f"{f} has no array for input {name!r} (arrays: {keys})",
                            hint="save the .npz with np.savez(path, **{input_name: array})",
                        )
        else:
            raise UserError(f"unsupported calibration file {f}", hint="use .npy or .npz")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, arrays in parts.items():
        if not arrays:
            raise UserError(f"no calibration data for input {name!r}")
        sample_shapes = {a.shape[1:] for a in arrays}
        if len(sample_shapes) != 1 or any(a.ndim == 0 for a in arrays):
            raise UserError(f"calibration arrays for {name!r} have different sample shapes {sorted(sample_shapes)}")
        joined = np.concatenate(arrays, axis=0)
        if dtypes and name in dtypes and dtypes[name] in TRT_NUMPY:
            joined = joined.astype(TRT_NUMPY[dtypes[name]], copy=False)
        out[name] = np.ascontiguousarray(joined)
    counts = {n: a.shape[0] for n, a in out.items()}
    if len(set(counts.values())) != 1:
        raise UserError(f"calibration inputs have different sample counts {counts}")
    return out


class CalibrationBatches:
    """Fixed-size batches over the calibration arrays; the last partial batch is dropped."""

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]], batch_size: int, max_batches: int | None) -> None:
        if batch_size < 1:
            raise UserError(f"calibration batch_size must be >= 1, got {batch_size}")
        if max_batches is not None and max_batches < 1:
            raise UserError(f"calibration max_batches must be >= 1, got {max_batches}")
        self.arrays = dict(arrays)
        self.batch_size = batch_size
        samples = next(iter(self.arrays.values())).shape[0] if self.arrays else 0
        full = samples // batch_size
        if full == 0:
            raise UserError(f"calibration data has {samples} samples, fewer than one batch of {batch_size}")
        if samples % batch_size:
            LOGGER.info("dropping %d calibration samples that do not fill a batch", samples % batch_size)
        self.num_batches = min(full, max_batches) if max_batches is not None else full

    def batch_shapes(self) -> dict[str, Shape]:
        """Shape of one batch per input (must equal the calibration profile's opt shapes)."""
        return {n: (self.batch_size, *a.shape[1:]) for n, a in self.arrays.items()}

    def __iter__(self) -> Iterator[dict[str, npt.NDArray[Any]]]:
        for b in range(self.num_batches):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            yield {n: np.ascontiguousarray(a[lo:hi]) for n, a in self.arrays.items()}


def check_batch_shapes(batches: CalibrationBatches, expected: Mapping[str, Shape]) -> None:
    """TensorRT calibrates explicit-batch networks at the calibration profile's opt shapes; check first."""
    got = batches.batch_shapes()
    bad = {n: (got.get(n), s) for n, s in expected.items() if got.get(n) != tuple(s)}
    if bad:
        raise UserError(
            "calibration batches do not match the calibration profile's opt shapes: "
            + "; ".join(f"{n}: batch {g} vs opt {e}" for n, (g, e) in bad.items()),
            hint="set calibration.batch_size to profile 0's opt batch and give samples of the opt shape",
        )


class CalibrationCache:
    """A TensorRT calibration table reused only while its key (data + settings + inputs) is unchanged."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.key_path = path.with_name(path.name + ".key")

    def read(self) -> bytes | None:
        """The cached table when it was written for the same key, else None (TensorRT recalibrates)."""
        if not (self.path.is_file() and self.key_path.is_file()):
            return None
        if self.key_path.read_text(encoding="utf-8").strip() != self.key:
            LOGGER.info("calibration cache %s was made from other data/settings; recalibrating", self.path)
            return None
        LOGGER.info("reusing calibration cache %s", self.path)
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        """Store the table, then its key (so a crash between the two leaves a miss, not a wrong hit)."""
        atomic_write(self.path, data)
        atomic_write(self.key_path, self.key.encode())
        LOGGER.info("Saved calibration cache to %s", self.path)


def calibration_cache_for(
    settings: CalibrationSettings, cache_dir: Path, model_name: str, input_names: Sequence[str]
) -> tuple[CalibrationCache, str]:
    """The cache object and the data digest for `settings` (default path under `cache_dir`)."""
    data_digest = files_digest(settings.data_files)
    doc = {
        "data": data_digest,
        "inputs": sorted(input_names),
        "batch_size": settings.batch_size,
        "max_batches": settings.max_batches,
        "algorithm": settings.algorithm,
    }
    key = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    path = settings.cache_path or cache_dir / "calibration" / f"{model_name}-{key[:16]}.cache"
    return CalibrationCache(path, key), data_digest


class CudaUploader:
    """Device buffers for calibration batches via cuda-python (`cuda.bindings.runtime` or `cuda.cudart`)."""

    def __init__(self) -> None:
        self._rt = self._import_runtime()
        self._buffers: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _import_runtime() -> Any:
        for name in ("cuda.bindings.runtime", "cuda.cudart"):
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
        raise MissingDependency(
            "INT8 calibration needs cuda-python to copy batches to the GPU", hint="pip install cuda-python"
        )

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA runtime error {err}")
        return rest[0] if rest else None

    def upload(self, name: str, array: npt.NDArray[Any]) -> int:
        """Copy `array` to a (reused) device buffer for `name`; returns the device pointer."""
        nbytes = int(array.nbytes)
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._rt.cudaFree(ptr))
            ptr = int(self._check(self._rt.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpy(ptr, array.ctypes.data, nbytes, kind))
        return ptr

    def free(self) -> None:
        """Release every device buffer."""
        for ptr, _ in self._buffers.values():
            self._check(self._rt.cudaFree(ptr))
        self._buffers.clear()


def make_calibrator(
    trt: TrtModule,
    batches: CalibrationBatches,
    cache: CalibrationCache,
    uploader: Any,
    algorithm: str = "entropy2",
) -> trt_stub.IInt8Calibrator:
    """A calibrator instance for `config.int8_calibrator` (TensorRT 8.6-10.x).

    `uploader` needs `upload(name, array) -> int` (device pointer) and `free()`; `CudaUploader` on a GPU.
    """
    base: type[trt_stub.IInt8Calibrator] = (
        trt.IInt8MinMaxCalibrator if algorithm == "minmax" else trt.IInt8EntropyCalibrator2
    )
    state = {"it": iter(batches), "count": 0}

    def __init__(self: Any) -> None:
        base.__init__(self)

    def get_batch_size(self: Any) -> int:
        return batches.batch_size

    def get_batch(self: Any, names: list[str]) -> list[int]:
        try:
            batch = next(cast("Iterator[dict[str, npt.NDArray[Any]]]", state["it"]))
        except StopIteration:
            uploader.free()
            return []  # an empty list tells TensorRT that calibration data is exhausted
        state["count"] = cast(int, state["count"]) + 1
        return [int(uploader.upload(n, batch[n])) for n in names]

    def read_calibration_cache(self: Any) -> bytes | None:
        return cache.read()

    def write_calibration_cache(self: Any, data: Any) -> None:
        cache.write(bytes(memoryview(data)))

    cls = type(
        "DeployerCalibrator",
        (base,),
        {
            "__init__": __init__,
            "get_batch_size": get_batch_size,
            "get_batch": get_batch,
            "read_calibration_cache": read_calibration_cache,
            "write_calibration_cache": write_calibration_cache,
        },
    )
    return cast("trt_stub.IInt8Calibrator", cls())
