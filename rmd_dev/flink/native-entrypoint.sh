#!/usr/bin/env bash
# kubernetes.entry.path of Flink's OWN native Kubernetes mode on the local cluster
# (rmd_dev/flink/native.py), where every pod shares the host's network: Flink's
# KubernetesResourceManagerDriver starts a TaskManager pod as
#
#   <entry path> bash -c "kubernetes-taskmanager.sh -D ... "
#
# and native mode needs a fixed taskmanager.rpc.port, so each TaskManager must bind its own
# pod IP (_POD_IP_ADDRESS, from status.podIP through the pod template). This script puts
# $FLINK_HOME/bin on PATH (the image has it there) and appends
# -Dtaskmanager.host/-Dtaskmanager.bind-host=$_POD_IP_ADDRESS to the command; anything else
# runs as given.
set -euo pipefail

if [ -z "${FLINK_HOME:-}" ] || [ ! -x "${FLINK_HOME}/bin/kubernetes-taskmanager.sh" ]; then
  echo "native-entrypoint.sh: FLINK_HOME='${FLINK_HOME:-}' holds no bin/kubernetes-taskmanager.sh" >&2
  exit 2
fi
export PATH="${FLINK_HOME}/bin:${PATH}"

if [ "$#" -eq 3 ] && [ "$1" = bash ] && [ "$2" = -c ]; then
  if [ -z "${_POD_IP_ADDRESS:-}" ]; then
    echo "native-entrypoint.sh: _POD_IP_ADDRESS is not set (the pod template sets it)" >&2
    exit 2
  fi
  exec bash -c "$3 -Dtaskmanager.host=${_POD_IP_ADDRESS} -Dtaskmanager.bind-host=${_POD_IP_ADDRESS}"
fi
exec "$@"
