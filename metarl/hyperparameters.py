"""Component hyperparameters: each key declared once on its class, with its default, check and doc.

A component (learner, policy, regularizer) declares a key as a class attribute,

    class MAMLTRPO(MetaLearner):
        max_kl = Hyperparameter(0.01, POSITIVE, "KL trust region of the outer step")

and takes it as a constructor keyword (`MAMLTRPO(..., max_kl=0.02)`); `self.max_kl` reads the value.
Subclasses inherit declarations and may redeclare a key with another default. A plugin class that
declares nothing keeps working: its keys are then its constructor's keyword parameters, unchecked
here (a `ValueError`/`TypeError` from the constructor is reported as the plugin's one-line error).
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metarl.errors import ConfigError, short_repr


@dataclass(frozen=True)
class Check:
    """What a value must be: a test and its description for error messages (`allowed`)."""

    test: Callable[[Any], bool]
    allowed: str
    as_float: bool = False  # integers are accepted for a float key and stored as floats

    def __call__(self, value: Any) -> Any:
        """The value as stored (ints widened for float keys); raises ValueError with `allowed`."""
        if self.as_float and _is_number(value):
            value = float(value)
        if not self.test(value):
            raise ValueError(self.allowed)
        return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


POSITIVE_INT = Check(lambda v: _is_int(v) and v > 0, "a positive integer")
NON_NEGATIVE_INT = Check(lambda v: _is_int(v) and v >= 0, "a non-negative integer")
NUMBER = Check(_is_number, "a finite number", as_float=True)
POSITIVE = Check(lambda v: _is_number(v) and v > 0, "a positive number", as_float=True)
NON_NEGATIVE = Check(lambda v: _is_number(v) and v >= 0, "a non-negative number", as_float=True)
UNIT_INTERVAL = Check(lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]", as_float=True)
OPEN_UNIT_INTERVAL = Check(lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1", as_float=True)
FRACTION = Check(lambda v: _is_number(v) and 0 < v <= 1, "a fraction in (0, 1]", as_float=True)
BOOLEAN = Check(lambda v: isinstance(v, bool), "true or false")
#: the widest layer and the most layers a list of sizes (`hidden_sizes`) may give
MAX_WIDTH, MAX_LAYERS = 65_536, 64
POSITIVE_INTS = Check(
    lambda v: (
        isinstance(v, (list, tuple)) and len(v) <= MAX_LAYERS and all(_is_int(h) and 0 < h <= MAX_WIDTH for h in v)
    ),
    f"a list of at most {MAX_LAYERS} positive integers up to {MAX_WIDTH}, e.g. [64, 64]",
)


def positive_int(maximum: int) -> Check:
    """An integer from 1 to `maximum`: a count that must fit what can run."""
    return Check(lambda v: _is_int(v) and 0 < v <= maximum, f"a positive integer up to {maximum}")


def non_negative_int(maximum: int, allowed: str | None = None) -> Check:
    """An integer from 0 to `maximum`."""
    return Check(lambda v: _is_int(v) and 0 <= v <= maximum, allowed or f"a non-negative integer up to {maximum}")


#: the largest counts a run may ask for (the memory of one meta-batch is checked too, `metarl.build`)
MAX_TASKS = 100_000  # tasks of a meta-batch, of validation, of an evaluation
MAX_EPISODES = 100_000  # episodes per task and step
MAX_HORIZON = 1_000_000
MAX_INNER_STEPS = 1_000
MAX_ITERATIONS = 1_000_000_000

#: seeds as torch.manual_seed and numpy take them: [0, 2**63)
SEED = non_negative_int(2**63 - 1, "a non-negative integer below 2**63")


def one_of(*choices: Any) -> Check:
    """A value among `choices`."""
    return Check(lambda v: v in choices, f"one of {', '.join(map(str, choices))}")


class Hyperparameter:
    """A declared key of a component class; on an instance, the value it was configured with."""

    def __init__(self, default: Any, check: Check, doc: str) -> None:
        self.default = check(default)
        self.check = check
        self.doc = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.get(_slot(self.name), self.default)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[_slot(self.name)] = value


def _slot(name: str) -> str:
    return f"_hyperparameter_{name}"


@dataclass(frozen=True)
class Key:
    """One key of a component as listed by `metarl list --verbose`: default, allowed values, doc."""

    name: str
    default: Any
    allowed: str
    doc: str


def declared(cls: type) -> dict[str, Hyperparameter]:
    """The hyperparameters `cls` declares or inherits (a subclass's declaration wins; a subclass that
    sets an inherited key's attribute to None drops it)."""
    found: dict[str, Hyperparameter] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, Hyperparameter):
                found[name] = value
            elif value is None and name in found:  # `key = None` in a subclass drops an inherited key
                del found[name]
    return found


