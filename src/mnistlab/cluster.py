"""Joining a multi-process training job on JAX's distributed runtime (CPU collectives: gloo).

One ``mnistlab train`` process runs on each host (or several on one host); they find each other
through a coordinator (process 0's ``HOST:PORT``) and then see every device of every process as one
list, over which ``keras.distribution.DataParallel`` splits each global batch.

The job is described by three values, from flags or from the environment variables Keras reads
(``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``,
``KERAS_DISTRIBUTION_PROCESS_ID``); flags win. ``join`` calls ``jax.distributed.initialize``
itself rather than ``keras.distribution.initialize``: the Keras call cannot pass the runtime's
timeouts, and without them a peer that dies is noticed only after 100 s and one that never
arrives after 300 s. (Keras' call does nothing more for mnistlab: it also seeds a shared RNG,
which every mnistlab process already sets from the config's seed.)

When a peer dies, the runtime ends the surviving processes with ``abort()`` from C++ (no Python
exception reaches the caller). ``supervise`` therefore runs the training in a child process and
turns such an end into one clear error line.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass

from mnistlab.errors import ConfigError, TrainingError

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
CHILD_MARK = "MNISTLAB_JOB_CHILD"  # set in the supervised child: it joins the job itself

# A peer that stops sending heartbeats for this long is dead (JAX's default: 100 s); a process
# waits this long for all the others to arrive (JAX's default: 300 s).
HEARTBEAT_TIMEOUT_S = 20
ARRIVAL_TIMEOUT_S = 60


@dataclass(frozen=True)
class JobSpec:
    """Where this process stands in a multi-process job.

    Attributes:
        coordinator: ``HOST:PORT`` of process 0, the same on every process.
        num_processes: how many processes form the job (>= 2).
        process_id: this process, ``0 .. num_processes - 1``; process 0 writes the files.
        arrival_timeout: seconds to wait for every process to arrive.
        heartbeat_timeout: seconds without a heartbeat after which a peer counts as dead.
    """

    coordinator: str
    num_processes: int
    process_id: int
    arrival_timeout: int = ARRIVAL_TIMEOUT_S
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S

    @property
    def writes_files(self) -> bool:
        return self.process_id == 0

    def describe(self) -> dict:
        return {"coordinator": self.coordinator, "num_processes": self.num_processes,
                "process_id": self.process_id}


def is_job_child() -> bool:
    """True in the child process ``supervise`` started (it joins the job itself)."""
    return os.environ.get(CHILD_MARK) == "1"


def job_from(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None, environ=None) -> JobSpec | None:
    """The job this process joins, from flags first and Keras' environment variables second.

    Returns:
        A ``JobSpec``, or ``None`` when nothing asks for a multi-process job (or it has one
        process).

    Raises:
        ConfigError: only some of the three values are given, or one is malformed.
    """
    env = os.environ if environ is None else environ
    address = coordinator or _first_address(env.get(ENV_ADDRESSES))
    count = num_processes if num_processes is not None else _int_env(env, ENV_PROCESSES)
    pid = process_id if process_id is not None else _int_env(env, ENV_PROCESS_ID)
    given = {"--coordinator": address, "--num-processes": count, "--process-id": pid}
    if all(v is None for v in given.values()):
        return None
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"a multi-process job needs --coordinator HOST:PORT, --num-processes N and "
            f"--process-id I (or {ENV_ADDRESSES}, {ENV_PROCESSES}, {ENV_PROCESS_ID}); missing: "
            f"{', '.join(missing)}"
        )
    _check_address(address)
    if count < 1:
        raise ConfigError(f"--num-processes must be at least 1; received {count}")
    if not 0 <= pid < count:
        raise ConfigError(
            f"--process-id must be between 0 and {count - 1} (--num-processes {count}); "
            f"received {pid}"
        )
    return None if count == 1 else JobSpec(address, count, pid)


def _first_address(text: str | None) -> str | None:
    # Keras' variable lists every process; JAX needs only the first, the coordinator.
    return text.split(",")[0].strip() or None if text else None


def _int_env(env, name: str) -> int | None:
    text = env.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number; received {text[:100]!r}") from None


def _check_address(address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            "--coordinator must be HOST:PORT (process 0's address and a free port, the same "
            f"on every process), e.g. 127.0.0.1:4321; received {address[:100]!r}"
        )


def join(spec: JobSpec) -> None:
    """Connect this process to the job (before any JAX computation), CPU collectives on gloo.

    Raises:
        ConfigError: the Keras backend is not JAX, or JAX was already initialised.
    """
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise ConfigError(
            "multi-process training needs the JAX backend; unset KERAS_BACKEND or set it to jax"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=spec.coordinator, num_processes=spec.num_processes,
        process_id=spec.process_id, initialization_timeout=spec.arrival_timeout,
        heartbeat_timeout_seconds=spec.heartbeat_timeout,
    )


def require_same(what: str, text: str) -> None:
    """Refuse to go on unless every process of the job has the same ``text``.

    Args:
        what: what is compared, for the message (e.g. "configuration").
        text: this process's version of it (e.g. the resolved config as TOML).

    Raises:
        ConfigError: on every process, naming the processes whose copy differs from process 0's.
    """
    import numpy as np
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint32)
    everyone = np.asarray(multihost_utils.process_allgather(digest))
    differ = [i for i in range(len(everyone)) if not np.array_equal(everyone[i], everyone[0])]
    if differ:
        raise ConfigError(
            f"the processes of this job do not share one {what}: process(es) "
            f"{', '.join(map(str, differ))} differ from process 0. Start every process with the "
            "same preset, --config, --set options, data and --resume"
        )


_NATIVE_LOG = re.compile(r"^([EFWI]\d{4} \d\d:\d\d:\d\d|\[Gloo\] |\s+@\s+0x|\*\*\* Check failure|RPC: |"
                         r"Additional GRPC error|:UNKNOWN:Error received)")
_LOST = re.compile(r"tasks are unhealthy \(stopped sending heartbeats\):\s*([\d, \n]+)")


def supervise(argv: list[str], spec: JobSpec) -> int:
    """Run ``mnistlab`` with ``argv`` in a child process that joins the job; return its exit code.

    Standard output passes through. Standard error passes through too, except the runtime's
    own C++ log lines, which are kept: when the child is ended by the runtime (a peer died or
    never arrived), they are summarised in one ``TrainingError`` instead of a stack trace.

    Raises:
        TrainingError: the runtime ended the child because the job broke down.
    """
    env = {**os.environ, CHILD_MARK: "1", "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen([sys.executable, "-m", "mnistlab", *argv], env=env,
                             stderr=subprocess.PIPE, text=True, errors="replace",
                             start_new_session=True)
    kept: list[str] = []
    reader = threading.Thread(target=_pass_stderr, args=(child.stderr, kept), daemon=True)
    reader.start()
    # The child has its own session, so a Ctrl-C at the terminal reaches it once, from here.
    old = {sig: signal.signal(sig, lambda signum, _: child.send_signal(signum))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    reader.join(timeout=5)
    if code == -signal.SIGABRT and any("JAX distributed service" in k or "RegisterTask" in k
                                       for k in kept):
        raise TrainingError(_breakdown(kept, spec))
    sys.stderr.write("".join(kept))  # not a breakdown: hide nothing
    return 128 - code if code < 0 else code


def _pass_stderr(stream, kept: list[str]) -> None:
    """Copy the child's stderr, keeping back the runtime's C++ lines and any Python traceback.

    When a peer dies, the child's collectives fail (a Python traceback) just before the runtime
    aborts it; both are held until the child's end shows whether the job broke down.
    """
    held = False
    for line in stream:
        held = held or line.startswith("Traceback (most recent call last):")
        if held or _NATIVE_LOG.match(line) or (kept and line.strip().isdigit()):
            kept.append(line)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()


def _breakdown(kept: list[str], spec: JobSpec) -> str:
    text = "".join(kept)
    where = f"process {spec.process_id} of {spec.num_processes}"
    lost = _LOST.search(text)
    if lost:
        ids = ", ".join(re.findall(r"\d+", lost.group(1)))
        return (f"the multi-process job broke down ({where}): process(es) {ids} stopped "
                f"answering for {spec.heartbeat_timeout} s (died or was killed). The last "
                "checkpoint is kept: start every process again with --resume RUN")
    if "RegisterTask" in text:
        return (f"could not join the multi-process job at {spec.coordinator} ({where}) within "
                f"{spec.arrival_timeout} s: not every process arrived. Start all "
                f"{spec.num_processes} processes with the same --coordinator, each with its own "
                "--process-id, and check that process 0's host and port are reachable")
    if spec.process_id == 0:  # the coordinator is here: a peer went, the runtime said no more
        others = ", ".join(str(i) for i in range(1, spec.num_processes))
        which = ("" if spec.num_processes == 2
                 else " (one or more of them; the runtime did not say which)")
        return (f"the multi-process job broke down ({where}): process(es) {others} stopped "
                f"answering{which}: died or was killed. The last checkpoint is kept: start every "
                "process again with --resume RUN")
    return (f"the multi-process job broke down ({where}): the coordinator at {spec.coordinator} "
            "went away (process 0 died or was killed). The last checkpoint is kept: start "
            "every process again with --resume RUN")
