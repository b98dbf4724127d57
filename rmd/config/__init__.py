"""Configuration: Flink's keys and syntax in, validated settings out. Nothing here talks
to a cluster."""
