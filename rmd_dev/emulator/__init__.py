"""The node emulator: the kubelet stand-in of the local control plane.

``main`` runs it (``python -m rmd_dev.emulator``); ``api`` and ``watch`` talk to the API
server, ``pod`` plays one pod's life, ``env`` builds a container's environment, ``runner``
runs its command, ``status`` writes kubelet-shaped statuses, ``plan`` reads the emulator's
annotations, ``ips`` hands out pod IPs, ``workloads`` holds the in-process workloads.
"""
