"""Workflow parameters: read from the body's signature, validated and coerced."""
from __future__ import annotations

import datetime as dt
import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from qflow.errors import ParamError

_MISSING = inspect.Parameter.empty
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
SECRET_KEY = "__qflow_secret__"     # a sealed secret value, as qflow_runs.params holds it
PARAM_KEY = "__qflow_param__"       # a secret parameter passed to a task, in its call
MASK = "***"

T = TypeVar("T")


class Secret(Generic[T]):
    """A workflow parameter that is never stored or shown in clear: annotate it
    ``Secret`` or ``Secret[str]``. Stored encrypted (an ``encryption_key`` is required),
    shown as ``***``; a task it is passed to receives the real value. In the workflow
    body and in ``context().params`` it is this wrapper: ``.get()`` gives the value
    where one is available (in a task)."""

    __slots__ = ("_value", "name")

    def __init__(self, value: Any = inspect.Parameter.empty, name: str | None = None):
        self._value = value
        self.name = name

    def get(self) -> T:
        if self._value is _MISSING:
            raise RuntimeError(f"secret parameter {self.name!r} has no value in the workflow "
                               "body: pass it to a task, which receives the real value")
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret is not pickled (its value would travel in clear)")


def is_secret(kind: Any) -> bool:
    return kind is Secret or typing.get_origin(kind) is Secret


def secret_names(params: dict[str, "Param"]) -> list[str]:
    """The names of the parameters annotated Secret."""
    return [name for name, p in params.items() if is_secret(p.type)]


def masked(values: dict[str, Any]) -> dict[str, Any]:
    """Stored parameter values with each sealed secret shown as ``***``."""
    return {k: MASK if isinstance(v, dict) and SECRET_KEY in v else v
            for k, v in values.items()}


@dataclass(frozen=True)
class Param:
    """One workflow parameter."""

    name: str
    type: Any = None              # annotation, or type(default), or None for "any"
    default: Any = _MISSING

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def describe(self) -> str:
        kind = type_name(self.type)
        if self.required:
            return kind
        return f"{kind} = {MASK if is_secret(self.type) else repr(self.default)}"


def params_of(fn) -> dict[str, Param]:
    """The parameters of a workflow body, typed from annotations or defaults."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - a name the annotation uses is not importable
        raise ParamError(f"workflow {fn.__name__!r}: cannot read parameter annotations: "
                         f"{exc}") from None
    out: dict[str, Param] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ParamError(f"workflow {fn.__name__!r}: *args/**kwargs are not supported")
        kind = hints.get(p.name)
        if kind is None and p.default is not _MISSING and p.default is not None:
            kind = type(p.default)
        out[p.name] = Param(p.name, kind, p.default)
    return out


def type_name(kind: Any) -> str:
    if kind is None:
        return "any"
    if is_secret(kind):
        inner = typing.get_args(kind)
        return f"Secret[{type_name(inner[0])}]" if inner else "Secret"
    if typing.get_args(kind):
        return str(kind).replace("typing.", "")
    return getattr(kind, "__name__", None)


def resolve(params: dict[str, Param], given: dict[str, Any], workflow: str) -> dict[str, Any]:
    """Validate ``given`` against ``params`` and return every value, JSON-ready.

    Strings (from ``-p k=v``) are parsed per the declared type; other values are checked.
    """
    unknown = sorted(set(given) - set(params))
    if unknown:
        known = ", ".join(params) or "none"
        raise ParamError(f"unknown parameter {unknown[0]!r} for workflow {workflow!r} "
                         f"(parameters: {known})")
    out: dict[str, Any] = {}
    for name, param in params.items():
        if name in given:
            try:
                value = coerce(given[name], param.type)
            except (TypeError, ValueError) as exc:
                why = f"expected {type_name(param.type)}" if is_secret(param.type) else exc
                raise ParamError(f"parameter {name!r} of workflow {workflow!r}: {why}"
                                 ) from None
        elif param.required:
            raise ParamError(f"workflow {workflow!r} needs parameter {name!r} "
                             f"({type_name(param.type)}): pass -p {name}=...")
        else:
            value = param.default
        out[name] = to_json(value)
        _refuse_non_finite(out[name], name, workflow)
    return out


def _refuse_non_finite(value: Any, name: str, workflow: str) -> None:
    """NaN and ±Infinity are not JSON: stored, they would come out of `status --json` and
    the REST API as invalid JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ParamError(f"parameter {name!r} of workflow {workflow!r}: NaN and Infinity "
                         "are not allowed (parameters travel as JSON)") from None


