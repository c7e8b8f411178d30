"""The layer tar format as the OCI image spec defines it: shared by the layer index and the
rebuild engine, so both read a layer the same way (one place for names and markers)."""

from __future__ import annotations

import posixpath

WHITEOUT = ".wh."
"""`.wh.NAME` hides NAME (and everything below it) in the layers below."""
OPAQUE = ".wh..wh..opq"
"""In directory D, hides every lower child of D."""
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def normalize(name: str) -> str:
    """A tar member name as a clean relative path (`./etc/` → `etc`, `/` → ``)."""
    name = name.strip()
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if not name or name == ".":
        return ""
    name = posixpath.normpath(name)
    return "" if name == "." else name
