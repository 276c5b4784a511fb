"""The demo: a card-fraud simulator with delayed labels and drift scenarios, and seeding a warehouse with it.

Nothing in the product imports this package; the demo, the tests, the benchmarks and the CLI do."""
