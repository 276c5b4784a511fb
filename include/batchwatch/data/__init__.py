"""Source rows into model inputs: the one feature module and vectorised validation (pure pandas, no SQL)."""
