"""Imported only as `lifelong.operator` (see README.md in this folder)."""

if __name__ != "lifelong.operator":
    raise ImportError(f"the folder operator/ is lifelong.operator, not {__name__!r}")
