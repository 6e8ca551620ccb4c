"""One cell of the BatchMixup paper: data, model, mixup strategies and the training loop.

Nothing in this package imports Ray or MLflow: a cell runs alone with
``python -m trainers.run_cell``; the orchestrator plugs tracking in through
:class:`trainers.loop.Reporter`.
"""
