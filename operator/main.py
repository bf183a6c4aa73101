"""Entry point of `lifelong operator`."""

from __future__ import annotations

import argparse
import sys


def main(args: argparse.Namespace) -> int:
    """Run the operator (not yet implemented: it says so and fails rather than pretend)."""
    print("lifelong: the operator is not yet implemented in this version.", file=sys.stderr)
    return 2
