"""The web console and REST API: :mod:`qflow.web.app` (the server), :mod:`qflow.web.auth`
(credentials, the base handler), :mod:`qflow.web.api` (``/qflow/api/v1/``) and
:mod:`qflow.web.pages` (the HTML console)."""
