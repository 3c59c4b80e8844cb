"""``python -m mnistlab.engine.warm``: compiles what is missing, and nothing once all is marked."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# the conv kernels' cheapest part, compiled for real into an empty cache
PART = """
from mnistlab.engine import conv_kernels as K, warm
print(K.compiled_before("reduce_adam"), K.compiled_before())
warm.compile_conv(("reduce_adam",))
print(K.compiled_before("reduce_adam"), K.compiled_before("reduce_sgd"), K.compiled_before())
"""


def test_conv_kernels_are_marked_part_by_part(tmp_path):
    """A part compiled is marked as such; the cache is complete only once every part is."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PART], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    assert out == ["False", "False", "True", "False", "False"]


def test_an_unknown_part_is_refused_before_compiling_anything():
    from mnistlab.engine import warm

    with pytest.raises(ValueError, match="gradients-int8.*parts are"):
        warm.compile_conv(("reduce_adam", "gradients-int8"))


def test_a_convnet_run_asks_for_the_parts_it_calls():
    from mnistlab.engine.conv_loop import parts_needed

    u8, f32 = np.zeros((2, 4), np.uint8), np.zeros((2, 4), np.float32)
    assert parts_needed(u8, u8, adam=True) == ("gradients-uint8", "predict-uint8", "reduce_adam")
    # augmented epochs (float32) validated on the uint8 set
    assert parts_needed(f32, u8, adam=True) == ("gradients-float32", "predict-uint8",
                                                "reduce_adam")
    assert parts_needed(f32, f32[:0], adam=False) == ("gradients-float32", "reduce_sgd")


# a convnet trained for one epoch into an empty cache, the background compilation noted instead
COLD_CONV = """
import json, os
import numpy as np
import keras
from mnistlab.engine import conv_kernels as K, warm
from mnistlab.engine.conv_loop import fit_conv
started = []
warm.start = lambda training=False: started.append(training)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                          keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                          keras.layers.Dense(3, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), np.arange(40) % 3
h = fit_conv(model, x[:32], y[:32], x[32:], y[32:], epochs=1, batch_size=16, seed=0)
print(json.dumps({"parts": {p: K.compiled_before(p) for p in K.PARTS},
                  "complete": K.compiled_before(), "started": started,
                  "val": h["val_accuracy"]}))
"""


@pytest.mark.slow
def test_a_convnet_run_on_a_new_machine_compiles_only_what_it_calls(tmp_path):
    """The first convnet run compiles its own parts (uint8 images, Adam: ~60 % of the whole),
    says so, trains, and leaves the rest to the background process (after it has exited)."""
    import json

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", COLD_CONV], env=env, capture_output=True,
                         text=True, timeout=900, check=True)
    assert "compiling the convnet training code for this machine" in out.stderr
    seen = json.loads(out.stdout.splitlines()[-1])
    assert seen["parts"] == {"gradients-uint8": True, "predict-uint8": True,
                             "gradients-float32": False, "predict-float32": False,
                             "reduce_adam": True, "reduce_sgd": False}
    assert seen["complete"] is False
    assert seen["started"] == [True]  # --after this run
    assert len(seen["val"]) == 1
