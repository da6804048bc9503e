"""The process side of the code sandbox: builds it and runs one program in it.

server/sandbox.py starts this file as root with ``python -I -S sandbox_init.py
CONFIG`` (the program's source on stdin, CONFIG a dict in ``marshal`` format,
hex). It is a script, not a module of the server: standard library only,
imported by nothing, so it starts in ~25 ms (importing asyncio alone costs
120 ms) and runs before any isolation with nothing of the server or its venv
loaded. ``marshal`` rather than ``json`` both ways: json imports ``re``, which
would add ~15 ms to every run.

Three processes, each with one job:

* the launcher (this process, in the host's namespaces): unshares new mount,
  pid, network, ipc and uts namespaces, forks the init and waits for it. On
  SIGTERM (the server's wall clock, an output cap, a cancelled request) it
  SIGKILLs the init; it exits only once the init has been reaped, and the
  kernel reaps the init only after every process of its pid namespace is
  gone, so "the launcher exited" means "nothing of the run is left".
* the init (pid 1 of the new pid namespace, still root): builds a root on a
  tmpfs with read-only binds of /usr and the interpreter, an empty tmpfs work
  folder, a /proc that shows only the run's own processes, and forks
* the program: new session, chroot, rlimits, every capability dropped, the
  run's own uid and gid, no_new_privs, then ``python -I -S -u main.py`` with
  a fixed environment. When it exits, the init reports how (a marshalled
  dict on the status fd) and exits, which kills whatever the program left behind,
  setsid'd or not.

The launcher and the init carry a backstop timer (wall + BACKSTOP_S), so a
run ends even if the server dies without killing it; the launcher also dies
with the server (PDEATHSIG), and the init with the launcher.
"""
from __future__ import annotations

import ctypes
import marshal
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
CAP_LAST = 63  # PR_CAPBSET_DROP answers EINVAL past the kernel's last capability

# Where the new root is built, inside the private mount namespace (hiding the
# host's /tmp there only), and entered with chroot.
ROOT = "/tmp"
BACKSTOP_S = 3.0
DEVICES = ("null", "zero", "full", "random", "urandom")
# What the dynamic loader and Python's stdlib read from /etc; nothing else of it.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def _prctl(option: int, arg: int) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


# ---------------------------------------------------------------- the launcher

def main() -> None:
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)  # the program must not be able to forge its own status
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != cfg["parent_pid"]:  # the server died before the line above
        os._exit(1)
    code = sys.stdin.buffer.read()
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    except OSError as exc:  # not root (or namespaces forbidden): the server says so, with this
        _report(status_fd, {"error": str(exc)})
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_BLOCK, TERMINATING)  # no kill order lost between fork and handler
    pid = os.fork()
    if pid == 0:
        _init(cfg, code, status_fd)  # never returns
    _launcher_wait(pid, cfg["wall"] + BACKSTOP_S)


def _launcher_wait(init_pid: int, backstop: float) -> None:
    def kill_init(*_: object) -> None:
        try:
            os.kill(init_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for sig in (*TERMINATING, signal.SIGALRM):
        signal.signal(sig, kill_init)
    signal.setitimer(signal.ITIMER_REAL, backstop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATING)
    _, status = os.waitpid(init_pid, 0)  # Python retries after a handler ran (PEP 475)
    os._exit(0 if os.waitstatus_to_exitcode(status) == 0 else 1)


# ---------------------------------------------------------------- the init (pid 1)

def _init(cfg: dict, code: bytes, status_fd: int) -> None:
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        for sig in TERMINATING:
            signal.signal(sig, signal.SIG_DFL)
        # pid 1 ignores signals it has no handler for: the backstop needs one.
        signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
        signal.setitimer(signal.ITIMER_REAL, cfg["wall"] + BACKSTOP_S)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, TERMINATING)
        hostname = b"sandbox"
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
        _build_root(cfg)
        _write_program(code, cfg["uid"], cfg["gid"])
        child = os.fork()
        if child == 0:
            _exec_program(cfg, status_fd)  # never returns
        report = _reap_until(child)
    except BaseException as exc:  # any failure is the report
        report = {"error": f"{type(exc).__name__}: {exc}"}
    _report(status_fd, report)
    os._exit(0)


def _reap_until(child: int) -> dict:
    """Reap every process that ends (orphans come to pid 1) until the program does."""
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid == child:
            break
    report: dict = {"cpu": round(usage.ru_utime + usage.ru_stime, 3), "max_rss_kb": usage.ru_maxrss}
    if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
    else:
        report["exit"] = os.WEXITSTATUS(status)
    return report


