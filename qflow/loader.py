"""Load the user's workflows from a module path, a ``.py`` file or a directory of them."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from qflow.errors import QflowError, UserError, one_line


def load_app(target: str) -> list[str]:
    """Import every comma-separated target; return the module names loaded."""
    loaded: list[str] = []
    for part in (p.strip() for p in target.split(",")):
        if part:
            loaded.extend(_load_one(part))
    return loaded


def _load_one(target: str) -> list[str]:
    path = Path(target)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith(("_", "test_")))
        if not files:
            raise UserError(f"app directory {target!r} has no .py files")
        return [_load_file(p) for p in files]
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise UserError(f"app file not found: {target}")
        return [_load_file(path)]
    return [_import(target)]


def _import(name: str) -> str:
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        importlib.import_module(name)
    except QflowError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise UserError(f"cannot import app {name!r}: no such module or file") from None
        raise UserError(f"cannot import app {name!r}: {one_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code may raise anything
        raise UserError(f"cannot import app {name!r}: {_describe(exc)}") from None
    return name


def _load_file(path: Path) -> str:
    """Import a file as a module named after its stem; its folder joins sys.path."""
    path = path.resolve()
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return name
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load app file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except QflowError:
        sys.modules.pop(name, None)
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        sys.modules.pop(name, None)
        raise UserError(f"cannot load app file {path}: {_describe(exc)}") from None
    return name


def _describe(exc: BaseException) -> str:
    """What went wrong importing user code, in one line. ``sys.exit()`` in a workflow
    file would otherwise end qflow itself, silently, with the file's exit code."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported"
    return f"{type(exc).__name__}: {one_line(exc)}"
