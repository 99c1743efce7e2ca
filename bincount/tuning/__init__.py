"""Hyperparameter search: one search space (``search_space`` in conf/tune.yaml), two backends.

- ``tuner=optuna``: bincount's own Hydra sweeper over Optuna's ask/tell API, with
  per-epoch pruning, failure reasons and a results summary; each trial is one ``train(cfg)``.
- ``tuner=sagemaker``: a SageMaker HyperparameterTuner over the SageMaker launcher's estimator.
"""
