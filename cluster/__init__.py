"""nnps.cluster: the parameter-server actor, the training driver, Ray connection, jobs.

`driver.run` is what `nnps train` calls: with `workers == 0` it runs the in-process path
of `nnps.core.training` and never imports Ray; otherwise it starts (or joins) Ray and
runs the same loop over a `ParameterServer` actor and `GradientWorker` actors.
"""
