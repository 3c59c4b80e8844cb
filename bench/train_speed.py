"""Research: seconds per epoch of candidate training loops (step 1 of issue 8).

Run: .venv/bin/python bench/train_speed.py --rounds 5 [--only a,b,c,d] [--unroll 1]
"""

import argparse
import gzip
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load():
    with gzip.open(f"{DATA}/train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(f"{DATA}/train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    from sklearn.model_selection import train_test_split

    xt, xv, yt, yv = train_test_split(x, y, test_size=0.3, random_state=111)
    return (xt / 255.0).astype(np.float32), yt, (xv / 255.0).astype(np.float32), yv


def build(keras):
    keras.utils.set_random_seed(1)
    m = keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(100, activation="relu", name="dense1"),
            keras.layers.Dense(64, activation="relu", name="dense2"),
            keras.layers.Dense(32, activation="relu", name="dense3"),
            keras.layers.Dense(10, activation="softmax", name="output"),
        ]
    )
    return m


# --------------------------------------------------------------------------- (a) keras fit
def cand_a(keras, xt, yt, xv, yv):
    m = build(keras)
    m.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy", metrics=["accuracy"],
              steps_per_execution=32)
    yt1 = np.eye(10, dtype=np.float32)[yt]
    yv1 = np.eye(10, dtype=np.float32)[yv]

    def train():
        m.fit(xt, yt1, batch_size=128, epochs=1, verbose=0, shuffle=True)

    def val():
        m.evaluate(xv, yv1, batch_size=128, verbose=0)

    return train, val


# --------------------------------------------------------------------------- scan helpers
def scan_epoch_fn(step, bs, unroll):
    import jax
    import jax.numpy as jnp

    def epoch(state, x, y, perm, n):
        steps = perm.shape[0] // bs

        def body(state, i):
            idx = jax.lax.dynamic_slice_in_dim(perm, i * bs, bs)
            w = (jnp.arange(bs) + i * bs < n).astype(jnp.float32)
            state, (loss, acc) = step(state, x[idx], y[idx], w)
            cnt = w.sum()
            return state, (loss * cnt, acc * cnt)

        state, (ls, accs) = jax.lax.scan(body, state, jnp.arange(steps), unroll=unroll)
        return state, ls.sum() / n, accs.sum() / n

    return jax.jit(epoch, donate_argnums=0, static_argnums=4)


def pad_perm(perm, bs):
    steps = -(-len(perm) // bs)
    out = np.zeros(steps * bs, np.int32)
    out[: len(perm)] = perm
    return out


# --------------------------------------------------------------------------- (b) keras stateless
def cand_b(keras, xt, yt, xv, yv, unroll=1):
    import jax
    import jax.numpy as jnp

    m = build(keras)
    opt = keras.optimizers.SGD(0.01)
    opt.build(m.trainable_variables)
    eps = 1e-7

    def loss_fn(tv, ntv, x, y, w):
        p, ntv = m.stateless_call(tv, ntv, x, training=True)
        p = p / p.sum(-1, keepdims=True)
        p = jnp.clip(p, eps, 1 - eps)
        lab = jnp.take_along_axis(jnp.log(p), y[:, None], 1)[:, 0]
        per = -lab
        loss = (per * w).sum() / w.sum()
        acc = ((jnp.argmax(p, -1) == y) * w).sum() / w.sum()
        return loss, (acc, ntv)

    def step(state, x, y, w):
        tv, ntv, ov = state
        (loss, (acc, ntv)), g = jax.value_and_grad(loss_fn, has_aux=True)(tv, ntv, x, y, w)
        tv, ov = opt.stateless_apply(ov, g, tv)
        return (tv, ntv, ov), (loss, acc)

    ep = scan_epoch_fn(step, 128, unroll)
    X, Y = jnp.asarray(xt.reshape(len(xt), 28, 28)), jnp.asarray(yt, jnp.int32)
    XV, YV = jnp.asarray(xv), jnp.asarray(yv, jnp.int32)
    state = [([v.value for v in m.trainable_variables],
              [v.value for v in m.non_trainable_variables],
              [v.value for v in opt.variables])]
    n = len(xt)
    epoch = [0]

    @jax.jit
    def vfn(tv, ntv, x, y):
        p, _ = m.stateless_call(tv, ntv, x)
        return jnp.mean(jnp.argmax(p, -1) == y)

    def train():
        perm = np.random.default_rng([1, epoch[0]]).permutation(n)
        epoch[0] += 1
        s, loss, acc = ep(state[0], X, Y, jnp.asarray(pad_perm(perm, 128)), n)
        state[0] = s
        jax.block_until_ready(loss)

    def val():
        tv, ntv, _ = state[0]
        # batch by 128 like evaluate: scan over batches
        jax.block_until_ready(vfn(tv, ntv, XV, YV))

    return train, val


# --------------------------------------------------------------------------- (c) pure jax
def cand_c(keras, xt, yt, xv, yv, unroll=1):
    import jax
    import jax.numpy as jnp

    m = build(keras)
    params = [v.value for v in m.trainable_variables]
    eps = 1e-7

    def fwd(params, x):
        h = x.reshape(x.shape[0], -1)
        for i in range(0, len(params) - 2, 2):
            h = jax.nn.relu(h @ params[i] + params[i + 1])
        return jax.nn.softmax(h @ params[-2] + params[-1])

    def loss_fn(params, x, y, w):
        p = fwd(params, x)
        p = p / p.sum(-1, keepdims=True)
        p = jnp.clip(p, eps, 1 - eps)
        per = -jnp.take_along_axis(jnp.log(p), y[:, None], 1)[:, 0]
        return (per * w).sum() / w.sum(), ((jnp.argmax(p, -1) == y) * w).sum() / w.sum()

    def step(params, x, y, w):
        (loss, acc), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, w)
        params = [p - gi * 0.01 for p, gi in zip(params, g)]
        return params, (loss, acc)

    ep = scan_epoch_fn(step, 128, unroll)
    X, Y = jnp.asarray(xt), jnp.asarray(yt, jnp.int32)
    XV, YV = jnp.asarray(xv), jnp.asarray(yv, jnp.int32)
    state = [params]
    n = len(xt)
    epoch = [0]
    vfn = jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(fwd(p, x), -1) == y))

    def train():
        perm = np.random.default_rng([1, epoch[0]]).permutation(n)
        epoch[0] += 1
        s, loss, acc = ep(state[0], X, Y, jnp.asarray(pad_perm(perm, 128)), n)
        state[0] = s
        jax.block_until_ready(loss)

    def val():
        jax.block_until_ready(vfn(state[0], XV, YV))

    return train, val