def body_values(params: dict[str, Param], stored: dict[str, Any]) -> dict[str, Any]:
    """Turn stored (JSON) parameter values back into the declared Python types; a secret
    parameter is a :class:`Secret` without its value (the body only passes it on)."""
    return {name: Secret(name=name) if is_secret(p.type)
            else coerce(stored[name], p.type) if name in stored else p.default
            for name, p in params.items()}


SHARED_MIN_BYTES = 256     # a parameter at least this long (as JSON) is stored once


def share_params(call: dict[str, Any], values: dict[str, Any],
                 big: dict[str, str] | None = None) -> dict[str, Any]:
    """A node's call (``{"args": [...], "kwargs": {...}}``, JSON-ready) with each argument
    that is exactly one of the run's parameter values, if that is long, replaced by a
    reference to it (``{PARAM_KEY: name}``, which the worker fills in from the run, as
    for a secret): a big parameter passed to many tasks is stored once, in the run, not
    in every task row. Arguments and the items of list and dict arguments are looked at.
    ``big``: :func:`big_params` of ``values``, for a caller sharing those of many calls.
    """
    if big is None:
        big = big_params(values)
    if not big:
        return call
    return {"args": [_shared(v, big, 1) for v in call["args"]],
            "kwargs": {k: _shared(v, big, 1) for k, v in call["kwargs"].items()}}


def big_params(values: dict[str, Any]) -> dict[str, str]:
    """The parameter values long enough to be shared (as JSON, sorted keys), each with
    the name of the first parameter holding it."""
    big: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, (str, list, dict)) and not (isinstance(value, dict)
                                                         and SECRET_KEY in value):
            text = json.dumps(value, sort_keys=True)
            if len(text) >= SHARED_MIN_BYTES:
                big.setdefault(text, name)
    return big


def _shared(value: Any, big: dict[str, str], depth: int) -> Any:
    if isinstance(value, str) and len(value) < SHARED_MIN_BYTES - 2:
        return value                     # too short to be one: no need to encode it
    if isinstance(value, (str, list, dict)):
        name = big.get(json.dumps(value, sort_keys=True))
        if name is not None:
            return {PARAM_KEY: name}
    if depth == 0:
        return value
    if isinstance(value, list):
        return [_shared(v, big, depth - 1) for v in value]
    if isinstance(value, dict) and len(value) > 1:      # not a reference of one key
        return {k: _shared(v, big, depth - 1) for k, v in value.items()}
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def coerce(value: Any, kind: Any) -> Any:
    """Coerce ``value`` to ``kind``; raise ValueError with a readable reason."""
    if kind is None or kind is Any:
        return value
    if is_secret(kind):
        inner = typing.get_args(kind)
        value = value.get() if isinstance(value, Secret) else value
        return coerce(value, inner[0]) if inner else value
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return coerce(value, option)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin in (list, tuple, set, frozenset):
        return _coerce_list(value, kind, origin, args)
    if origin is dict:
        return _coerce_dict(value, args)
    if kind in _SCALARS:
        return _SCALARS[kind](value)
    if isinstance(kind, type) and isinstance(value, kind):
        return value
    raise ValueError(f"expected {type_name(kind)}, got {value!r}")


def _coerce_list(value, kind, origin, args):
    if isinstance(value, str):
        value = _parse_json(value, kind)
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"expected {type_name(kind)}, got {value!r}")
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],)
    items = [coerce(v, args[0]) for v in value] if len(args) == 1 else list(value)
    return list(items) if origin is list else origin(items)


def _coerce_dict(value, args):
    if isinstance(value, str):
        value = _parse_json(value, dict)
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict, got {value!r}")
    if len(args) == 2:
        return {coerce(k, args[0]): coerce(v, args[1]) for k, v in value.items()}
    return dict(value)


def _parse_json(text: str, kind: Any) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if typing.get_origin(kind) in (list, tuple, set, frozenset):
            return [part.strip() for part in text.split(",") if part.strip()]
        raise ValueError(f"expected {type_name(kind)} as JSON, got {text!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"expected a bool (true/false), got {value!r}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an int, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an int, got {value!r}")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a float, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a float, got {value!r}") from None


def _str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a str, got {value!r}")


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected a date (YYYY-MM-DD), got {value!r}") from None


def _datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"expected an ISO datetime, got {value!r}") from None


_SCALARS = {bool: _bool, int: _int, float: _float, str: _str,
            dt.date: _date, dt.datetime: _datetime, list: lambda v: _coerce_list(v, list, list, ()),
            dict: lambda v: _coerce_dict(v, ())}
