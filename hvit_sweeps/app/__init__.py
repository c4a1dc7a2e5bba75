"""What the commands do, below the command line.

``cli.py`` parses a command's flags, calls one function here and prints what it
returns. Each module holds one family of commands: :mod:`~.options` (where a study
lives, and the command lines that point at it again), :mod:`~.training` (``train``,
``eval``), :mod:`~.sweeps` (``run``, ``worker``), :mod:`~.reading` (``show``,
``report``, ``studies``, ``ui``) and :mod:`~.best` (``best`` and its export, retrain
and confirmation). Nothing here imports torch, MLflow or Optuna when it is imported:
``--help`` stays fast.
"""
