"""Statistics over merged sufficient statistics: means, confidence intervals, latency
percentiles, cost. Pure math, no I/O."""
