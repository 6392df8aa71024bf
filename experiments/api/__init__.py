"""The JSON API under /api/v1/: the same services as the pages, for scripts and notebooks.

A personal API token (Authorization: Bearer ...) acts as its owner with the owner's current
roles. Errors are RFC 9457 problem details. The OpenAPI document is generated from this
code at /api/v1/openapi.json; docs/api.md shows how to use it.
"""
