"""The spec schema's building blocks: strict scalar types and the strict base model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, model_validator
from ruamel.yaml.scalarbool import ScalarBoolean

# Strict scalars: lax pydantic turns `true`, "16" and 16.0 into max_batch_size 1/16/16 and "yes" into a
# bool without a word. A float field still takes an int (strict float accepts int). No field has a use
# for .inf/.nan: an infinite timeout hangs, a NaN passes no bound check (and proto JSON cannot carry it).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]
Bool = Annotated[bool, Strict()]

# Upper bounds of the ModelConfig proto fields the values end up in: above them Triton's own schema
# (the last-net protobuf check) would refuse the config with a message that cannot point at the key.
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
Int32 = Annotated[Int, Field(ge=-(2**31), le=INT32_MAX)]
Int64 = Annotated[Int, Field(ge=-(2**63), le=INT64_MAX)]
GpuId = Annotated[Int, Field(ge=0, le=INT32_MAX)]  # a device ordinal: -1 or any negative is no GPU
Shape = list[Int64]


def _yaml_bool(value: Any) -> Any:
    # ruamel loads an anchored boolean (`&on true`, and its aliases) as ScalarBoolean, an int subclass: a
    # strict bool would refuse what the user wrote as `true`, and a strict int or float would take it for 1.
    if isinstance(value, list):
        return [_yaml_bool(v) for v in value]
    return bool(value) if isinstance(value, ScalarBoolean) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_yaml_bools(cls, data: Any) -> Any:
        # Here rather than in the Int/Bool types: a validator inside a type hides its ge/le bounds from
        # the JSON Schema (`deployer schema`). Nested models run this themselves.
        if isinstance(data, Mapping):
            return {k: _yaml_bool(v) for k, v in data.items()}
        return data
