"""The scheduler: the one service that decides; folds the log, appends decisions, assigns shards.

`run(settings, ...)` is the whole service (see `inferno.scheduler.service`); `python -m
inferno.scheduler` runs it from the environment.
"""
