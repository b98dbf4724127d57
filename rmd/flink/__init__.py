"""Following a real Flink JobManager through its REST API (``rmd.flink.rest-url``).

Pure parts: :mod:`~rmd.flink.answers` (REST JSON → typed snapshots), :mod:`~rmd.flink.demand`
(a job's slot demand, what to declare and remove). Edges: :mod:`~rmd.flink.rest` (HTTP reads
with timeouts) and :mod:`~rmd.flink.follower` (the poll loop that feeds the allocator).
"""
