"""Secret workflow parameters: sealed before a run is recorded, opened by the worker that
runs a task they are passed to."""
from __future__ import annotations

import json
from typing import Any

from qflow.core import params as P
from qflow.errors import ParamError
from qflow.results import crypto
from qflow.results.codec import SEALED_KEY, Results


def seal_params(params: dict[str, P.Param], values: dict[str, Any], results: Results,
                workflow: str) -> dict[str, Any]:
    """Run parameters as ``qflow_runs.params`` keeps them: each secret sealed. Without
    a key a secret is refused, never stored in clear."""
    names = [n for n in P.secret_names(params) if n in values]
    if not names:
        return values
    if results.keyring is None:
        raise ParamError(f"parameter {names[0]!r} of workflow {workflow!r} is a Secret: set "
                         "encryption_key (`qflow keygen` prints one) so it is stored "
                         "encrypted")
    return {k: {P.SECRET_KEY: results.keyring.seal(json.dumps(v))} if k in names else v
            for k, v in values.items()}


def open_params(values: dict[str, Any], results: Results) -> dict[str, Any]:
    """Stored run parameters with each sealed secret opened (DecryptError without the
    key that sealed it)."""
    return {k: json.loads(results.reveal(v[P.SECRET_KEY]))
            if isinstance(v, dict) and P.SECRET_KEY in v else v for k, v in values.items()}


def for_context(values: dict[str, Any], opened: dict[str, Any]) -> dict[str, Any]:
    """What ``context().params`` shows: secrets as :class:`~qflow.core.params.Secret`
    wrappers (printed ``***``, ``.get()`` for the value)."""
    return {k: P.Secret(opened[k], k) if isinstance(v, dict) and P.SECRET_KEY in v
            else v for k, v in values.items()}


def open_call(value: Any, opened: dict[str, Any], results: Results) -> Any:
    """A call's arguments with secret parameters and sealed map elements in clear."""
    if isinstance(value, dict):
        if len(value) == 1 and P.PARAM_KEY in value:
            return opened.get(value[P.PARAM_KEY])
        if len(value) == 1 and SEALED_KEY in value and crypto.is_sealed(value[SEALED_KEY]):
            return json.loads(results.reveal(value[SEALED_KEY]))
        return {k: open_call(v, opened, results) for k, v in value.items()}
    if isinstance(value, list):
        return [open_call(v, opened, results) for v in value]
    return value
