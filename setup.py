"""Installs ``daisy_upstream.pth`` beside the package: the start-up hook that lets s3prl's own
entry points (``python -m s3prl.run_downstream -u daisy_hubert``) find the plugin.
Everything else is in setup.cfg."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = Path("daisy_upstream") / "resources"
TOP_LEVEL = [RESOURCES / "daisy_upstream.pth", RESOURCES / "_daisy_upstream_hook.py"]


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        for path in TOP_LEVEL:
            self.copy_file(str(path), str(Path(self.build_lib) / path.name), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / p.name) for p in TOP_LEVEL]


setup(cmdclass={"build_py": build_py_with_pth})