# --------------------------------------------------------------------------- (d) numpy
def cand_d(keras, xt, yt, xv, yv, unroll=1):
    m = build(keras)
    W = [np.array(v.value) for v in m.trainable_variables]
    n, bs, lr = len(xt), 128, np.float32(0.01)
    X = xt.reshape(n, -1)
    XV = xv.reshape(len(xv), -1)
    sizes = [W[i].shape[1] for i in range(0, len(W), 2)]
    G = [np.empty_like(w) for w in W]
    xb = np.empty((bs, X.shape[1]), np.float32)
    H = [np.empty((bs, s), np.float32) for s in sizes]
    D = [np.empty((bs, s), np.float32) for s in sizes]
    lo, hi = np.float32(1e-7), np.float32(1 - 1e-7)
    epoch = [0]

    def train():
        perm = np.random.default_rng([1, epoch[0]]).permutation(n)
        epoch[0] += 1
        tot_loss = 0.0
        tot_acc = 0
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            k = len(idx)
            xk = xb[:k]
            np.take(X, idx, axis=0, out=xk)
            h_in = xk
            hs = []
            for j in range(len(sizes)):
                h = H[j][:k]
                np.dot(h_in, W[2 * j], out=h)
                h += W[2 * j + 1]
                if j < len(sizes) - 1:
                    np.maximum(h, 0, out=h)
                hs.append(h)
                h_in = h
            z = hs[-1]
            z -= z.max(1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(1, keepdims=True)
            y = yt[idx]
            pt = z[np.arange(k), y]
            ptc = np.clip(pt, lo, hi)
            tot_loss += float(-np.log(ptc).sum())
            tot_acc += int((z.argmax(1) == y).sum())
            g = D[-1][:k]
            np.multiply(z, (ptc == pt).astype(np.float32)[:, None] / np.float32(k), out=g)
            g[np.arange(k), y] -= (ptc == pt) / np.float32(k)
            for j in range(len(sizes) - 1, -1, -1):
                a = hs[j - 1] if j > 0 else xk
                np.dot(a.T, g, out=G[2 * j])
                np.sum(g, axis=0, out=G[2 * j + 1])
                if j > 0:
                    gp = D[j - 1][:k]
                    np.dot(g, W[2 * j].T, out=gp)
                    gp *= hs[j - 1] > 0
                    g = gp
            for w, gw in zip(W, G):
                gw *= lr
                w -= gw

    def val():
        h = XV
        for j in range(len(sizes)):
            h = h @ W[2 * j] + W[2 * j + 1]
            if j < len(sizes) - 1:
                np.maximum(h, 0, out=h)
        (h.argmax(1) == yv).mean()

    return train, val


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="a,b,c,d")
    ap.add_argument("--unroll", type=int, default=1)
    args = ap.parse_args()
    import keras

    xt, yt, xv, yv = load()
    cands = {}
    for name in args.only.split(","):
        f = globals()[f"cand_{name}"]
        kw = {} if name == "a" else {"unroll": args.unroll}
        tr, va = f(keras, xt, yt, xv, yv, **kw)
        tr(), va()  # warm-up / compile
        cands[name] = (tr, va, [], [])
    for _ in range(args.rounds):
        for name, (tr, va, ts, vs) in cands.items():
            t0 = time.perf_counter()
            tr()
            t1 = time.perf_counter()
            va()
            t2 = time.perf_counter()
            ts.append(t1 - t0)
            vs.append(t2 - t1)
    print(f"flags={os.environ.get('XLA_FLAGS', '')} unroll={args.unroll}", file=sys.stderr)
    for name, (_, _, ts, vs) in cands.items():
        print(f"{name}: train {statistics.median(ts):.3f} s/epoch  val {statistics.median(vs):.3f} s"
              f"  (min {min(ts):.3f})")


if __name__ == "__main__":
    main()
