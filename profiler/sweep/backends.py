"""Where candidates run: in this process, in a local process pool, or as Ray actors.

One small interface (``submit`` a recipe, ``next_done`` returns one finished record) so the search
loop is the same for all three. Results land in the same history database either way; timing is
serialised per host by ``HostTimingLock`` whichever backend runs it.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from typing import Any

from ..errors import SweepError, describe
from ..format import printable
from .evaluate import Evaluator, SweepSetup, worker_evaluate, worker_init

__all__ = ["Backend", "InlineBackend", "PoolBackend", "RayBackend", "make_backend"]


class Backend:
    workers = 1
    closed = False

    def submit(self, recipe: dict[str, Any]) -> None:
        raise NotImplementedError

    def next_done(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        pass


class InlineBackend(Backend):
    """In the sweep's own process, one candidate at a time (``--workers 1``)."""

    def __init__(self, setup: SweepSetup, *prepared: Any) -> None:
        self.evaluator = Evaluator(setup, *prepared)
        self.queue: list[dict[str, Any]] = []

    def submit(self, recipe: dict[str, Any]) -> None:
        self.queue.append(recipe)

    def next_done(self) -> dict[str, Any]:
        from ..files.serde import to_jsonable

        return to_jsonable(self.evaluator.evaluate(self.queue.pop(0)))

    @property
    def pending(self) -> int:
        return len(self.queue)


class PoolBackend(Backend):
    """A local process pool (spawned processes: no forked torch thread pools)."""

    def __init__(self, setup: SweepSetup, workers: int) -> None:
        self.workers = workers
        self.pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init,
                                           initargs=(setup,))
        self.futures: dict[cf.Future, dict[str, Any]] = {}

    def submit(self, recipe: dict[str, Any]) -> None:
        self.futures[self.pool.submit(worker_evaluate, recipe)] = recipe

    def next_done(self) -> dict[str, Any]:
        done, _ = cf.wait(list(self.futures), return_when=cf.FIRST_COMPLETED)
        fut = next(iter(done))
        recipe = self.futures.pop(fut)
        try:
            return fut.result()
        except cf.process.BrokenProcessPool as exc:
            raise SweepError(f"a sweep worker process died (out of memory?) while measuring {recipe}: {describe(exc)}. "
                             f"Finished candidates are kept: --resume continues.") from exc

    @property
    def pending(self) -> int:
        return len(self.futures)

    def close(self, cancel: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


def check_ray_address(address: str) -> None:
    """Fail fast, naming the address, when Ray is missing or nothing listens there (Ray itself retries for a minute)."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise SweepError("--ray needs Ray: pip install 'layerscope[ray]' (or ray>=2.9).") from exc
    if address in ("", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"--ray {address!r}: give the cluster's HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), "
                         f"or --ray alone for a local instance.")
    start = time.monotonic()
    try:
        speaks = _speaks_http2(host, int(port), timeout=3.0)
    except (OSError, ValueError) as exc:
        raise SweepError(f"Ray cluster at {address!r} is unreachable ({exc}); nothing was run and nothing is lost. "
                         f"Check the address (ray status on the head node prints it), or drop --ray to use a local pool.") from exc
    if not speaks:  # something listens, but not Ray: ray.init would retry against it for minutes
        raise SweepError(f"{address!r} answers, but not as a Ray head (no gRPC/HTTP/2 there); nothing was run. Give the head's "
                         f"GCS address (ray status on the head node prints it) or a ray:// client address.")
    _probe_ray(address, RAY_ANSWER_S - (time.monotonic() - start))


RAY_ANSWER_S = 9.0  # the longest --ray ADDRESS may take to prove it is a Ray head
_PROBE = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); ray.shutdown()"


def _probe_ray(address: str, timeout: float) -> None:
    """Connect to ``address`` as a Ray driver in a child process, bounded by ``timeout``: ray.init retries an
    address that is not a Ray head for minutes, and cannot be interrupted from within."""
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=max(timeout, 1.0), env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    except subprocess.TimeoutExpired as exc:
        raise SweepError(f"{address!r} did not answer as a Ray head within {RAY_ANSWER_S:.0f} s; nothing was run. Check the "
                         f"address (ray status on the head node prints it), or drop --ray to use a local pool.") from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = printable(lines[-1].strip())[:200] if lines else f"exit status {proc.returncode}"
        raise SweepError(f"Could not join the Ray cluster at {address!r}: {why}; nothing was run.")


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + an empty SETTINGS frame


def _speaks_http2(host: str, port: int, timeout: float) -> bool:
    """Whether the server at host:port answers the HTTP/2 connection preface with a SETTINGS frame, as every
    gRPC server (Ray's GCS and its client server) does; bounded by ``timeout`` for the connect and the read."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(_HTTP2_PREFACE)
        head = b""
        while len(head) < 9 and (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(9 - len(head))
            except TimeoutError:
                break
            if not chunk:
                break
            head += chunk
    return len(head) == 9 and head[3] == 0x04


class RayBackend(Backend):
    """Ray actors, one Evaluator each, on an existing cluster (``address``) or a local instance
    started for the sweep and stopped after it."""

    def __init__(self, setup: SweepSetup, workers: int, address: str) -> None:
        check_ray_address(address)
        import ray

        self.ray = ray
        self.started = not ray.is_initialized()
        try:
            if self.started:
                kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if address:
                    kwargs["address"] = address
                else:
                    kwargs["num_cpus"] = max(workers, 1)
                ray.init(**kwargs)
        except Exception as exc:
            raise SweepError(f"Ray could not start{f' or connect to {address!r}' if address else ' a local instance'}: "
                             f"{describe(exc)}. Nothing was run; drop --ray to use a local pool.") from exc
        self.workers = workers
        actor: Any = ray.remote(num_cpus=1)(_RayWorker)
        self.actors: list[Any] = [actor.remote(setup) for _ in range(workers)]
        self.idle = list(self.actors)
        self.refs: dict[Any, tuple[Any, dict[str, Any]]] = {}

    def submit(self, recipe: dict[str, Any]) -> None:
        a = self.idle.pop()
        self.refs[a.evaluate.remote(recipe)] = (a, recipe)

    def next_done(self) -> dict[str, Any]:
        [ref], _ = self.ray.wait(list(self.refs), num_returns=1)
        actor, recipe = self.refs.pop(ref)
        self.idle.append(actor)
        try:
            return self.ray.get(ref)
        except Exception as exc:
            raise SweepError(f"a Ray worker failed while measuring {recipe}: {describe(exc)}. Finished candidates are kept: "
                             f"--resume continues.") from exc

    @property
    def pending(self) -> int:
        return len(self.refs)

    def close(self, cancel: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


class _RayWorker:
    def __init__(self, setup: SweepSetup) -> None:
        self.evaluator = Evaluator(setup)

    def evaluate(self, recipe: dict[str, Any]) -> dict[str, Any]:
        from ..files.serde import to_jsonable

        return to_jsonable(self.evaluator.evaluate(recipe))


def make_backend(setup: SweepSetup, workers: int, ray: str | None, *prepared: Any) -> Backend:
    """``prepared``: the sweep's own (loaded model, samples, reference profile), which an in-process
    worker reuses instead of loading the model a second time."""
    if ray is not None:
        return RayBackend(setup, workers, ray)
    return PoolBackend(setup, workers) if workers > 1 else InlineBackend(setup, *prepared)
