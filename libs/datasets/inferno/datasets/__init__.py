"""Datasets: files as people have them (JSONL, CSV, Parquet) read into rows, and the canonical,
content-addressed form they are stored in. Pure."""
