"""The LD_PRELOAD shim's defences (issue 11, item 10): lying daemons, fork, a stalled helper.

- A reply's lengths are never trusted: ``hostile_fuse.c`` is a FUSE filesystem whose RECEIVE
  and PEEK replies claim more bytes than were asked for, than the message has, or than the
  buffer holds. The shim must fail those calls with EIO and copy nothing out of bounds;
  the programs also run under an AddressSanitizer build of the shim, which reports any
  overrun even where the result would look plausible. ``mq_sizes.c`` does the same on a
  real mqfs for many honest sizes, so the checks never reject a genuine reply.
- fork while another thread is inside the shim with its lock held: the child's next shim
  call must not deadlock (``fork_lock.c``).
- The interposed syscall() and fcntl() work while the shim is still setting itself up
  (``init_reentry.c``): glibc's functions are looked up by a constructor, not under
  pthread_once on those paths.

Programs that interpose on glibc functions the shim calls (sigaction, pthread_create,
getenv) are linked with -rdynamic so the shim's calls resolve to them: that is how they park
a thread at an exact point inside the shim, or re-enter it, without any sleeping.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.mounts import Mount, lazy_unmount, mount_point
from tests.support.paths import INCLUDE, ROOT
from tests.support.shim import build_c_program, shim_env, unique_queue_name
from tests.support.waiting import wait_until

HERE = Path(__file__).parent

TIMEOUT = 30  # a generous bound: each program finishes in well under a second when right

HOSTILE_SCENARIOS = [
    "recv-chunk-huge",
    "recv-chunk-over-asked",
    "recv-chunk-over-len",
    "recv-len-over-buffer",
    "recv-next-huge",
    "recv-next-over-asked",
    "recv-next-other-len",
    "recv-no-xfer",
    "peek-copied-huge",
    "peek-copied-over-asked",
    "peek-copied-over-len",
    "peek-next-huge",
    "peek-next-past-end",
    "peek-next-empty",
]


def compile_program(tmp_path: Path, name: str, *flags: str) -> Path:
    """tests/preload/NAME.c compiled into tmp_path."""
    return build_c_program(HERE / f"{name}.c", tmp_path, *flags)


@pytest.fixture(scope="session")
def asan_library(preload_library: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """LD_PRELOAD entries for the shim built with AddressSanitizer (its runtime first)."""
    runtime = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip("gcc has no AddressSanitizer runtime (libasan)")
    library = tmp_path_factory.mktemp("asan") / "libmqfs-preload-asan.so"
    subprocess.run(
        ["gcc", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-Wall",
         "-Wextra", "-Werror", "-fPIC", "-shared", "-fvisibility=hidden",
         "-I", INCLUDE, "-I", ROOT / "fastq", "-o", library,
         *sorted((ROOT / "preload").glob("*.c")), ROOT / "fastq" / "fastq.c",
         "-ldl", "-lpthread"],
        check=True,
    )  # fmt: skip
    entries = [runtime, str(library)]
    probe = subprocess.run(
        ["true"], env={**os.environ, "LD_PRELOAD": " ".join(entries)}, check=False
    )
    if probe.returncode != 0:
        pytest.skip("AddressSanitizer does not run here")
    return entries


@pytest.fixture(params=["plain", "asan"])
def shim(request: pytest.FixtureRequest, preload_library: Path) -> list[str]:
    """The shim as built for users, and the same sources under AddressSanitizer."""
    if request.param == "plain":
        return [str(preload_library)]
    entries: list[str] = request.getfixturevalue("asan_library")
    return entries


def shim_run(
    command: list[str | Path], shim: list[str], mount: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = shim_env(Path(shim[-1]), mount)
    env["LD_PRELOAD"] = " ".join(shim)
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    env.update(extra)
    try:
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command} hung for {TIMEOUT}s; output so far:\n{exc.stdout!r}")
    assert "AddressSanitizer" not in done.stderr, done.stderr
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("pkg-config") is None:
        pytest.skip("pkg-config is not installed")
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if flags.returncode != 0:
        pytest.skip("libfuse3's headers are not installed (apt install libfuse3-dev)")
    program = tmp_path_factory.mktemp("hostile") / "hostile_fuse"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I", INCLUDE,
         "-o", program, HERE / "hostile_fuse.c", *flags.stdout.split()],
        check=True,
    )  # fmt: skip
    return program


@pytest.fixture
def hostile_mount(hostile_server: Path) -> Iterator[Path]:
    """A mount of hostile_fuse, unmounted (and its server gone) afterwards."""
    with (
        mount_point("hostile-") as (path, log),
        log.open("w+") as errors,
        subprocess.Popen([hostile_server, path], stderr=errors) as server,
    ):
        try:

            def mounted() -> bool:
                if server.poll() is not None:
                    errors.seek(0)
                    pytest.fail(f"hostile_fuse exited ({server.returncode}): {errors.read()}")
                return os.path.ismount(path)

            wait_until(mounted, what="the hostile mount", timeout=10)
            yield path
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)  # its loop ends and it unmounts
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            if os.path.ismount(path):
                lazy_unmount(path)


def test_lying_lengths_are_eio_and_copy_nothing_out_of_bounds(
    tmp_path: Path, shim: list[str], hostile_mount: Path
) -> None:
    """Every reply that claims more than was asked, than the message holds or than the
    buffer takes (or a later chunk that contradicts the first) fails with EIO; the honest
    scenarios of the same server still work, so the server speaks the protocol. The old
    shim copied up to 64 KiB out of a 16 KiB ioctl buffer here."""
    client = compile_program(tmp_path, "hostile_client")
    scenarios = ["recv-honest", "peek-honest", *HOSTILE_SCENARIOS]
    out = shim_run([client, *scenarios], shim, hostile_mount).stdout
    results = dict(line.split(": ", 1) for line in out.splitlines())
    assert results == {
        "recv-honest": "40000 - intact",
        "peek-honest": "40000 - intact",
        **{name: "-1 EIO -" for name in HOSTILE_SCENARIOS},
    }


def test_many_sizes_through_every_path(
    tmp_path: Path, shim: list[str], mount_factory: Callable[..., Mount]
) -> None:
    """Honest replies of every size around the shim's request sizes pass the new checks,
    and under AddressSanitizer nothing is read or written out of bounds."""
    mount = mount_factory("msgsize_max=65536")
    program = compile_program(tmp_path, "mq_sizes")
    done = shim_run([program, f"/{unique_queue_name('sizes')}"], shim, mount.path)
    assert re.fullmatch(r"checked \d+\n", done.stdout), done.stdout
    assert os.listdir(mount.path) == []


def test_fork_while_another_thread_holds_the_shim_lock(
    tmp_path: Path, preload_library: Path, mqfs_mount: Mount
) -> None:
    """fork waits for the shim's lock and the child gets it unlocked: the child's
    SIGEV_THREAD mq_notify returns. The old shim registered its fork handlers only after
    the first SIGEV_THREAD registration had started, so the child inherited the lock held
    and deadlocked (killed by its 5 s alarm)."""
    program = compile_program(tmp_path, "fork_lock", "-rdynamic")
    done = shim_run(
        [program, f"/{unique_queue_name('fork')}"], [str(preload_library)], mqfs_mount.path
    )
    assert done.stdout.splitlines() == ["child: exited 0", "holder: 0"]
    assert os.listdir(mqfs_mount.path) == []


def test_set_up_reentered_through_syscall_and_fcntl(
    tmp_path: Path, preload_library: Path, mqfs_mount: Mount
) -> None:
    """The shim's set-up (its getenv calls) reaches code that calls syscall() and fcntl(),
    which the shim interposes: they must go to glibc, not wait for the set-up to finish.
    The old shim ran the set-up under pthread_once from those very functions and
    deadlocked (the program's alarm ends it)."""
    program = compile_program(tmp_path, "init_reentry", "-rdynamic")
    done = shim_run(
        [program, f"/{unique_queue_name('reentry')}"], [str(preload_library)], mqfs_mount.path
    )
    assert done.stdout == "ok\n"
    assert os.listdir(mqfs_mount.path) == []
