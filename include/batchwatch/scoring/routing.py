"""Which model scores which rows, and whose prediction is served.

Today the champion serves every row and the challenger, when there is one, scores every row in
shadow. This is the seam where canary arms (a salted entity hash deciding which model serves an
entity) plug in: a route will then carry the share of entities it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchwatch.registry import LoadedModel


@dataclass(frozen=True)
class Route:
    role: str  # as written to predictions.role
    model: LoadedModel
    serves: bool  # its predictions are the ones acted on (and counted in the run's positive rate)


def plan_routes(champion: LoadedModel, challenger: LoadedModel | None) -> list[Route]:
    """The champion serves; a challenger is scored beside it in shadow so it can be judged on the same rows."""
    routes = [Route("champion", champion, serves=True)]
    if challenger is not None:
        routes.append(Route("shadow", challenger, serves=False))
    return routes
