"""Imported only as `lifelong.trainers` (see README.md in this folder)."""

if __name__ != "lifelong.trainers":
    raise ImportError(f"the folder trainers/ is lifelong.trainers, not {__name__!r}")
