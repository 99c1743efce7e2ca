"""``launcher.debugger`` -> the SageMaker estimator's Debugger arguments.

Off (the default), the job gets no Debugger hook, no Debugger or profiler rules and no
profiler: explicitly so, because left unset the SDK attaches a default hook and profiler in
every region that has Debugger. On, it gets SageMaker's built-in rules, a
``DebuggerHookConfig`` that the smdebug callback (``bincount.callbacks.smdebug_hook``) picks up
in the container, and system monitoring with the ``ProfilerReport`` rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bincount.aws import quiet_sdk
from bincount.errors import BincountError

KEY = "launcher.debugger"


def _plain(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _rule_config(name: str, key: str, profiler: bool) -> Any:
    quiet_sdk()
    from sagemaker.debugger import rule_configs

    factory = getattr(rule_configs, name, None)
    if profiler:
        valid = [n for n in dir(rule_configs.profiler_rules.rules)
                 if n[0].isupper() and n != "ProfilerRuleBase"]
        ok = isinstance(factory, type) and name in valid
    else:
        valid = [n for n in dir(rule_configs) if n[0].islower() and not n.startswith("_")
                 and callable(getattr(rule_configs, n)) and n not in ("get_collection",
                                                                       "is_valid_action_object")]
        ok = callable(factory) and not isinstance(factory, type) and name in valid
    if not ok:
        raise BincountError(
            f"{KEY}.{key}.{name}: not a SageMaker built-in "
            f"{'profiler ' if profiler else ''}rule; expected one of {', '.join(sorted(valid))}"
        )
    return factory


def debugger_kwargs(debugger: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``sagemaker.pytorch.PyTorch(...)`` (any SDK v2 Estimator)."""
    cfg = _plain(debugger)
    if not cfg.get("enabled", False):
        return {"debugger_hook_config": False, "disable_profiler": True}

    quiet_sdk()
    from sagemaker.debugger import (
        CollectionConfig,
        DebuggerHookConfig,
        ProfilerConfig,
        ProfilerRule,
        Rule,
        rule_configs,
    )

    hook = cfg.get("hook") or {}
    hook_collections = {
        c: CollectionConfig(name=c, parameters={k: str(v) for k, v in (p or {}).items()} or None)
        for c, p in (hook.get("collections") or {}).items()
    }
    stop_on = set(cfg.get("stop_training_on") or [])
    rules: list[Any] = []
    for name, params in (cfg.get("rules") or {}).items():
        if params is None:  # launcher.debugger.rules.<name>=null switches one off
            continue
        base = _rule_config(name, "rules", profiler=False)()
        actions = (rule_configs.ActionList(rule_configs.StopTraining())
                   if name in stop_on else None)
        # A rule's own collection (e.g. "losses" every 500 steps) would reach the job beside
        # the hook's collection of the same name, in an order that varies by run: the hook's wins.
        collections = [
            hook_collections.get(c["CollectionName"])
            or CollectionConfig(name=c["CollectionName"], parameters=c.get("CollectionParameters"))
            for c in base.get("CollectionConfigurations", [])
        ]
        rules.append(Rule.sagemaker(
            base, rule_parameters={k: str(v) for k, v in params.items()} or None,
            collections_to_save=collections or None, actions=actions,
        ))
    active = {name for name, params in (cfg.get("rules") or {}).items() if params is not None}
    if stop_on - active:
        raise BincountError(
            f"{KEY}.stop_training_on: {sorted(stop_on - active)} are not switched on in {KEY}.rules"
        )
    for name, params in (cfg.get("profiler_rules") or {}).items():
        if params is None:
            continue
        rules.append(ProfilerRule.sagemaker(_rule_config(name, "profiler_rules", True)(**params)))

    hook_config = DebuggerHookConfig(
        s3_output_path=hook.get("s3_output_path"),  # None: the estimator's output_path
        hook_parameters={k: str(v) for k, v in (hook.get("parameters") or {}).items()} or None,
        collection_configs=list(hook_collections.values()) or None,
    )
    profiler = cfg.get("profiler") or {}
    profiler_config = ProfilerConfig(
        s3_output_path=profiler.get("s3_output_path"),
        system_monitor_interval_millis=profiler.get("system_monitor_interval_millis"),
    )
    return {"rules": rules, "debugger_hook_config": hook_config,
            "profiler_config": profiler_config}


def debugger_requirements(debugger: DictConfig | Mapping[str, Any] | None) -> list[str]:
    """Extra lines for the container's requirements.txt (none when Debugger is off)."""
    cfg = _plain(debugger)
    return list(cfg.get("requirements") or []) if cfg.get("enabled", False) else []
