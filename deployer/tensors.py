"""Shared value types of the pipeline's tensors: one shape range from spec to engines to smoke."""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """min/opt/max full shapes of one input (batch dim first when the model batches): the TensorRT
    optimization profile, the shapes `init` probed, and the shapes smoke tests at."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise ValueError(f"shape range ranks differ: min {self.min}, opt {self.opt}, max {self.max}")

    @property
    def ordered(self) -> bool:
        """0 <= min <= opt <= max in every dim."""
        return all(0 <= lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True))

    def at(self, which: str) -> Shape:
        """The `min`, `opt` or `max` shape by name."""
        if which not in ("min", "opt", "max"):
            raise KeyError(which)
        shape: Shape = getattr(self, which)
        return shape
