#!/usr/bin/env bash
# The local stand-in for the official Flink image's /docker-entrypoint.sh (apache/flink-docker),
# for the roles rmd uses: on the local cluster it is what kubernetes.entry.path points at.
#
#   docker-entrypoint.sh jobmanager  [-D key=value ...]   Flink's JobManager (standalone session)
#   docker-entrypoint.sh taskmanager [-D key=value ...]   Flink's TaskManager
#   docker-entrypoint.sh standalone-job [--jars URI] [--job-classname NAME] [-D key=value ...]
#                        [-- program args]                 Flink's JobManager of an
#                                                          application cluster, running the jar
#   docker-entrypoint.sh help
#   docker-entrypoint.sh COMMAND [ARGS ...]              runs COMMAND as given (pass-through),
#                                                          e.g. kubernetes-taskmanager.sh, which
#                                                          rmd starts when it computed the
#                                                          TaskManager's memory options itself
#
# As in the image, $FLINK_HOME/bin is on the PATH.
#
# Both roles run in the foreground with the configuration in $FLINK_CONF_DIR (default
# $FLINK_HOME/conf) and exec, so the pid that was started is the JVM and signals reach it.
# Arguments pass through unchanged; write dynamic properties as two words, -D key=value
# (jobmanager.sh takes a bare -Dkey=value for a legacy hostname argument).
#
# Unlike the image's script this one never edits the configuration directory (on
# Kubernetes it is a read-only ConfigMap volume): JOB_MANAGER_RPC_ADDRESS and
# TASK_MANAGER_NUMBER_OF_TASK_SLOTS, when set, become -D arguments instead.
set -euo pipefail

if [ -z "${FLINK_HOME:-}" ] || [ ! -x "${FLINK_HOME}/bin/jobmanager.sh" ]; then
  echo "docker-entrypoint.sh: FLINK_HOME='${FLINK_HOME:-}' holds no bin/jobmanager.sh;" \
    "run 'rmd dev-cluster up --flink' and use the 'export FLINK_HOME=...' line it prints" >&2
  exit 2
fi
export FLINK_CONF_DIR="${FLINK_CONF_DIR:-${FLINK_HOME}/conf}"
export PATH="${FLINK_HOME}/bin:${PATH}"

role="${1:-help}"
[ "$#" -gt 0 ] && shift

from_environment=()
if [ -n "${JOB_MANAGER_RPC_ADDRESS:-}" ]; then
  from_environment+=(-D "jobmanager.rpc.address=${JOB_MANAGER_RPC_ADDRESS}")
fi

case "$role" in
  help)
    echo "Usage: $(basename "$0") (jobmanager|standalone-job|taskmanager) [-D key=value ...] | help | COMMAND [ARGS ...]"
    exit 0
    ;;
  jobmanager)
    echo "Starting Job Manager (FLINK_CONF_DIR=${FLINK_CONF_DIR})"
    exec "${FLINK_HOME}/bin/jobmanager.sh" start-foreground ${from_environment[@]+"${from_environment[@]}"} "$@"
    ;;
  standalone-job)
    echo "Starting Job Manager (FLINK_CONF_DIR=${FLINK_CONF_DIR})"
    exec "${FLINK_HOME}/bin/standalone-job.sh" start-foreground ${from_environment[@]+"${from_environment[@]}"} "$@"
    ;;
  taskmanager)
    if [ -n "${TASK_MANAGER_NUMBER_OF_TASK_SLOTS:-}" ]; then
      from_environment+=(-D "taskmanager.numberOfTaskSlots=${TASK_MANAGER_NUMBER_OF_TASK_SLOTS}")
    fi
    echo "Starting Task Manager (FLINK_CONF_DIR=${FLINK_CONF_DIR})"
    exec "${FLINK_HOME}/bin/taskmanager.sh" start-foreground ${from_environment[@]+"${from_environment[@]}"} "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
