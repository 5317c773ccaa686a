#!/bin/sh
# Entrypoint of the qflow image: optionally create/migrate the results DB, then run
# `qflow ARGS...` (default: `qflow worker`) as PID 1 so it receives SIGTERM directly.
#
#   QFLOW_DB_UPGRADE=1           run `qflow db upgrade` first, retrying while the DB
#                                is not reachable yet (it may still be starting)
#   QFLOW_DB_UPGRADE_ATTEMPTS    how many tries before giving up (default 30)
#   QFLOW_DB_UPGRADE_DELAY       seconds between tries (default 2)
set -eu

if [ "$#" -eq 0 ]; then
    set -- worker
fi

if [ "${QFLOW_DB_UPGRADE:-0}" = "1" ]; then
    attempts="${QFLOW_DB_UPGRADE_ATTEMPTS:-30}"
    delay="${QFLOW_DB_UPGRADE_DELAY:-2}"
    try=1
    while :; do
        status=0
        qflow db upgrade || status=$?
        if [ "$status" -eq 0 ]; then
            break
        fi
        # Exit code 2 is bad input or config: waiting will not fix it.
        if [ "$status" -eq 2 ]; then
            echo "qflow-entrypoint: 'qflow db upgrade' failed on bad configuration" >&2
            exit 2
        fi
        if [ "$try" -ge "$attempts" ]; then
            echo "qflow-entrypoint: database still unreachable after $attempts tries, giving up" >&2
            exit "$status"
        fi
        echo "qflow-entrypoint: database not ready (try $try/$attempts, exit $status), retrying in ${delay}s" >&2
        try=$((try + 1))
        sleep "$delay"
    done
fi

exec qflow "$@"
