"""Kept at this path because stored artifacts pickle `batchwatch.training.CategoryCodes` and specs name
`batchwatch.training.hist_gradient_boosting`; the code lives in `batchwatch.modeling.estimators`."""

from batchwatch.modeling.estimators import CategoryCodes, gradient_boosting, hist_gradient_boosting

__all__ = ["CategoryCodes", "gradient_boosting", "hist_gradient_boosting"]
