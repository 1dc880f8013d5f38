"""redismedian benchmarks: ``./dev bench`` (see benchmarks/README.md)."""
