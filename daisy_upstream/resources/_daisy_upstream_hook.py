"""Start-up hook of daisy_upstream (installed at the top of site-packages with daisy_upstream.pth).

It imports nothing at start-up. The first time any program imports ``s3prl``, it imports
``daisy_upstream``, whose post-import hooks then register the DAISY upstreams in ``s3prl.hub``
and the DAISY featurizer in s3prl's runner. Off with ``DAISY_UPSTREAM_AUTOLOAD=0``.
"""

import os
import sys


class _OnS3prlImport:
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "s3prl":
            sys.meta_path.remove(self)
            import daisy_upstream  # noqa: F401  (installs the plugin's post-import hooks)
        return None


def install():
    if os.environ.get("DAISY_UPSTREAM_AUTOLOAD", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if "s3prl" in sys.modules:
        import daisy_upstream  # noqa: F401
    elif not any(isinstance(f, _OnS3prlImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _OnS3prlImport())
