"""Benchmarks: the pipeline beside a naive pandas script and the raw DuckDB floor (`make bench`)."""
