"""Production tests (``-m prod``): the deployment as shipped (ACL, owned keys, TLS, secrets, metrics,
operator commands, compose and systemd files, upgrades, Redis Cluster) and a smoke run of the
benchmarks."""
