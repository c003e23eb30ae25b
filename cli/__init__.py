"""nnps.cli: the Typer app, one thin command per verb.

Commands parse flags into the project's own types (`TrainConfig`, paths), call into
`nnps.cluster` and `nnps.core`, and turn the project's errors into one line on stderr
and exit code 1 (`errors.handle_errors`).
"""
