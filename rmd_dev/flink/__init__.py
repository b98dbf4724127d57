"""Real Apache Flink on the local cluster: the image entrypoint stand-in
(``docker-entrypoint.sh``, shipped as package data), the rate-limited streaming job the demo
and the tests run (``job/``, compiled once by :mod:`~rmd_dev.flink.jobjar`) and a JobManager
pod played by local processes (:mod:`~rmd_dev.flink.jobmanager`). Provisioning lives in
:mod:`rmd_dev.provision` (:func:`~rmd_dev.provision.provision_flink`)."""
