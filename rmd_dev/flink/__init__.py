"""Real Apache Flink on the local cluster: the image entrypoint stand-in
(``docker-entrypoint.sh``, shipped as package data). Provisioning lives in
:mod:`rmd_dev.provision` (:func:`~rmd_dev.provision.provision_flink`)."""
