"""Start-up hook of daisy_upstream (installed at the top of site-packages with daisy_upstream.pth).

It imports nothing at start-up. The first time any program imports ``s3prl`` (or s3prl's
``run_downstream.py``, run as a file, imports ``huggingface_hub``, which it does first), it imports
``daisy_upstream``, whose post-import hooks then register the DAISY upstreams in ``s3prl.hub``
and the DAISY featurizer in s3prl's runner. Off with ``DAISY_UPSTREAM_AUTOLOAD=0``.
"""

import os
import sys


def _running_run_downstream_file():
    # 'python .../s3prl/run_downstream.py': it imports huggingface_hub before s3prl, and the
    # plugin's hook for huggingface_hub (integration/compat.py) must see that import
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.basename(script) == "run_downstream.py" and os.path.basename(os.path.dirname(script)) == "s3prl"


class _OnS3prlImport:
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "s3prl" or (fullname == "huggingface_hub" and _running_run_downstream_file()):
            sys.meta_path.remove(self)
            import daisy_upstream  # noqa: F401  (installs the plugin's post-import hooks)
            from daisy_upstream.integration.plugin import hooked_spec

            return hooked_spec(fullname, path)  # this import too goes through them
        return None


def install():
    if os.environ.get("DAISY_UPSTREAM_AUTOLOAD", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if "s3prl" in sys.modules:
        import daisy_upstream  # noqa: F401
    elif not any(isinstance(f, _OnS3prlImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _OnS3prlImport())
