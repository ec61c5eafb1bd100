"""One run's work in a worker process: the worker (worker.py), the one training loop every method shares
(loop.py), the measurements (measure.py) and the cheaper dropout masks (dropout.py)."""
