"""How daisy_upstream gets into an unmodified s3prl.

* :func:`register_hub` adds ``daisy_hubert`` and, per family (hubert, wav2vec2, data2vec,
  wavlm), ``daisy_<family>_local`` and ``daisy_<family>_custom`` to ``s3prl.hub`` (so ``-u``, ``hub.options()`` and
  ``s3prl.nn.upstream.S3PRLUpstream`` find them) and makes a misspelled name an error that
  lists the closest names.
* :func:`patch_runner` makes s3prl's runner build :class:`DaisyFeaturizer` (which behaves
  exactly like the stock one for any other upstream) and applies :mod:`daisy_upstream.integration.compat`.
* :mod:`daisy_upstream.integration.schedules` adds ``multistep_schedule`` to ``s3prl.schedulers``
  (a decay at fixed steps, so that a training extended by resuming stays exact).
* :mod:`daisy_upstream.integration.s3prl_nn` does the same for s3prl's newer API: the names
  ``s3prl.nn.Featurizer``, ``s3prl.nn.upstream.Featurizer`` and ``s3prl.problem.base.Featurizer``
  (problem recipes; ESPnet imports it from ``s3prl.nn``) become its DAISY-aware subclass.
* :func:`install` does both now for modules already imported and, lazily, through a
  post-import hook for modules imported later: importing ``daisy_upstream`` costs no s3prl
  import. ``import daisy_upstream`` calls it; the ``daisy_upstream.pth`` start-up hook imports
  daisy_upstream when a program first imports s3prl, unless ``DAISY_UPSTREAM_AUTOLOAD=0``.
* :func:`run_downstream` is the ``daisy-run-downstream`` console script: s3prl's own
  ``run_downstream.py`` run as ``__main__`` with exactly its arguments.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.abc
import importlib.machinery
import runpy
import sys
import types
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from daisy_upstream.integration import compat

__all__ = ["HUB_ENTRIES", "install", "patch_runner", "register_hub", "run_downstream", "s3prl_configs"]

HUB_ENTRIES = ("daisy_hubert",) + tuple(
    f"daisy_{family}_{twin}" for family in ("hubert", "wav2vec2", "data2vec", "wavlm") for twin in ("local", "custom")
)


def register_hub(hub: types.ModuleType) -> None:
    """Add the DAISY entries to ``s3prl.hub`` (idempotent)."""
    from daisy_upstream.integration import hubconf

    for name in HUB_ENTRIES:
        setattr(hub, name, getattr(hubconf, name))
    if not hasattr(hub, "__getattr__"):

        def __getattr__(name: str):
            if name.startswith("__"):
                raise AttributeError(name)
            options = hub.options()
            close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see s3prl.hub.options()"
            raise AttributeError(f"s3prl.hub has no upstream {name!r} (-u/--upstream){hint}")

        hub.__getattr__ = __getattr__


def patch_runner(runner: types.ModuleType) -> None:
    """Swap the runner's Featurizer for :class:`DaisyFeaturizer`; apply the compat shims; a
    runner whose config asks for exact resume gets it (:mod:`daisy_upstream.integration.exact_resume`)."""
    from daisy_upstream.core.featurizers import DaisyFeaturizer
    from daisy_upstream.integration import compat, exact_resume

    runner.Featurizer = DaisyFeaturizer
    compat.patch_runner_module(runner)
    exact_resume.install_when_asked(runner)


#: module s3prl imports -> (our module, its function applied to it right after the import)
_HOOKS: Dict[str, Tuple[str, str]] = {
    "s3prl.hub": (__name__, "register_hub"),
    "s3prl.downstream.runner": (__name__, "patch_runner"),
    "s3prl.schedulers": ("daisy_upstream.integration.schedules", "register_schedules"),
    "s3prl.nn.upstream": ("daisy_upstream.integration.s3prl_nn", "patch_nn_upstream"),
    "s3prl.nn": ("daisy_upstream.integration.s3prl_nn", "patch_featurizer_name"),
    "s3prl.problem.base": ("daisy_upstream.integration.s3prl_nn", "patch_featurizer_name"),
    "s3prl.downstream.voxceleb1.dataset": ("daisy_upstream.integration.compat", "key_voxceleb1_cache_by_dataset"),
    "daisy_upstream.core.precision": ("daisy_upstream.integration.compat", "guard_frozen_forward"),
    "huggingface_hub": ("daisy_upstream.integration.compat", "restore_hub_names"),
}


def _apply_hook(name: str, module: types.ModuleType) -> None:
    if name in _HOOKS:
        owner, function = _HOOKS[name]
        getattr(importlib.import_module(owner), function)(module)
    if name.startswith("s3prl.") and compat.s3prl_module_shims_needed():
        compat.after_s3prl_module(module)


class _AfterImport(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self.loader, self.name = loader, name

    def __getattr__(self, name: str):  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self.__dict__["loader"], name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _apply_hook(self.name, module)


def hooked_spec(fullname: str, path=None) -> Optional[importlib.machinery.ModuleSpec]:
    """The spec of one of :data:`_HOOKS`' modules, or of any s3prl module where this stack needs
    :mod:`~daisy_upstream.integration.compat`'s s3prl-wide shims (torchaudio >= 2.9), with a
    loader that applies its hooks right after it executes; None for any other module.

    Before an s3prl module is found (so also before ``-m s3prl.run_downstream`` runs, which
    ``runpy`` executes without ``exec_module``), :func:`compat.before_s3prl_module` runs.
    """
    s3prl_module = fullname.startswith("s3prl.")
    if s3prl_module:
        compat.before_s3prl_module()
    if fullname not in _HOOKS and not (s3prl_module and compat.s3prl_module_shims_needed()):
        return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, path)
    if spec is None or spec.loader is None:
        return None
    spec.loader = _AfterImport(spec.loader, fullname)
    return spec


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Puts :func:`hooked_spec` on ``sys.meta_path``."""

    def find_spec(self, fullname, path, target=None):
        return hooked_spec(fullname, path)


def install() -> None:
    """Register now where s3prl is imported, else when it is (idempotent, cheap).

    Raises:
        ImportError: neither s3prl distribution is installed (the line names the install).
    """
    compat.require_s3prl()
    for name, module in list(sys.modules.items()):
        if module is not None and (name in _HOOKS or name.startswith("s3prl.")):
            _apply_hook(name, module)
    if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def run_downstream(argv: Optional[Sequence[str]] = None) -> int:
    """``daisy-run-downstream``: s3prl's run_downstream with the plugin installed."""
    install()
    sys.argv = ["run_downstream.py", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    return 0


def s3prl_configs() -> Path:
    """The folder of task and upstream configs shipped with daisy_upstream.

    It is the repository's ``s3prl_configs/``: an installed package carries a copy inside
    itself (``setup.py`` puts it there), a source checkout uses the repository's own.

    Raises:
        FileNotFoundError: neither is there (a broken install).
    """
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "s3prl_configs", package.parent / "s3prl_configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"s3prl_configs/ is neither in {package} nor beside it; reinstall daisy_upstream "
        "('make install', or 'pip install .' from the repository)"
    )
