"""Watching a model in production: drift of its inputs and scores, volume and freshness of its source rows, and the incidents findings open."""
