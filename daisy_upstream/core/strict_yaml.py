"""YAML as ``yaml.safe_load`` reads it, except that a key given twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word (``rho: 0.7`` and, further down,
``rho: 1.0`` give 1.0), so a config edited by hand can say two things; this loader names the
key and both lines instead.
"""

from __future__ import annotations

from typing import IO, Any, Union

import yaml

__all__ = ["DuplicateKey", "load_unique"]


class DuplicateKey(ValueError):
    """A mapping of the YAML gives one key twice."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a mapping with a repeated key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor': merged, not a key of its own
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise DuplicateKey(
                    f"{self.name}: key {key!r} is given twice (lines {first} and "
                    f"{key_node.start_mark.line + 1}); keep one"
                )
        return super().construct_mapping(node, deep)


def load_unique(stream: Union[str, IO[str]]) -> Any:
    """``yaml.safe_load(stream)``, refusing a key given twice in one mapping (:class:`DuplicateKey`)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
