"""redismedian: a minute-cadence trading pipeline coordinated through one Redis."""

__version__ = "0.1.0"
