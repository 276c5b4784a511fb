"""Model specs: one YAML file per model, validated into a frozen `ModelSpec` that drives every job."""

from batchwatch.spec.model import (
    LOWER_IS_BETTER,
    ModelSpec,
    SpecError,
    get_spec,
    load_spec,
    load_specs,
    load_specs_and_errors,
    missing_module,
    parse_spec,
    quote,
    resolve,
    spec_dirs,
)

__all__ = [
    "LOWER_IS_BETTER",
    "ModelSpec",
    "SpecError",
    "get_spec",
    "load_spec",
    "load_specs",
    "load_specs_and_errors",
    "missing_module",
    "parse_spec",
    "quote",
    "resolve",
    "spec_dirs",
]
