"""The boundary with Mixpanel's Experiments API.

Contract: ../shared/mixpanel-experiments-api.md. Three modules, each with one job:
`errors` (the failures, as a small exception family), `experiment` (what Mixpanel sends,
parsed into frozen dataclasses) with `shapes` (readers for the parts whose shape is not
published), and `client` (the one place that speaks HTTP to Mixpanel, with `wire` for
what crosses the connection). Import the module you need; this package re-exports nothing,
so a module that only needs the data types never loads the HTTP client.
"""
