"""Installs ``daisy_upstream.pth`` beside the package: the start-up hook that lets s3prl's own
entry points (``python -m s3prl.run_downstream -u daisy_hubert``) find the plugin.
Everything else is in setup.cfg."""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = Path("daisy_upstream") / "resources" / "daisy_upstream.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [str(Path(self.build_lib) / PTH.name)]


setup(cmdclass={"build_py": build_py_with_pth})
