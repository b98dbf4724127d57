#!/usr/bin/env bash
# Entrypoint of the rmd Flink image (docker/Dockerfile): one image, four roles.
#
#   rmd-entrypoint.sh jobmanager [args]   the JobManager pod: the rmd daemon and Flink's
#                                          JobManager side by side; SIGTERM goes to both, and
#                                          the pod ends when either of them ends. The args go
#                                          to Flink's JobManager; the dynamic properties among
#                                          them (-D key=value, -Dkey=value) to the daemon too:
#                                          both read the same configuration.
#   rmd-entrypoint.sh application [options] [-- program args]
#                                          the JobManager pod of an application cluster: as
#                                          jobmanager, but Flink's JobManager runs the job's
#                                          jar (Flink's standalone-job role: --jars URI
#                                          [--job-classname NAME] [-D key=value ...]). Flink is
#                                          told to stay up after the application ends
#                                          (execution.shutdown-on-application-finish=false,
#                                          given to Flink only), so its REST API keeps the final
#                                          state for the daemon, which then removes the whole
#                                          cluster unless the configuration says false there.
#   rmd-entrypoint.sh daemon [args]       the rmd daemon alone (a standalone resource manager).
#   rmd-entrypoint.sh taskmanager [args]  a TaskManager pod: the rmd agent registers with the
#                                          daemon and supervises Flink's TaskManager.
#   anything else                         run as given (e.g. a shell for debugging).
#
# Environment: FLINK_CONF_DIR (default /opt/flink/conf) holds config.yaml or flink-conf.yaml;
# FLINK_ENTRYPOINT (default /docker-entrypoint.sh) is Flink's own image entrypoint;
# RMD (default: rmd on PATH) is the rmd command.
set -euo pipefail

FLINK_CONF_DIR="${FLINK_CONF_DIR:-/opt/flink/conf}"
FLINK_ENTRYPOINT="${FLINK_ENTRYPOINT:-/docker-entrypoint.sh}"
RMD="${RMD:-rmd}"
export FLINK_CONF_DIR

role="${1:-jobmanager}"
[ "$#" -gt 0 ] && shift

case "$role" in
  daemon)
    exec "$RMD" daemon --conf-dir "$FLINK_CONF_DIR" "$@"
    ;;
  taskmanager)
    exec "$RMD" taskmanager -- "$FLINK_ENTRYPOINT" taskmanager "$@"
    ;;
  jobmanager|application)
    # Flink serves a job's REST view from a cache kept for rest.cache.execution-graph.timeout
    # (3 s by default): the daemon, reading a job that still initializes, would see its
    # vertices (its demand) up to that much later. Unless the configuration or the arguments
    # set it, Flink's JobManager gets the daemon's poll interval (500 ms) instead.
    rest_cache=()
    if ! grep -qs "execution-graph" "$FLINK_CONF_DIR/config.yaml" "$FLINK_CONF_DIR/flink-conf.yaml" \
      && [[ " $* " != *"execution-graph"* ]]; then
      rest_cache=(-D rest.cache.execution-graph.timeout=500ms)
    fi
    flink_role=jobmanager
    flink_args=(${rest_cache[@]+"${rest_cache[@]}"} "$@")
    if [ "$role" = application ]; then
      # Flink's options, then ours (a later -D wins), then the program's arguments.
      options=()
      while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do options+=("$1"); shift; done
      [ "$#" -gt 0 ] && shift
      flink_role=standalone-job
      flink_args=(${rest_cache[@]+"${rest_cache[@]}"} ${options[@]+"${options[@]}"} -D execution.shutdown-on-application-finish=false -- "$@")
      set -- ${options[@]+"${options[@]}"}
    fi
    daemon_pid=""
    flink_pid=""
    stopping=0
    signalled=" "
    forward() {  # each process gets one SIGTERM: a second could catch it halfway through stopping
      stopping=1
      for pid in $daemon_pid $flink_pid; do
        case "$signalled" in *" $pid "*) continue ;; esac
        signalled="$signalled$pid "
        kill -TERM "$pid" 2>/dev/null || true
      done
    }
    # The trap is in place before anything starts: a SIGTERM during start-up is forwarded too.
    trap forward TERM INT
    properties=()
    previous=""
    for arg in "$@"; do
      if [ "$previous" = "-D" ]; then
        properties+=(-D "$arg")
      elif [ "${arg#-D}" != "$arg" ] && [ "$arg" != "-D" ]; then
        properties+=(-D "${arg#-D}")
      fi
      previous="$arg"
    done
    "$RMD" daemon --conf-dir "$FLINK_CONF_DIR" ${properties[@]+"${properties[@]}"} &
    daemon_pid=$!
    "$FLINK_ENTRYPOINT" "$flink_role" ${flink_args[@]+"${flink_args[@]}"} &
    flink_pid=$!
    if [ "$stopping" = 1 ]; then forward; fi  # a SIGTERM came while they were starting
    # The pod ends when either process ends; the other is asked to stop and waited for.
    set +e
    wait -n "$daemon_pid" "$flink_pid"
    first=$?
    if [ "$stopping" = 0 ]; then
      echo "rmd-entrypoint: a JobManager process exited with $first; stopping the other" >&2
    fi
    forward
    wait "$daemon_pid"
    daemon_status=$?
    wait "$flink_pid"
    flink_status=$?
    if [ "$daemon_status" != 0 ]; then exit "$daemon_status"; fi
    if [ "$flink_status" != 0 ]; then exit "$flink_status"; fi
    exit 0
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
