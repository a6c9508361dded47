"""FP32 vs FP16 vs INT8 accuracy of a real classifier, measured the way `deployer build` measures it.

Model: PP-OCR's text-direction classifier (ch_ppocr_mobile_v2.0_cls, from the rapidocr-onnxruntime
wheel, cached by tests/models.py): input [N, 3, 48, 192], output [N, 2] = (upright, rotated 180 deg).
Data: text lines rendered with Pillow (DejaVu / Pillow's default font, random words), half of them
rotated by 180 degrees, preprocessed like rapidocr (resize to height 48, normalize to [-1, 1], pad to
width 192). The calibration set (--calib) and the evaluation set (--eval) use different words, fonts
sizes and seeds: disjoint. Labels are known by construction.

FP16 = deployer.engines.fp16_onnx (onnxconverter-common, I/O kept fp32); INT8 = deployer.engines.
int8_qdq_onnx (ONNX Runtime quantize_static, Q/DQ, symmetric, per-channel, float bias) calibrated on
the calibration set; all three run on ONNX Runtime CPU (deployer.engines.accuracy.evaluate). With the
`trt-rtx` extra it also builds each ONNX with the real TensorRT-RTX through build_engine and reports
the build time. Writes the table to benchmarks/precision.md (--out) and prints it.

    python benchmarks/bench_precision.py [--calib 300] [--eval 400] [--out benchmarks/precision.md]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

_WORD_TEXT = (
    "deploy triton engine tensor model batch server plan profile shape quantize calibrate accuracy "
    "precision latency throughput kernel layer output input float half integer scale zero point "
    "network build parse verify cache manifest version release image container onnx runtime graph "
    "node weight bias activation softmax argmax label class sample rotate render pillow text line"
)
WORDS = tuple(_WORD_TEXT.split())
FONTS = [f for f in (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
                     Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"),
                     Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")) if f.is_file()]


def _font(size: int, rng: np.random.Generator) -> Any:
    from PIL import ImageFont

    if FONTS:
        return ImageFont.truetype(str(FONTS[int(rng.integers(len(FONTS)))]), size)
    return ImageFont.load_default(size)  # Pillow >= 10.1 bundles a scalable font


def render(n: int, seed: int, sizes: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """n preprocessed text-line images [n, 3, 48, 192] float32 and labels [n] (1 = rotated 180 deg)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
        font = _font(int(rng.integers(*sizes)), rng)
        left, top, right, bottom = font.getbbox(text)
        w, h = right - left + 16, bottom - top + 12
        fg, bg = int(rng.integers(0, 80)), int(rng.integers(180, 256))
        img = Image.new("RGB", (w, h), (bg, bg, bg))
        ImageDraw.Draw(img).text((8 - left, 6 - top), text, font=font, fill=(fg, fg, fg))
        label = i % 2
        if label:
            img = img.rotate(180)
        ratio = w / h
        rw = min(192, math.ceil(48 * ratio))
        arr = np.asarray(img.resize((rw, 48), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
        arr = (arr - 0.5) / 0.5
        padded = np.zeros((3, 48, 192), np.float32)
        padded[:, :, :rw] = arr
        images.append(padded)
        labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def _build_seconds(onnx_path: Path, cache: Path, name: str) -> str:
    try:
        trt = importlib.import_module("tensorrt_rtx_bindings")
    except ImportError:
        return "n/a (no trt-rtx extra)"
    from deployer.engines import BuildRequest, InputShapes, Profile, build_engine

    prof = Profile((InputShapes("x", (1, 3, 48, 192), (8, 3, 48, 192), (16, 3, 48, 192)),))
    req = BuildRequest(name, onnx_path, (prof,), 16, cache / name / "model.plan", cache, strongly_typed=True)
    started = time.monotonic()
    info = build_engine(req, trt_module=trt, use_cache=False).info
    return f"{time.monotonic() - started:.2f} s ({info.engine_path.stat().st_size / 1e6:.1f} MB plan)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calib", type=int, default=300, help="calibration samples (100-500)")
    ap.add_argument("--eval", type=int, default=400, help="evaluation samples (disjoint from calibration)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "precision.md")
    args = ap.parse_args()

    from models import third_party_model

    from deployer.engines import CalibrationSettings, fp16_onnx, int8_qdq_onnx
    from deployer.engines.accuracy import evaluate

    source = third_party_model("ppocr_cls")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t = time.monotonic()
        calib_x, _ = render(args.calib, seed=1, sizes=(22, 40))
        eval_x, eval_y = render(args.eval, seed=2, sizes=(18, 44))
        np.savez(work / "calib.npz", x=calib_x)
        render_s = time.monotonic() - t
        t = time.monotonic()
        half = fp16_onnx(source, work)
        fp16_s = time.monotonic() - t
        t = time.monotonic()
        qdq, used = int8_qdq_onnx(source, work, CalibrationSettings((work / "calib.npz",), batch_size=10))
        int8_s = time.monotonic() - t
        feeds = {"x": eval_x}
        rows = []
        for label, path, prep in (("FP32", source, "-"), ("FP16", half, f"{fp16_s:.2f} s convert"),
                                  ("INT8 Q/DQ", qdq, f"{int8_s:.2f} s quantize ({used} samples)")):
            r = evaluate(source, path, feeds, precision=label, data="rendered", labels=eval_y, chunk=8)
            build = _build_seconds(Path(path), work / "trt", label.split()[0].lower())
            rows.append((label, r, prep, build, Path(path).stat().st_size / 1e6))
    fp32_acc = rows[0][1].accuracy_fp32
    lines = [
        "# Precision vs accuracy: PP-OCR text-direction classifier (real model, real data by construction)",
        "",
        f"Generated by `python benchmarks/bench_precision.py --calib {args.calib} --eval {args.eval}`: "
        f"{args.calib} calibration and {args.eval} evaluation text-line images rendered with Pillow "
        f"({render_s:.1f} s), half rotated 180 deg; ONNX Runtime CPU. Agreement = same top-1 class as FP32.",
        "",
        "| precision | accuracy | top-1 agreement with FP32 | max abs error | ONNX size | prepare | "
        "TensorRT-RTX build (CPU, AOT) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r, prep, build, size in rows:
        lines.append(f"| {label} | {r.accuracy:.4f} | {r.top1_agreement:.4f} | {r.max_abs_error:.4g} | "
                     f"{size:.2f} MB | {prep} | {build} |")
    lines += ["", f"FP32 accuracy {fp32_acc:.4f} on {rows[0][1].samples} samples."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
