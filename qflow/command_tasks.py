"""Tasks that run a command rather than Python: :func:`shell` and :func:`container`."""
from __future__ import annotations

import shlex

from qflow.authoring import CONTAINER_OPTIONS, TASKS, OptionError, TaskDef, task


def validate_container(name: str, options: dict) -> None:
    """The container options of ``@task(...)`` on ``name``: only with
    isolation="container", which needs an image and a valid spec."""
    given = [k for k in CONTAINER_OPTIONS if options.get(k) is not None]
    if options.get("isolation") != "container":
        if given:
            raise OptionError(f"@task on {name!r}: {given[0]} needs isolation='container'")
        return
    from qflow.worker.container import check_spec, spec_of
    if not options.get("image"):
        raise OptionError(f"@task on {name!r}: isolation='container' needs image=")
    try:
        check_spec(spec_of(options), f"@task on {name!r}")
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def shell(command: str | list[str], name: str = "shell", **options) -> TaskDef:
    """A task that runs ``command``, its ``{placeholders}`` filled from the call's
    arguments: ``dbt = shell("dbt run --select {model}", name="dbt_run")`` then
    ``dbt(model="orders")`` in a workflow body. A string runs in a shell, every filled-in
    value shell-quoted (a value is always one word, never more commands); a list runs
    without a shell, each placeholder filled inside its own argument. Output goes to the
    task's log; a non-zero exit fails the task."""
    from qflow.worker.isolation import run_command

    if not isinstance(command, str) and not (
            isinstance(command, (list, tuple)) and command
            and all(isinstance(c, str) for c in command)):
        raise OptionError(f"shell task {name!r}: command must be a string or a non-empty "
                          f"list of strings, got {command!r}")
    template = command if isinstance(command, str) else list(command)

    def run(*args, **values):
        return run_command(template, *args, **values)

    run.__name__ = run.__qualname__ = name
    run.__module__ = "qflow.shell"
    run.__doc__ = f"$ {template if isinstance(template, str) else shlex.join(template)}"
    existing = TASKS.get(f"qflow.shell.{name}")
    if existing is not None and existing.fn.__doc__ != run.__doc__:
        raise OptionError(f"shell task name {name!r} is used for two commands")
    return task(run, **options)


def container(image: str, command: str | list[str] | None = None, name: str = "container",
              **options) -> TaskDef:
    """A task that runs ``command`` in a container from ``image``:
    ``dbt = container("ghcr.io/dbt-labs/dbt-postgres:1.8", ["dbt", "run", "--select",
    "{model}"], name="dbt_run")`` then ``dbt(model="orders")`` in a workflow body.

    ``{placeholders}`` are filled from the call's arguments, each inside its own argument
    (a string command is split into arguments first; no shell is involved). Container
    options: ``env``, ``volumes`` (host path -> container path, ``":ro"`` allowed),
    ``workdir``, ``user``, ``network``, ``cpus``, ``memory``, ``pull`` ("missing",
    "always" or "never"); any other keyword is a task option (``timeout``, ``retries``,
    ``queue``, ...). The container's output is the task's log; exit code 0 is success;
    the value is ``/qflow/out/result.json`` if the command wrote it, else the last line
    of stdout that parses as JSON (else None).
    """
    if isinstance(command, str):
        command = shlex.split(command)
    if command is not None and not (isinstance(command, (list, tuple)) and command
                                    and all(isinstance(c, str) for c in command)):
        raise OptionError(f"container task {name!r}: command must be a string or a "
                          f"non-empty list of strings, got {command!r}")
    argv = list(command) if command is not None else None
    settings = {**options, "isolation": "container", "image": image}
    spec_options = {k: settings.get(k) for k in CONTAINER_OPTIONS}

    def run(*args, **values):
        from qflow.worker.container import call_plain
        return call_plain({**spec_options, "timeout": settings.get("timeout")}, argv,
                          args, values)

    run.__name__ = run.__qualname__ = name
    run.__module__ = "qflow.container"
    run.__doc__ = f"[{image}] $ {shlex.join(argv) if argv else '(its own command)'}"
    run.container_command = argv
    existing = TASKS.get(f"qflow.container.{name}")
    if existing is not None and existing.fn.__doc__ != run.__doc__:
        raise OptionError(f"container task name {name!r} is used for two commands")
    return task(run, **settings)
