"""Installs ``daisy_upstream.pth`` beside the package: the start-up hook that lets s3prl's own
entry points (``python -m s3prl.run_downstream -u daisy_hubert``) find the plugin; and a copy
of the repository's ``s3prl_configs/`` inside the package (``daisy_upstream.plugin.s3prl_configs``
finds it). Everything else is in setup.cfg."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = Path("daisy_upstream") / "resources"
TOP_LEVEL = [RESOURCES / "daisy_upstream.pth", RESOURCES / "_daisy_upstream_hook.py"]
CONFIGS = Path("s3prl_configs")


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        for path in TOP_LEVEL:
            self.copy_file(str(path), str(Path(self.build_lib) / path.name), preserve_mode=0)
        self.copy_tree(str(CONFIGS), str(Path(self.build_lib) / "daisy_upstream" / CONFIGS), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        configs = [Path(self.build_lib) / "daisy_upstream" / p for p in CONFIGS.rglob("*") if p.is_file()]
        return (
            super().get_outputs(include_bytecode)
            + [str(Path(self.build_lib) / p.name) for p in TOP_LEVEL]
            + [str(p) for p in configs]
        )


setup(cmdclass={"build_py": build_py_with_pth})
