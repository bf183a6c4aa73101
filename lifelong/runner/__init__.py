"""The local runner behind `lifelong run`: the lifecycle engine driving each stage as a local
process, with progress in the terminal and a report at the end."""
