"""Errors a user can act on. The CLI prints them as one line, without a traceback."""


class MetarlError(Exception):
    """Base class of every error caused by input: names, configs, plugins, paths."""


class UnknownNameError(MetarlError):
    """A registry lookup of a name no installed package provides."""


class PluginError(MetarlError):
    """A plugin that fails to import or does not satisfy the plugin contract."""


class ConfigError(MetarlError):
    """A config key or value that is not allowed."""
