"""The numpy replica of the compiled kernels gives their very bits, so a run can start on it while
numba compiles in the background and switch at an epoch boundary without changing its result."""

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from mnistlab.engine import kernels, replica
from mnistlab.engine.jit_loop import JitLoop


def loop(momentum=0.0, nesterov=False, batch_size=32, widths=(24, 12, 10), seed=0,
         compile_now=True):
    """A JitLoop on a network made of numpy arrays (the kernels' argument types, no Keras)."""
    rng = np.random.default_rng(seed)
    sizes = (64, *widths)
    plan = [
        SimpleNamespace(kernel=rng.standard_normal((a, b), np.float32) * np.float32(a**-0.5),
                        bias=rng.standard_normal(b, np.float32) * np.float32(0.1),
                        activation="softmax" if i == len(widths) - 1 else "relu", dropout=0.0)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False))
    ]
    momentums = [np.zeros_like(v) for d in plan for v in (d.kernel, d.bias)]
    sgd = SimpleNamespace(learning_rate=0.05, momentum=momentum, nesterov=nesterov,
                          momentums=momentums if momentum else [])
    return JitLoop(plan, sgd, batch_size, 64, 203, compile_now=compile_now)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (203, 64), dtype=np.uint8)
    y = (x[:, :8].mean(1) > 127).astype(np.int64) * 3 + (x[:, 8] % 3)
    return x, y, rng.integers(0, 256, (1100, 64), dtype=np.uint8)


def state(lp):
    m = lp.m_flat if lp.m_flat is not None else np.empty(0, np.float32)
    return [a.tobytes() for a in (lp.w_flat, m, lp.pt, lp.pred)]


def test_exp32_gives_the_kernels_bits_within_one_ulp():
    import numba

    v = np.concatenate([-np.logspace(-30, np.log10(86.9), 100_000).astype(np.float32),
                        np.float32([0.0, -0.0, -87.0, -87.5, -1e4, -np.inf, np.nan])])
    compiled = numba.njit(lambda a: np.array([kernels._exp32(e) for e in a]))
    kernels.load()
    assert np.array_equal(compiled(v), replica.exp32(v), equal_nan=True)
    ours, truth = replica.exp32(v[:-7]).astype(np.float64), np.exp(v[:-7].astype(np.float64))
    assert (np.abs(ours - truth) / np.spacing(truth.astype(np.float32))).max() < 1.0
    assert np.isnan(replica.exp32(np.float32([np.nan])))[0]


@pytest.mark.parametrize(("momentum", "nesterov", "batch_size", "as_float"), [
    (0.0, False, 32, False),  # last batch of 11
    (0.9, False, 101, False),  # last batch of 1: an empty second half
    (0.9, True, 64, True),  # float32 input, Nesterov
])
def test_replica_epochs_give_the_compiled_bits(data, momentum, nesterov, batch_size, as_float):
    x, y, xv = data
    if as_float:
        x, xv = x.astype(np.float32) / np.float32(255), xv.astype(np.float32) / np.float32(255)
    compiled = loop(momentum, nesterov, batch_size)
    copied = loop(momentum, nesterov, batch_size)
    copied.replica = replica.Replica(kernels_sgemm())
    copied.warming = SimpleNamespace(ready=lambda stage: False)
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(len(x))
        a = compiled.train_epoch(x, y, order, None)
        b = copied.train_epoch(x, y, order, None)
        assert a == b
        assert state(compiled) == state(copied)
        assert compiled.predict(xv).tobytes() == copied.predict(xv).tobytes()
    assert copied.replica_epochs == 3 and copied.used == [1, 1, 1]


def kernels_sgemm():
    from mnistlab.engine.blas import Threads

    return Threads()._sgemm


def test_switching_to_compiled_code_mid_run_keeps_every_bit(data):
    x, y, _ = data
    compiled, switching = loop(0.9), loop(0.9)
    switching.replica = replica.Replica(kernels_sgemm())
    ready = iter([False, False, True])
    switching.warming = SimpleNamespace(ready=lambda stage: next(ready, True))
    for epoch in range(4):
        order = np.random.default_rng(epoch).permutation(len(x))
        assert compiled.train_epoch(x, y, order, None) == switching.train_epoch(x, y, order, None)
    assert switching.replica is None and switching.replica_epochs == 2
    assert state(compiled) == state(switching)


