"""The launchers' configs, registered with Hydra's ConfigStore when Hydra scans its plugins, so
``hydra/launcher=inprocess|isolated`` is an option of every Hydra app in this environment."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class InProcessLauncherConf:
    _target_: str = "hydra_plugins.hypermoe_launcher.launchers.InProcessLauncher"


@dataclass
class IsolatedLauncherConf:
    _target_: str = "hydra_plugins.hypermoe_launcher.launchers.IsolatedLauncher"
    max_parallel: int = 1  # jobs (processes) running at once


_STORE = ConfigStore.instance()
_STORE.store(group="hydra/launcher", name="inprocess", node=InProcessLauncherConf, provider="hypermoe_launcher")
_STORE.store(group="hydra/launcher", name="isolated", node=IsolatedLauncherConf, provider="hypermoe_launcher")
