"""The scheduler: the one service that decides; folds the log, appends decisions, assigns shards."""