def test_only_relu_and_linear_are_replicated():
    codes = kernels.ACTIVATIONS
    assert replica.exact([codes["relu"], codes["linear"]])
    assert not replica.exact([codes["relu"], codes["tanh"]])
    assert not replica.exact([codes["sigmoid"]])


@pytest.mark.slow
def test_a_cold_cache_trains_on_the_replica_and_switches_when_compiled(tmp_path, data):
    """A process with an empty cache starts at once, compiles in the background and ends on the
    compiled code, with the same bits as a loop that was compiled from the start."""
    x, y, _ = data
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = textwrap.dedent(f"""
        import json, os, time, numpy as np, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_replica import loop
        d = np.load({str(tmp_path / "data.npz")!r})
        x, y = d["x"], d["y"]
        cold = loop(0.9, compile_now=False)
        started = cold.replica is not None
        # a Predictor's big batch meanwhile: answered in numpy, not by compiling in the foreground
        from mnistlab.engine.forward import Network
        from mnistlab.engine.plan import Dense
        net = Network([Dense(f"d{{i}}", d.kernel, d.bias, d.activation, None)
                       for i, d in enumerate(cold.plan)], 64)
        rows = np.random.default_rng(0).integers(0, 256, (2000, 64), dtype=np.uint8)
        numpy_probs = net.predict(rows, True)
        numpy_meanwhile = net.compiled is None
        t0, epoch = time.time(), 0
        while cold.replica is not None and time.time() - t0 < 240:
            cold.train_epoch(x, y, np.random.default_rng(epoch).permutation(len(x)), None)
            epoch += 1
        for extra in range(2):  # and two more on the compiled code
            cold.train_epoch(x, y, np.random.default_rng(epoch).permutation(len(x)), None)
            epoch += 1
        warm = loop(0.9)
        for e in range(epoch):
            warm.train_epoch(x, y, np.random.default_rng(e).permutation(len(x)), None)
        while not cold.warming.ready() and time.time() - t0 < 240:  # the uint8 pass comes last
            time.sleep(0.1)
        compiled_probs = net.predict(rows, True)  # the cache is complete now
        val = x.astype(np.float32)
        val_same = bool(np.array_equal(cold.predict(val), warm.predict(val)))
        # it waits for this process to exit before the convnet kernels (not needed here)
        after = str(os.getpid()) in open(f"/proc/{{cold.warming.pid}}/cmdline").read().split(chr(0))
        import signal
        os.kill(cold.warming.pid, signal.SIGTERM)
        print(json.dumps({{"started_on_replica": started, "replica_epochs": cold.replica_epochs,
                          "waits_for_this_run": after,
                          "numpy_meanwhile": numpy_meanwhile, "compiled_after": bool(net.compiled),
                          "close": bool(np.allclose(numpy_probs, compiled_probs, atol=1e-5)),
                          "val_same": val_same, "epochs": epoch,
                          "same": bool((cold.w_flat == warm.w_flat).all()
                                       and (cold.m_flat == warm.m_flat).all())}}))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["started_on_replica"] and result["replica_epochs"] > 0
    assert result["waits_for_this_run"]
    assert result["numpy_meanwhile"] and result["compiled_after"] and result["close"]
    # the switching epoch and two more ran compiled
    assert result["epochs"] == result["replica_epochs"] + 3 and result["same"]
    assert result["val_same"]


def test_a_two_thread_epoch_slower_than_one_thread_finishes_on_one_with_the_same_bits(data):
    """The busy-core guard: when two threads lose to one (here: one thread's rate is set
    impossibly fast), the rest of the epoch runs on one thread; the bits do not change."""
    from mnistlab.engine import jit_loop

    x, y, _ = data
    guarded, plain = loop(0.9, batch_size=4), loop(0.9, batch_size=4)  # 51 steps an epoch
    if not guarded.two_usable:
        pytest.skip("needs two compiled threads (OpenMP and two cores)")
    guarded._rate[False] = 1e-12  # "one thread did a step in a picosecond"
    guarded._warm = True
    order = np.random.default_rng(0).permutation(len(x))
    assert guarded.train_epoch(x, y, order, None) == plain.train_epoch(x, y, order, None)
    assert state(guarded) == state(plain)
    # it went to one thread after the first check, and kept the two-thread rate it saw
    assert guarded.used == [1] and guarded._rate[True] > 1e-12
    assert len(x) > jit_loop.GUARD_STEPS * 4  # so there was a check before the end


def test_a_fresh_checkout_of_the_same_kernels_reuses_the_cache():
    """numba keys its cache by the source's text; so does the completeness mark (a new file time,
    as a clone or checkout gives, must not send training to the replica)."""
    import os

    if not kernels.compiled_before():
        pytest.skip("the kernels are not compiled here (make test compiles them first)")
    st = os.stat(kernels.__file__)
    try:
        os.utime(kernels.__file__, (st.st_atime, st.st_mtime + 3600))
        assert kernels.compiled_before()
    finally:
        os.utime(kernels.__file__, (st.st_atime, st.st_mtime))


def test_the_first_epoch_is_guarded_too(data, monkeypatch):
    """Before any one-thread rate is known, the first steps run on one thread to measure it, and
    the two-thread steps after them are checked against it (here every check fails: SLOWER 0);
    the bits do not change. The first epoch's rates are not kept (code loading, Keras' import)."""
    from mnistlab.engine import jit_loop

    x, y, _ = data
    guarded, plain = loop(0.9, batch_size=1), loop(0.9, batch_size=1)  # 203 steps an epoch
    if not guarded.two_usable:
        pytest.skip("needs two compiled threads (OpenMP and two cores)")
    orders = [np.random.default_rng(e).permutation(len(x)) for e in range(2)]
    expected = [plain.train_epoch(x, y, order, None) for order in orders]
    monkeypatch.setattr(jit_loop, "SLOWER", 0.0)
    assert guarded._rate[False] is None
    assert guarded.train_epoch(x, y, orders[0], None) == expected[0]
    assert guarded._rate == {True: None, False: None}
    assert guarded.train_epoch(x, y, orders[1], None) == expected[1]  # two threads tried again
    assert state(guarded) == state(plain)
    # one thread for the first steps, two for the next GUARD_STEPS, then one again
    assert guarded.used == [1, 1] and guarded._rate[True] > 0
    assert len(x) > jit_loop.GUARD_STEPS * 3  # so there was a chunk to check and a rest


def test_while_two_threads_win_one_is_looked_at_on_an_epochs_first_steps(data, monkeypatch):
    """The guarded loop does not spend a whole epoch on one thread to look at it again: the
    re-trial runs the epoch's first steps on one thread (its rate kept), the rest on two."""
    from mnistlab.engine import jit_loop

    monkeypatch.setattr(jit_loop, "SLOWER", 1e9)  # the guard never trips here
    x, y, _ = data
    guarded, plain = loop(0.9, batch_size=1), loop(0.9, batch_size=1)  # 203 steps an epoch
    if not guarded.two_usable:
        pytest.skip("needs two compiled threads (OpenMP and two cores)")
    order = np.random.default_rng(0).permutation(len(x))
    expected = plain.train_epoch(x, y, order, None)
    guarded._rate = {True: 1e-9, False: 1.0}  # two threads far ahead
    guarded._warm, guarded._since = True, guarded._period  # and a re-trial due
    assert guarded.train_epoch(x, y, order, None) == expected
    assert state(guarded) == state(plain)
    assert guarded.used == [2] and not guarded.sample_one
    assert 0 < guarded._rate[False] < 1.0 and guarded._rate[True] > 1e-9  # both measured afresh


def test_a_retrial_of_two_threads_is_checked_after_a_few_steps(data, monkeypatch):
    """When one thread was the faster, the epoch that tries two again is checked after
    RETRY_STEPS steps, not GUARD_STEPS: beside a busy core those steps are the slow ones."""
    from types import SimpleNamespace

    from mnistlab.engine import jit_loop

    x, y, _ = data
    guarded = loop(0.9, batch_size=1)  # 203 steps an epoch
    if not guarded.two_usable:
        pytest.skip("needs two compiled threads (OpenMP and two cores)")
    monkeypatch.setattr(jit_loop, "SLOWER", 0.0)  # every check fails
    calls = []
    jk = guarded.jk

    def two(*args):
        calls.append(len(args[2]))  # rows of ``order`` in this call
        return jk.epoch_two(*args)

    guarded.jk = SimpleNamespace(epoch_one=jk.epoch_one, epoch_two=two)
    guarded._rate, guarded._warm = {True: 2.0, False: 1.0}, True  # one thread was the faster
    guarded._since = guarded._period  # and a re-trial of two is due
    order = np.random.default_rng(0).permutation(len(x))
    guarded.train_epoch(x, y, order, None)
    assert calls == [jit_loop.RETRY_STEPS] and guarded.used == [1]
