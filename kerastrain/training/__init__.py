"""Training: the ``run`` command end to end (runner), the jitted loop, optimizer and schedule,
checkpoints, metrics, plots and the memory planner. Imports data, model, storage and the core."""
