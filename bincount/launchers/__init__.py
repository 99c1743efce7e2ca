"""Where ``train(cfg)`` runs: in this process (``bincount.train.train``), or in a SageMaker
training job (``sagemaker.run_job``); ``scripts/train.py`` chooses by ``launcher.name``.

``container`` is the job's side (SageMaker's arguments -> Hydra overrides); the rest submits:
``settings`` (checked ``cfg.launcher``), ``capacity`` (instance type, image, quota),
``hyperparameters`` (overrides -> hyperparameters), ``bundle`` (the staged source),
``estimator`` and ``debugger`` (the SDK's PyTorch estimator), ``results`` (model and metrics
of a finished job).
"""