def _signature_keys(cls: type, positional: Iterable[str]) -> tuple[dict[str, Key], bool]:
    """Keyword parameters of `cls`'s constructor beyond `positional`, and whether it takes **kwargs."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return {}, True
    skip = set(positional)
    keys, open_ended = {}, False
    for p in parameters:
        if p.kind is p.VAR_KEYWORD:
            open_ended = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip:
            keys[p.name] = Key(p.name, p.default, "any value the constructor accepts", "")
    return keys, open_ended


def component_keys(cls: type, positional: Iterable[str] = ()) -> dict[str, Key]:
    """Every key a component class takes: its declared hyperparameters, then its constructor's own
    keyword parameters (for plugins that declare nothing)."""
    keys = {name: Key(name, h.default, h.check.allowed, h.doc) for name, h in declared(cls).items()}
    signature, _ = _signature_keys(cls, positional)
    return {**signature, **keys}


def resolve_kwargs(
    cls: type,
    kwargs: Mapping[str, Any],
    what: str,
    positional: Iterable[str] = (),
    elsewhere: Callable[[str], str | None] | None = None,
) -> dict[str, Any]:
    """`kwargs` checked against `cls`'s keys, with every declared default filled in.

    An unknown key is a ConfigError naming `what` and listing its keys (and, through `elsewhere`,
    which other component has that key); a bad value names the key and what is allowed.
    """
    positional = tuple(positional)
    hyper = declared(cls)
    signature, open_ended = _signature_keys(cls, positional)
    resolved: dict[str, Any] = {name: copy.deepcopy(h.default) for name, h in hyper.items()}
    for key, value in kwargs.items():
        if key in hyper:
            try:
                resolved[key] = hyper[key].check(value)
            except ValueError as exc:
                raise ConfigError(
                    f"{what}: bad value {short_repr(value)} for key {short_repr(key)}: expected {exc}"
                ) from None
        elif key in signature or (open_ended and not getattr(cls, "takes_declared_keys_only", False)):
            resolved[key] = value
        else:
            known = sorted({*hyper, *signature})
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            owner = elsewhere(key) if elsewhere is not None else None
            belongs = f" ({short_repr(key)} is a key of {owner})" if owner else ""
            raise ConfigError(
                f"{what} has no key {short_repr(key)}{belongs}.{hint} Its keys: {', '.join(known) or 'none'}"
            )
    return resolved


def configure(obj: Any, kwargs: Mapping[str, Any], what: str) -> None:
    """Check `kwargs` against `obj`'s declared hyperparameters and set every declared key on it.

    Called by the base classes' constructors, so `Component(**kwargs)` is checked however it is built.
    Such a base class sets `takes_declared_keys_only = True`: its `**kwargs` are not open-ended.
    """
    hyper = declared(type(obj))
    unknown = sorted(set(kwargs) - set(hyper))
    if unknown:
        keys = ", ".join(sorted(hyper)) or "none"
        raise ConfigError(f"{what} has no key {short_repr(unknown[0])}. Its keys: {keys}")
    for name, value in resolve_kwargs(type(obj), kwargs, what).items():
        setattr(obj, name, value)
