"""``rmd session start|stop|list``: a Flink session cluster on Kubernetes with one command.

``manifests`` builds the objects (pure), ``access`` checks the caller's permissions,
``deploy`` creates, waits for, lists and deletes them, ``cli`` is the command.
"""
