"""The local worker pool: `isolation` (the main process's side: `WorkerPool`, which survives a
worker that crashes or hangs and names the file that did it) and `workers` (what runs inside
each worker process: its main loop, the per-file time limit, the forkserver)."""
