"""The pure core: DAG model, states and transitions, parameters, retry policy, cron and
schedules, and the records the layers exchange. Standard library only."""
