"""The container side of ``launcher=sagemaker``: SageMaker's arguments and ``SM_*`` variables
become Hydra overrides, so ``scripts/train.py`` composes the same config it composes locally.

The SageMaker training toolkit starts the entry point as ``python scripts/train.py --key value
...`` (one pair per hyperparameter, keys sorted), where each key is a Hydra override key the
launcher sent (``model.optimizer.lr``, ``++trainer.x``, ``~callbacks.y``, ``data``). Locations
come from the container: the data channel, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR`` (uploaded as
``output.tar.gz``), the checkpoint dir SageMaker syncs with ``checkpoint_s3_uri`` and the
TensorBoard dir it syncs with the TensorBoard output config. Under ``torchrun`` (the
``torch_distributed`` distribution) the trainer runs DDP over every process torchrun started.

This module imports neither the SageMaker SDK nor the toolkit: it runs inside the training
image with the project's own requirements only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from bincount.errors import BincountError
from bincount.overrides import override_key

# Set by the toolkit for the entry point (a JSON dump of the training environment).
TRAINING_ENV = "SM_TRAINING_ENV"
# The toolkit's base dir (/opt/ml on SageMaker; a temporary tree when simulated).
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
SAGEMAKER_BASE = "/opt/ml"
TRAIN_CHANNEL = "train"
# Relative to the base dir: SageMaker's defaults for checkpoint_local_path and the
# TensorBoard output config's LocalPath. The launcher sends the same paths under /opt/ml.
CHECKPOINT_SUBDIR = "checkpoints"
TENSORBOARD_SUBDIR = "output/tensorboard"

# The keys the container sets itself; hyperparameters with these keys are replaced.
CHECKPOINT_KEY = "paths.checkpoint_dir"
TENSORBOARD_KEY = "logger.tensorboard.save_dir"


def in_container(env: Mapping[str, str] | None = None) -> bool:
    return TRAINING_ENV in (os.environ if env is None else env)


def base_dir(env: Mapping[str, str]) -> str:
    return env.get(BASE_DIR_ENV, SAGEMAKER_BASE)


def checkpoint_dir(base: str = SAGEMAKER_BASE) -> str:
    return f"{base.rstrip('/')}/{CHECKPOINT_SUBDIR}"


def tensorboard_dir(base: str = SAGEMAKER_BASE) -> str:
    return f"{base.rstrip('/')}/{TENSORBOARD_SUBDIR}"


def args_to_overrides(args: Sequence[str]) -> list[str]:
    """``["--model.optimizer.lr", "0.1", "--~callbacks.x", ""]`` ->
    ``["model.optimizer.lr=0.1", "~callbacks.x"]``.

    Tokens that do not start with ``-`` are overrides already and pass unchanged, so the
    translation is idempotent (Lightning's DDP launcher restarts the script with its argv).
    """
    overrides: list[str] = []
    rest = list(args)
    while rest:
        token = rest.pop(0)
        if not token.startswith("-"):
            overrides.append(token)
            continue
        key = token[2:] if token.startswith("--") else token[1:]
        if not key:
            raise BincountError(f"container arguments: {token!r} is not a --key")
        if not rest:
            raise BincountError(f"container arguments: --{key} has no value")
        value = rest.pop(0)
        if key.startswith("~") and value == "":
            overrides.append(key)
        else:
            overrides.append(f"{key}={value}")
    return overrides


def distributed_overrides(env: Mapping[str, str]) -> list[str]:
    """Under torchrun with more than one process: DDP over all of them (Lightning reads the
    ranks from torchrun's variables; devices x num_nodes must equal the world size)."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return []
    local = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return [  # ``++``: strategy and num_nodes need not be in the trainer config
        "++trainer.strategy=ddp",
        f"++trainer.devices={local}",
        f"++trainer.num_nodes={world // local}",
    ]


def environment_overrides(env: Mapping[str, str]) -> list[str]:
    """Where the container's data, model, outputs, checkpoints and TensorBoard logs are."""
    base = base_dir(env)
    overrides = []
    channel = env.get(f"SM_CHANNEL_{TRAIN_CHANNEL.upper()}")
    if channel:
        overrides.append(f"paths.data_dir={channel}")
    overrides += [
        f"paths.output_dir={env.get('SM_OUTPUT_DATA_DIR', f'{base}/output/data')}",
        f"paths.model_dir={env.get('SM_MODEL_DIR', f'{base}/model')}",
        # ``++``: also valid when the user removed the callback or the logger.
        f"++{CHECKPOINT_KEY}={checkpoint_dir(base)}",
        f"++{TENSORBOARD_KEY}={tensorboard_dir(base)}",
    ]
    return overrides + distributed_overrides(env)


def container_overrides(args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The user's overrides (from the arguments) followed by the container's; a user override
    of a key the container sets is dropped."""
    own = environment_overrides(env)
    own_keys = {override_key(o) for o in own}
    user = [o for o in args_to_overrides(args) if override_key(o) not in own_keys]
    return user + own


def container_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``sys.argv`` as Hydra should see it: unchanged outside a SageMaker container."""
    env = os.environ if env is None else env
    if not in_container(env):
        return list(argv)
    return [argv[0], *container_overrides(argv[1:], env)]
