"""Every route a config key can take is validated (issue 18): ``-g`` YAML, ``model_config``
mapping, hub keyword arguments and ``S3PRLUpstream``'s ``extra_conf`` (s3prl 0.4.18
``nn/upstream.py``: ``getattr(hub, name)(refresh=..., ckpt=..., **extra_conf)``); an unknown
key is a ValueError naming it, never swallowed by s3prl's ``UpstreamBase(**kwargs)``."""

from __future__ import annotations

import pytest

from daisy_upstream.integration.hubconf import daisy_hubert_local


def test_unknown_key_on_every_route_is_named(tiny_ckpt, tmp_path):
    yaml_path = tmp_path / "up.yaml"
    yaml_path.write_text("rho: 0.9\nstratgy: threshold\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stratgy'\]"):
        daisy_hubert_local(str(tiny_ckpt), model_config=str(yaml_path))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['stratgy'\]"):
        daisy_hubert_local(str(tiny_ckpt), model_config={"stratgy": "threshold"})
    with pytest.raises(ValueError, match=r"unknown upstream keyword\(s\) \['stratgy'\]"):
        daisy_hubert_local(str(tiny_ckpt), stratgy="threshold")
    with pytest.raises(ValueError, match=r"unknown upstream keyword\(s\) \['stratgy'\]"):
        daisy_hubert_local(str(tiny_ckpt), model_config=str(yaml_path), stratgy="threshold")
    # a known key with a bad value, by keyword, over a YAML
    yaml_path.write_text("rho: 0.9\n")
    with pytest.raises(ValueError, match="rho"):
        daisy_hubert_local(str(tiny_ckpt), model_config=str(yaml_path), rho=7.0)
    up = daisy_hubert_local(str(tiny_ckpt), model_config=str(yaml_path), tau=0.5)
    assert up.config.rho == 0.9 and up.tau == 0.5


def test_s3prl_upstream_extra_conf_is_validated(tiny_ckpt):
    from s3prl.nn import S3PRLUpstream

    import daisy_upstream.integration.plugin  # noqa: F401 - registers the hub entries with s3prl

    with pytest.raises(ValueError, match=r"unknown upstream keyword\(s\) \['thau'\]"):
        S3PRLUpstream("daisy_hubert_local", path_or_url=str(tiny_ckpt), extra_conf={"thau": 0.5})
    upstream = S3PRLUpstream("daisy_hubert_local", path_or_url=str(tiny_ckpt), extra_conf={"tau": 0.5})
    assert upstream.upstream.tau == 0.5
