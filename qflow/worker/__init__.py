"""What only a worker process does around a task: capture its output, time it out, run it
in a subprocess or on an event loop."""
