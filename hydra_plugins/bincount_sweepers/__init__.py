"""bincount's Hydra sweeper plugins (``tuner=optuna``, ``tuner=sagemaker``).

Hydra 1.3 finds plugins by scanning the ``hydra_plugins`` namespace package, and instantiates
a sweeper only from a class that lives under it; it imports this module for every app it
starts, so it stays light: the backends are imported when a sweep is built.
"""
