"""nnps.core: the math and the data, without Ray.

Network, activations, costs, optimizers, datasets, sampler and checkpoints: everything a
training run needs in one process. `nnps.worker` and `nnps.cluster` put these same pieces
behind Ray actors; nothing here imports Ray or Typer, so the math can be read, tested and
timed on its own.
"""
