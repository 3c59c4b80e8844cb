"""``python -m mnistlab.engine.warm``: compiles what is missing, and nothing once all is marked."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnistlab.engine import conv_kernels, kernels

# compile_all replaced by an exit with code 3, so the test sees whether main() would compile
PROBE = (
    "import sys\nfrom mnistlab.engine import warm\n"
    "warm.compile_all = lambda: sys.exit(3)\nsys.argv = ['warm']\nwarm.main()\n"
)


def _main(env) -> int:
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          timeout=120).returncode


def test_warm_compiles_only_what_is_not_marked(tmp_path):
    if not (kernels.compiled_before() and conv_kernels.compiled_before()):
        pytest.skip("the kernels are not compiled here (make test compiles them first)")
    assert _main(dict(os.environ)) == 0  # every kernel marked: nothing to do (make run, again)
    assert _main({**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}) == 3  # an empty cache


# compile_training and compile_all replaced by notes in a file, for an empty cache
DEFER = """
import sys
from pathlib import Path
from mnistlab.engine import warm
note = Path(sys.argv[1])
warm.compile_training = lambda: note.write_text("training")
warm.compile_all = lambda: note.write_text(note.read_text() + " all")
sys.argv = ["warm", "--after", sys.argv[2]]
warm.main()
"""


def _wait_for(path, text, seconds=60):
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text() == text:
            return True
        time.sleep(0.1)
    return False


def test_started_by_a_run_it_compiles_the_rest_only_once_the_run_has_exited(tmp_path):
    """``start()``'s process compiles the training kernels at once and the convnet kernels only
    after the run that started it has exited, so that they do not slow the rest of the run."""
    note = tmp_path / "note"
    run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    warm = subprocess.Popen([sys.executable, "-c", DEFER, str(note), str(run.pid)], env=env)
    try:
        assert _wait_for(note, "training")
        assert not _wait_for(note, "training all", seconds=2)  # the run goes on: it waits
        assert warm.poll() is None
        run.kill()  # not reaped yet: a zombie counts as exited
        assert _wait_for(note, "training all")
        run.wait()
        assert warm.wait(timeout=60) == 0
    finally:
        run.kill()
        warm.kill()


# the scheduling the compiler gives itself, as a new session (as ``warm.start`` spawns it) or not
YIELD = """
import os, sys
if sys.argv[1] == "leader":
    os.setsid()
from mnistlab.engine import warm
warm._yield_the_cores()
with open("/proc/self/autogroup") as f:
    print(os.sched_getscheduler(0) == os.SCHED_IDLE, f.read().split()[-1])
"""


def _in_an_autogroup():
    """The file exists on kernels built with autogroups, but reads empty when they are switched off
    or the process sits in a cgroup of its own (as on the CI machine)."""
    try:
        return bool(Path("/proc/self/autogroup").read_text().strip())
    except OSError:
        return False


@pytest.mark.skipif(not _in_an_autogroup(), reason="this process is in no Linux autogroup")
def test_the_compiler_gives_way_even_to_another_sessions_run():
    def run(mode):
        return subprocess.run([sys.executable, "-c", YIELD, mode], capture_output=True, text=True,
                              timeout=60, check=True).stdout.split()

    own = Path("/proc/self/autogroup")
    before = own.read_text().split()[-1]
    # its own session: the whole session at nice 19, or it takes half a core from other sessions
    assert run("leader") == ["True", "19"]
    # a session it shares with others (make's): only itself, its session as it was
    assert run("member") == ["True", before]
    assert own.read_text().split()[-1] == before


def test_a_process_starts_one_compilation_however_many_ask(monkeypatch):
    """A run's loop and its Predictor both asking (the second before the first's process has taken
    the compile lock) get the same process, not a second compiler beside the run."""
    import signal

    from mnistlab.engine import warm

    monkeypatch.setattr(warm, "_locked", lambda path: False)  # the lock not taken yet
    monkeypatch.setattr(warm, "_started", None)
    first = warm.start(training=True)  # --after this process: it runs until we stop it
    try:
        assert first.pid is not None and first.running()
        assert warm.start() is first
    finally:
        os.kill(first.pid, signal.SIGTERM)
        os.waitpid(first.pid, 0)
    assert not first.running()


# what the kernels have been built or loaded for at each mark of ``compile_training``
STAGED = """
import json
from mnistlab.engine import kernels, warm
jk, seen = kernels.load(), {}
def mark(stage="complete"):
    seen[stage] = {name: [str(s[0]) for s in getattr(jk, name).signatures]
                   for name in kernels.TRAINING}
kernels.mark_compiled = mark
warm.compile_training()
print(json.dumps(seen))
"""


def test_the_loop_is_marked_ready_before_the_kernels_it_can_do_without():
    """A run on the replica switches at the "loop" mark: by then the training kernels and the
    float32 forward pass are built, while the Predictor's uint8 pass and validation's
    ``forward_two`` (~3 s of compiling) come after it."""
    import json

    if not kernels.compiled_before():
        pytest.skip("the kernels are not compiled here (make test compiles them first)")
    out = subprocess.run([sys.executable, "-c", STAGED], capture_output=True, text=True,
                         timeout=120, check=True)
    seen = json.loads(out.stdout.splitlines()[-1])
    assert list(seen) == ["loop", "complete"]
    at_loop = seen["loop"]
    assert all(at_loop[name] for name in kernels.STAGES["loop"])
    assert at_loop["forward_two"] == [] and at_loop["forward_rows"] == ["array(float32, 2d, C)"]
    assert "array(uint8, 2d, C)" in seen["complete"]["forward_rows"]
    assert seen["complete"]["forward_two"]
