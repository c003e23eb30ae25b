"""nnps.worker: the `GradientWorker` Ray actor (gradient sums over a shard)."""
