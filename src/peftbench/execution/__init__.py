"""Where runs execute: executors (local processes, Ray), the worker processes of one run, and the claims that
let several processes share one output folder. Nothing here knows what a run computes."""
