"""Watching a model in production: drift of its inputs and scores, and the incidents findings open."""
