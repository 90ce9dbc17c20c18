"""`libwatch web`: the management page, its JSON API and Prometheus metrics.

The page and the API show the documents of the same services the CLI prints
(`libwatch.services.reports`), so they never disagree with `status`, `history` and `events`.
"""
