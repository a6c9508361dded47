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
        # Not validated here: the spec stage reports a bad range located in the YAML (rules), smoke
        # refuses one it is handed; both read `same_rank` and `ordered`.
        for name in ("min", "opt", "max"):
            object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))

    @property
    def same_rank(self) -> bool:
        """min, opt and max have the same number of dims."""
        return len(self.min) == len(self.opt) == len(self.max)

    @property
    def ordered(self) -> bool:
        """Same rank and 0 <= min <= opt <= max in every dim."""
        return self.same_rank and all(
            0 <= lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max, strict=True))

    def at(self, which: str) -> Shape:
        """The `min`, `opt` or `max` shape by name."""
        if which not in ("min", "opt", "max"):
            raise KeyError(which)
        shape: Shape = getattr(self, which)
        return shape
