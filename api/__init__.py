"""nnps from Python, as in a notebook: the CLI's train, evaluate and predict as functions.

    import nnps
    model = nnps.train("measures.csv", label="kind", hidden=[16], epochs=20, lr=0.5, workers=0)
    model.evaluate().accuracy          # the run's own test rows
    model.predict("new.csv")           # class names, one per row
    model = nnps.load("runs/measures") # a run directory or a checkpoint
"""

from nnps.model import Model, load, train

__all__ = ["Model", "load", "train"]
