"""Task families, policies, regularizers, meta-learners and loggers by name, found through
`importlib.metadata` entry points.

Entry points are read on the first lookup of a group, and a plugin module is imported only when its
name is looked up. The built-in plugins are declared in metarl's own `pyproject.toml` the same way a
third-party package declares its own.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from metarl.errors import PluginError, UnknownNameError, short_repr

AUTOLOAD_ENV_VAR = "METARL_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_DISTRIBUTION = "metarl"
#: a component name is one safe path segment: env and regularizer names become parts of run and sweep
#: directory names, so `../../x` or `a/b` would write outside `--logdir`
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def name_problem(name: object) -> str | None:
    """Why `name` cannot name a component (None when it can): it must be one safe path segment."""
    if isinstance(name, str) and NAME_PATTERN.fullmatch(name) and ".." not in name:
        return None
    return (
        f"name {short_repr(name, 80)} is not one safe path segment (a letter or digit, then letters, digits, "
        "'.', '_', '+' or '-', at most 64 characters, no '..')"
    )


@dataclass(frozen=True)
class PluginSource:
    """Where a name comes from: an entry point of an installed distribution, or a runtime `register`."""

    name: str
    target: str
    package: str
    version: str
    entry_point: metadata.EntryPoint | None = None
    obj: Any = None
    #: why the name is refused (`name_problem`); such a source is listed as broken and never imported
    refused: str | None = None


@dataclass(frozen=True)
class PluginStatus:
    """One row of `metarl list`: a name, its package and whether it loads."""

    name: str
    package: str
    version: str
    target: str
    error: str | None


class Registry:
    """Named plugins of one entry-point group, loaded lazily and checked against the contract."""

    def __init__(
        self, kind: str, plural: str, group: str, check: Callable[[Any], None], positional: tuple[str, ...] = ()
    ) -> None:
        self.kind = kind
        self.plural = plural
        self.group = group
        self._check = check
        #: constructor arguments of the contract, before a component's own keywords (its hyperparameters)
        self.positional = positional
        self._sources: dict[str, list[PluginSource]] | None = None
        self._loaded: dict[str, Any] = {}

    def _discover(self) -> dict[str, list[PluginSource]]:
        if self._sources is None:
            builtins_only = os.environ.get(AUTOLOAD_ENV_VAR, "").strip() not in ("", "0")
            sources: dict[str, list[PluginSource]] = {}
            for ep in metadata.entry_points(group=self.group):
                dist = ep.dist
                package = dist.metadata["Name"] if dist is not None else "<unknown>"
                if builtins_only and package != BUILTIN_DISTRIBUTION:
                    continue
                version = dist.version if dist is not None else "?"
                claim = PluginSource(ep.name, ep.value, package, version, entry_point=ep, refused=name_problem(ep.name))
                sources.setdefault(ep.name, []).append(claim)
            self._sources = sources
        return self._sources

    def reload(self) -> None:
        """Forget discovered entry points and loaded plugins (e.g. after installing a package)."""
        self._sources = None
        self._loaded = {}

    def register(self, name: str, obj: Any, package: str = "<runtime>", override: bool = False) -> None:
        """Add `obj` under `name` without an installed package (scripts and notebooks).

        Replacing a name that an installed package provides needs `override=True`.
        """
        problem = name_problem(name)
        if problem is not None:
            raise PluginError(f"cannot register {self.kind} {short_repr(name, 80)}: its {problem}")
        if name in self._discover() and not override:
            owners = " and ".join(c.package for c in self._discover()[name])
            raise PluginError(f"{self.kind} name {name!r} is already provided by {owners}; pass override=True")
        self._check(obj)
        target = f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
        self._discover()[name] = [PluginSource(name, target, package, "-", obj=obj)]
        self._loaded[name] = obj

    def names(self) -> list[str]:
        """All names in this group, sorted, including broken ones."""
        return sorted(self._discover())

    def _source(self, name: str) -> PluginSource:
        sources = self._discover()
        if name not in sources:
            known = sorted(n for n, claims in sources.items() if claims[0].refused is None)
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {short_repr(name, 80)}.{hint} Known {self.plural}: {', '.join(known) or 'none'}"
            )
        claims = sources[name]
        if len(claims) > 1:
            packages = " and ".join(f"{c.package} ({c.target})" for c in claims)
            raise PluginError(f"{self.kind} name {short_repr(name, 80)} is claimed more than once: {packages}")
        return claims[0]

    def package_of(self, name: str) -> str:
        """The distribution that provides `name` (`<runtime>` for a `register`ed one)."""
        return self._source(name).package

    def load(self, name: str) -> Any:
        """The class registered under `name`; raises a one-line error if unknown or broken."""
        if name in self._loaded:
            return self._loaded[name]
        source = self._source(name)
        where = f"{self.kind} {short_repr(name, 80)} (entry point {source.target!r} of package {source.package})"
        if source.refused is not None:
            raise PluginError(f"{where} is refused: its {source.refused}")
        try:
            obj = source.entry_point.load() if source.entry_point is not None else source.obj
        except (Exception, SystemExit) as exc:  # any import-time failure of a plugin is the plugin's fault
            raise PluginError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
        try:
            self._check(obj)
        except TypeError as exc:
            raise PluginError(f"{where} does not satisfy the plugin contract: {exc}") from exc
        self._loaded[name] = obj
        return obj

    def status(self) -> list[PluginStatus]:
        """Every name with its package and load error (None when it loads)."""
        rows = []
        for name, claims in sorted(self._discover().items()):
            try:
                self.load(name)
                error = None
            except (PluginError, UnknownNameError) as exc:
                error = str(exc)
            first = claims[0]
            rows.append(PluginStatus(name, first.package, first.version, first.target, error))
        return rows


def distribution_of(obj: Any) -> str:
    """The installed distribution that provides `obj`'s class (or `obj`, a class): the one whose
    entry point names its module, else the one whose files hold its top-level package."""
    cls = obj if isinstance(obj, type) else type(obj)
    module = cls.__module__
    for reg in REGISTRIES.values():
        for claims in reg._discover().values():
            for claim in claims:
                if claim.target.partition(":")[0] == module:
                    return claim.package
    names = metadata.packages_distributions().get(module.split(".")[0], [])
    return names[0] if names else f"module {module}"


def _check_subclass(base_path: str) -> Callable[[Any], None]:
    def check(obj: Any) -> None:
        module, attr = base_path.rsplit(".", 1)
        base = getattr(__import__(module, fromlist=[attr]), attr)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            raise TypeError(f"expected a subclass of {base_path}, got {obj!r}")

    return check


envs = Registry("env", "envs", "metarl.envs", _check_subclass("metarl.tasks.TaskDistribution"))
policies = Registry(
    "policy", "policies", "metarl.policies", _check_subclass("torch.nn.Module"), ("observation_space", "action_space")
)
regularizers = Registry(
    "regularizer",
    "regularizers",
    "metarl.regularizers",
    _check_subclass("metarl.regularizers.base.Regularizer"),
)


algorithms = Registry(
    "algorithm",
    "algorithms",
    "metarl.algorithms",
    _check_subclass("metarl.algos.base.MetaLearner"),
    ("policy", "family", "config", "regularizers", "device"),
)


def _check_logger(obj: Any) -> None:
    if not (isinstance(obj, type) and callable(getattr(obj, "log", None)) and callable(getattr(obj, "close", None))):
        raise TypeError(f"expected a class with log(step, scalars) and close() methods, got {obj!r}")


loggers = Registry("logger", "loggers", "metarl.loggers", _check_logger, ("run_dir", "config"))

REGISTRIES: dict[str, Registry] = {
    "envs": envs,
    "policies": policies,
    "regularizers": regularizers,
    "algorithms": algorithms,
    "loggers": loggers,
}
