"""An example metarl plugin: the `point-reach` task family, the `tiny-gaussian` policy and the
`adapted-entropy` regularizer, all registered through entry points in this package's pyproject.toml.

Nothing is imported here, so that listing metarl's plugins stays cheap.
"""
