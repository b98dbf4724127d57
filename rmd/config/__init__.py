"""Configuration: Flink's keys and syntax in, validated settings out. Nothing here talks
to a cluster.

``values`` and ``parsers`` read one value in Flink's syntax, ``names`` holds Kubernetes'
name rules; ``files`` reads config.yaml / flink-conf.yaml and ``-D``; ``flinkconf`` holds the
flat configuration and reads options; ``option`` and ``options`` are the table of every key;
``settings`` is the daemon's ``RmdSettings``; ``podoptions`` (with ``pod_resources``,
``pod_placement``, ``pod_environment``) the TaskManager pod's options; ``agent_env`` the
environment contract between the pod spec and the agent.
"""
