"""The experiments' run error, in a module of its own so that the runner and the checkpoint
checks (:mod:`experiments.checkpoint_checks`) share it without importing each other."""


class RunError(RuntimeError):
    """A run directory or checkpoint that cannot be used as asked; the message says why and
    what to do instead."""
