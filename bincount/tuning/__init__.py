"""Hyperparameter search: one search space (``search_space`` in conf/tune.yaml), two backends.

- ``tuner=optuna``: Hydra's Optuna sweeper, extended by :mod:`bincount.tuning.sweeper` with
  per-epoch pruning, failure reasons and a results summary; each trial is one ``train(cfg)``.
- ``tuner=sagemaker``: a SageMaker HyperparameterTuner over the SageMaker launcher's estimator.
"""
