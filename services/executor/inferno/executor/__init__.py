"""The executor: runs assigned shards through an inference backend and reports back."""
