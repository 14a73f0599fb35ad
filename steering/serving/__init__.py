"""Serving the site's model inside the Django platform: the per-process model, hooks, vector
cache and scheduler (`runtime`), the backends that run a generation in this process or through
the Redis queue (`backends`, `redis_streams`), and the inference worker process (`worker`).

This is the Django-bound side of inference; the scheduler and tickets it drives live in
`steering.inference`, which imports no Django."""
