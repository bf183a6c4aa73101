"""Run one container's process in private Linux namespaces, with its volumes mounted.

The node agent starts `python -I -S sandbox.py SPEC.json` for each container it runs. This
program, standard library only:

1. asks to be SIGKILLed if the agent dies, and unshares a mount, a PID and a UTS namespace;
2. forks the container's first process, which becomes PID 1 of the new PID namespace, so that
   when it ends (or is killed) the kernel kills every process it left behind;
3. in that child, builds a root of bind mounts of the host's top-level folders on a private
   tmpfs, mounts each volume at its `mountPath` inside it (creating missing mount points on
   private tmpfs copies of the folders above them, never on the host), chroots into it, mounts
   a fresh /proc, sets the hostname and working folder and execs the command;
4. in the parent, forwards termination signals to the child and exits with its status
   (128 + N after signal N, as container runtimes report). The agent starts this program with
   those signals blocked (`FORWARDED_SIGNALS`), so that one sent while it starts waits for the
   child instead of killing the sandbox.

Only this process tree sees the mounts: `/var/run/secrets/kubernetes.io/serviceaccount/token`
exists for the container and not for the host. The host's files stay visible and writable
through the bind mounts, because a pod here shares the machine's filesystem by design.

When the container cannot start (a mount fails, the command does not exist) the reason goes to
`startErrorPath` and the exit status is 128; the agent reports it as reason `StartError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
START_ERROR_STATUS = 128
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """The container could not be set up; the message is reported as its start error."""


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(errno)}")


def _bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    result = _libc.mount(_bytes(source), _bytes(target), _bytes(fstype), flags, None)
    _check(result, f"mount {source or fstype} on {target}")


def die_with_parent() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# -- building the root -------------------------------------------------------------------------


def replicate_entry(source: str, target: str) -> None:
    """Make `target` show `source`: a symlink is copied, anything else is bind-mounted."""
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        os.mkdir(target)
        mount(source, target, None, MS_BIND | MS_REC)
    else:
        with open(target, "w"):
            pass
        mount(source, target, None, MS_BIND)


def shadow(directory: str, host_directory: str) -> None:
    """Cover `directory` with a private tmpfs that shows every entry of `host_directory`.

    New entries made there afterwards (mount points) exist in this mount namespace only.
    """
    mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV)
    for name in sorted(os.listdir(host_directory)):
        replicate_entry(os.path.join(host_directory, name), os.path.join(directory, name))


def build_root(root: str) -> None:
    """Shadow the host's `/` at `root`, then drop the copy of `root` found inside it."""
    shadow(root, "/")
    nested = os.path.join(root, root.lstrip("/"))
    if os.path.ismount(nested):
        _check(_libc.umount2(nested.encode(), MNT_DETACH), f"umount {nested}")


def resolve_in_root(root: str, path: str) -> tuple[str, list[str]]:
    """Resolve `path` as seen from `root`: the deepest existing folder and the missing rest.

    Symlinks are followed as the chrooted process would follow them (an absolute target
    starts again at `root`).
    """
    parts = [part for part in path.split("/") if part not in ("", ".")]
    current, hops = root, 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            current = current if current == root else os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise SandboxError(f"too many symbolic links resolving {path}")
            link = os.readlink(candidate)
            current = root if link.startswith("/") else current
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
        elif os.path.lexists(candidate):
            current = candidate
        else:
            return current, [name, *parts]
    return current, []


class PrivateAreas:
    """Where this container may create mount points without touching the host's files.

    A shadowed folder and a folder made on a private tmpfs are private themselves, but the
    entries they show are binds of the host's; a volume is private all the way down.
    """

    def __init__(self, root: str) -> None:
        self.folders = {root}
        self.volumes: list[str] = []

    def __contains__(self, path: str) -> bool:
        if path in self.folders:
            return True
        return any(path == v or path.startswith(v.rstrip("/") + "/") for v in self.volumes)


def make_mount_point(root: str, target: str, is_dir: bool, private: PrivateAreas) -> str:
    """Return the path under `root` where `target` is mounted, creating it if missing."""
    existing, missing = resolve_in_root(root, target)
    if not missing:
        return existing
    if existing not in private:
        shadow(existing, "/" + os.path.relpath(existing, root))
        private.folders.add(existing)
    for name in missing[:-1]:
        existing = os.path.join(existing, name)
        os.makedirs(existing, exist_ok=True)
        private.folders.add(existing)
    point = os.path.join(existing, missing[-1])
    if is_dir:
        os.mkdir(point)
    else:
        with open(point, "w"):
            pass
    return point


def mount_volume(root: str, spec: dict[str, Any], private: PrivateAreas) -> None:
    """Bind `spec["source"]` at `spec["target"]` inside `root`."""
    source, target = spec["source"], spec["target"]
    if not os.path.exists(source):
        raise SandboxError(f"the source of mount {target} does not exist: {source}")
    is_dir = os.path.isdir(source)
    point = make_mount_point(root, target, is_dir, private)
    mount(source, point, None, MS_BIND | (MS_REC if is_dir else 0))
    if spec.get("readOnly"):
        mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    private.volumes.append(point)


def enter_container(spec: dict[str, Any]) -> None:
    """In the new namespaces: mount everything, chroot, then exec the command."""
    root = spec["rootDir"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    build_root(root)
    private = PrivateAreas(root)
    for volume in sorted(spec["mounts"], key=lambda m: m["target"].count("/")):
        mount_volume(root, volume, private)

    os.chroot(root)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    socket.sethostname(spec["hostname"])
    working_dir = spec.get("workingDir") or "/"
    os.makedirs(working_dir, exist_ok=True)
    os.chdir(working_dir)
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as error:
        raise SandboxError(f"exec {argv[0]!r}: {error.strerror}") from error


# -- the two processes -------------------------------------------------------------------------


def run_child(spec: dict[str, Any], error_fd: int) -> None:
    die_with_parent()
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
    try:
        enter_container(spec)
    except (SandboxError, OSError) as error:
        os.write(error_fd, str(error).encode())
    os._exit(START_ERROR_STATUS)


class Forwarder:
    """Passes termination signals on to the container's first process.

    The agent starts this program with those signals blocked, so one sent early stays pending
    until the child exists and `start` unblocks it, instead of killing this process.
    """

    def __init__(self) -> None:
        self.child = 0
        for signum in FORWARDED_SIGNALS:
            signal.signal(signum, self.forward)

    def forward(self, signum: int, frame: object) -> None:
        if self.child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signum)

    def start(self, child: int) -> None:
        self.child = child
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)


def supervise(child: int) -> int:
    """Wait for the child to end; return its status the way container runtimes do."""
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        spec = json.load(handle)
    error_fd = os.open(spec["startErrorPath"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    die_with_parent()
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS), "unshare")
    except SandboxError as error:
        os.write(error_fd, str(error).encode())
        return START_ERROR_STATUS
    forwarder = Forwarder()
    child = os.fork()
    if child == 0:
        run_child(spec, error_fd)
    os.close(error_fd)
    forwarder.start(child)
    return supervise(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
