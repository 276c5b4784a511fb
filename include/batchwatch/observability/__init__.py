"""What the outside world scrapes: Prometheus metrics derived from warehouse state (`metrics`)."""
