"""Kept at this path because the demo spec names `batchwatch.fraud_demo.derive_features`; the code lives in
`batchwatch.demo.fraud`."""

from batchwatch.demo.fraud import derive_features

__all__ = ["derive_features"]
