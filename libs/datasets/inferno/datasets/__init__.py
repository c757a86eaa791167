"""Datasets: files as people have them (JSONL, CSV, Parquet) read into rows, and the canonical,
content-addressed form they are stored in, in blocks with a manifest. Pure, but for `objects`:
those blocks and manifests in the INFERNO_DATA object store."""