def _report(status_fd: int, report: dict) -> None:
    try:
        os.write(status_fd, marshal.dumps(report))
    except OSError:
        pass


def _build_root(cfg: dict) -> None:
    """A root with nothing writable but /work: read-only binds of the system
    directories and the interpreter, a few /etc files, five devices, a /proc of
    this pid namespace only (hidepid: not even pid 1), an empty read-only /tmp."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    _mount("tmpfs", ROOT, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    for path in cfg["binds"]:
        _bind_ro(path, ROOT + path)
    for name in ETC_FILES:
        _bind_ro(f"/etc/{name}", f"{ROOT}/etc/{name}")
    _write_etc(cfg["uid"], cfg["gid"])
    for name in DEVICES:
        _bind_ro(f"/dev/{name}", f"{ROOT}/dev/{name}", nodev=False)
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{fd}", f"{ROOT}/dev/{name}")
    os.symlink("/proc/self/fd", f"{ROOT}/dev/fd")
    os.makedirs(f"{ROOT}/proc", 0o555, exist_ok=True)
    _mount("proc", f"{ROOT}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    os.makedirs(f"{ROOT}/tmp", 0o755, exist_ok=True)
    os.makedirs(f"{ROOT}/work", 0o700)
    _mount("tmpfs", f"{ROOT}/work", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={cfg['work_bytes']},nr_inodes=4096,mode=0700,uid={cfg['uid']},gid={cfg['gid']}")
    _mount(None, ROOT, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind_ro(source: str, target: str, *, nodev: bool = True) -> None:
    """``source`` at ``target``, read-only; a symlink is copied (/bin -> usr/bin), a missing path skipped.

    Not recursive: a mount below ``source`` shows as an empty folder instead of
    bringing its own (possibly writable) flags along.
    """
    if os.path.islink(source):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.symlink(os.readlink(source), target)
        return
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    elif os.path.exists(source):
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    else:
        return
    _mount(source, target, None, MS_BIND)
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (MS_NODEV if nodev else 0)
    _mount(None, target, None, flags)


def _write_etc(uid: int, gid: int) -> None:
    """passwd and group naming the run's uid (getpass, pwd, ``id`` work), hosts for localhost."""
    files = {
        "passwd": f"root:x:0:0:root:/:/usr/sbin/nologin\nsandbox:x:{uid}:{gid}:sandbox:/work:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nsandbox:x:{gid}:\n",
        "hosts": "127.0.0.1 localhost sandbox\n::1 localhost\n",
    }
    os.makedirs(f"{ROOT}/etc", 0o755, exist_ok=True)
    for name, text in files.items():
        with open(f"{ROOT}/etc/{name}", "w") as fh:
            fh.write(text)


def _write_program(code: bytes, uid: int, gid: int) -> None:
    path = f"{ROOT}/work/main.py"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(code)
    os.chown(path, uid, gid)


# ---------------------------------------------------------------- the program

def _exec_program(cfg: dict, status_fd: int) -> None:
    try:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # ignored by this Python, and an ignore survives exec
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        os.chroot(ROOT)
        os.chdir("/work")
        _set_limits(cfg["limits"])
        for cap in range(CAP_LAST + 1):  # even a setuid binary could not get a capability back
            _prctl(PR_CAPBSET_DROP, cap)
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])  # clears every remaining capability
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
        python = cfg["python"]
        # -u: what the program printed before a kill is not lost in a buffer.
        os.execve(python, [python, "-I", "-S", "-u", "main.py"], cfg["env"])
    except BaseException as exc:  # reported, then this process ends
        _report(status_fd, {"error": f"{type(exc).__name__}: {exc}"})
    os._exit(127)


def _set_limits(limits: dict) -> None:
    """Soft CPU limit sends SIGXCPU (Python dies of it), the hard one a second later SIGKILL."""
    pairs = {
        resource.RLIMIT_CPU: (limits["cpu"], limits["cpu"] + 1),
        resource.RLIMIT_AS: (limits["as"],) * 2,
        resource.RLIMIT_NPROC: (limits["nproc"],) * 2,
        resource.RLIMIT_FSIZE: (limits["fsize"],) * 2,
        resource.RLIMIT_NOFILE: (limits["nofile"],) * 2,
        resource.RLIMIT_CORE: (0, 0),  # core_pattern may be a pipe to a host helper
        resource.RLIMIT_MEMLOCK: (0, 0),
        resource.RLIMIT_MSGQUEUE: (0, 0),
    }
    for which, pair in pairs.items():
        resource.setrlimit(which, pair)


if __name__ == "__main__":
    main()
