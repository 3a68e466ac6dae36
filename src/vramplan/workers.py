"""Several models measured at once, one per worker process: a long sweep uses every core.

A simulation is Python-bound (the meta kernels allocate nothing and compute nothing), so one process uses
one core; a `report --mode train` of twelve backbones spends minutes there. `measure_each` hands each
model to a pool of fresh (spawned) processes and returns the results in the order asked, exactly what the
serial loop returns: each model is measured from its reference alone, and nothing a model leaves in a
process (build caches, operator caches) changes another model's figures (tests/test_workers.py compares
the JSON of both ways).

Known limitations:
- A worker is a fresh interpreter: it imports torch and transformers again (about 2 to 3 s of CPU each),
  so `auto` uses workers only for sweeps that simulate (inference, training, fit) over two or more models.
- What the parent process changed in memory (a monkeypatched library, a token set in code rather than in
  the environment) is not seen by a worker; the environment is.
- A reference that cannot cross to another process (a factory made in code, a lambda) is measured in this
  process, as is a model whose worker died or whose result could not come back: never lost, only slower.
- The progress bar moves per model (in the order asked), not per case.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from .errors import UsageError

T = TypeVar("T")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def parse_jobs(value: int | str | None) -> int | str:
    """`--jobs` as given: "auto" (or None), or a whole number of processes, 1 or more.

    Raises:
        ValueError: anything else, named in the message (the CLI and resolve_jobs word it as theirs).
    """
    if value is None or value == "auto":
        return "auto"
    number = int(value) if isinstance(value, str) and value.isdigit() else value
    if isinstance(number, int) and not isinstance(number, bool) and number >= 1:
        return number
    raise ValueError(f"a number of processes (1 or more) or auto, not {value!r}")


def resolve_jobs(jobs: int | str | None, models: int, *, simulates: bool) -> int:
    """How many processes measure `models` models: `jobs`, or for "auto"/None the cores when it pays.

    "auto" (the CLI's default) is one process unless two or more models are simulated (a weights-only
    report is done in less time than a worker takes to import torch).
    """
    try:
        jobs = parse_jobs(jobs)
    except ValueError as exc:
        raise UsageError(f"--jobs: {exc}") from None
    if jobs == "auto":
        return max(1, min(cores(), models)) if simulates and models > 1 else 1
    return max(1, min(jobs, models))


def measure_each(work: Callable[..., T], items: Sequence[Any], jobs: int,
                 started: Callable[[int, int | None], None] = lambda completed, index: None,
                 debug: bool = False, here_too: bool = True, together: Sequence[Hashable | None] | None = None,
                 **here: Any) -> list[T]:
    """`[work(item) for item in items]`, by this process and `jobs - 1` spawned workers, in the order of `items`.

    This process measures too, from the start (a worker first spends seconds importing torch), taking the
    next model whenever it is free, as each worker does; `here` are extra keyword arguments for the models
    measured in this process (the progress bar's per-case updates). With `here_too=False` this process
    measures only what cannot cross to a worker, while there are workers (tests: the others go to one).
    Items with the same non-None key in `together` are measured by one process, one after the other.
    `started(completed, index)` is called in this process as it starts model `index` (None: it waits for
    the workers) with `completed` done.
    `work` must be a module-level function (or a functools.partial of one) that does not raise for a
    bad item (the pipeline's per-model work turns every failure into an error result).
    """
    board = _Board(items, here_too, together)
    workers = _start_workers(work, jobs - 1, board, debug) if jobs > 1 and len(items) > 1 and _can_cross(work) else []
    if not workers:
        board.no_workers()
    try:
        while (index := board.next_for_here()) is not None:
            started(board.completed, index)
            board.finish(index, work(items[index], **here))
            if board.waiting():
                started(board.completed, None)
        return board.results()
    finally:  # done (a worker may still be importing), or Ctrl-C: none outlives the run or prints a traceback
        for process, connection in workers:
            process.kill()
            connection.close()
        for process, _ in workers:
            process.wait()


HERE = "here"  # this process, as a taker of models (a worker is its connection)


class _Board:
    """Which models are measured, where, and their results; shared by this process and the feeding thread.

    Models with the same non-None key in `together` go to the same process, one after the other: the
    second reuses what the first built and simulated (DINOv3's lvd1689m and sat493m weights of one
    architecture build once), as in one process.
    """

    def __init__(self, items: Sequence[Any], here_too: bool = True,
                 together: Sequence[Hashable | None] | None = None) -> None:
        import threading

        self.items = items
        self.crossing = [_can_cross(item) for item in items]
        self._together = list(together) if together is not None else [None] * len(items)
        self._pending = list(range(len(items)))
        self._kept: dict[Any, list[int]] = {}  # taker -> models of the key it is measuring, still to do
        self._results: dict[int, Any] = {}
        self._changed = threading.Condition()
        self._here_too = here_too

    @property
    def completed(self) -> int:
        return len(self._results)

    def all_done(self) -> bool:
        return len(self._results) == len(self.items)

    def waiting(self) -> bool:
        with self._changed:
            return not self._pending and not self._kept.get(HERE) and not self.all_done()

    def next_for_here(self) -> int | None:
        """The next model for this process; None once every model is done (waits while workers measure)."""
        with self._changed:
            while (index := self._take(HERE)) is None and not self.all_done():
                self._changed.wait()
            return index

    def next_for_worker(self, worker: Any) -> int | None:
        with self._changed:
            return self._take(worker)

    def _take(self, taker: Any) -> int | None:
        kept = self._kept.get(taker)
        if kept:
            return kept.pop(0)
        mine = (lambda i: self.crossing[i]) if taker is not HERE else (
            lambda i: self._here_too or not self.crossing[i])
        index = next((i for i in self._pending if mine(i)), None)
        if index is None:
            return None
        key = self._together[index]
        self._kept[taker] = [i for i in self._pending if i != index and key is not None
                             and self._together[i] == key and mine(i)]
        for i in (index, *self._kept[taker]):
            self._pending.remove(i)
        return index

    def finish(self, index: int, result: Any) -> None:
        with self._changed:
            self._results[index] = result
            self._changed.notify_all()

    def give_back(self, index: int | None, worker: Any = None) -> None:
        """A worker died or its result could not come back: this process measures that model; the models
        kept for the worker go back to be taken by anyone."""
        with self._changed:
            if index is not None:
                self.crossing[index] = False
                self._pending.insert(0, index)
            if worker is not None:
                self._pending[len(self._pending):] = self._kept.pop(worker, [])
            self._changed.notify_all()

    def no_workers(self) -> None:
        """Every worker has ended: this process measures whatever is left."""
        with self._changed:
            self._here_too = True
            for worker in [w for w in self._kept if w is not HERE]:
                self._pending.extend(self._kept.pop(worker))
            self._changed.notify_all()

    def results(self) -> list[Any]:
        return [self._results[i] for i in range(len(self.items))]


def _start_workers(work: Callable[..., Any], count: int, board: _Board, debug: bool) -> list:
    """`count` fresh interpreters, each with a socket to this process, fed by one thread.

    Not multiprocessing's spawn: that runs the caller's main script again in the child (an unguarded script
    would start workers of its own). A worker is in a session of its own, so a Ctrl-C at the terminal reaches
    only this process, which kills the workers; one whose parent died sees its socket close and exits.
    """
    import socket
    import subprocess
    import threading
    from multiprocessing.connection import Connection

    path = os.pathsep.join(p for p in sys.path if p)  # the same vramplan and libraries as here
    environment = dict(os.environ, PYTHONPATH=path)
    workers = []
    for _ in range(count):
        here, there = socket.socketpair()
        command = [sys.executable, "-c", "from vramplan.workers import serve; serve()", str(there.fileno()),
                   str(max(1, cores() // (count + 1))), "debug" if debug else "quiet"]
        process = subprocess.Popen(command, pass_fds=(there.fileno(),), env=environment, stdin=subprocess.DEVNULL,
                                   stdout=2, start_new_session=True)  # a model's prints: stderr, as here
        there.close()
        connection = Connection(here.detach())
        connection.send(work)
        workers.append((process, connection))
    threading.Thread(target=_feed, args=(board, [c for _, c in workers]), daemon=True).start()
    return workers


def _feed(board: _Board, connections: list) -> None:
    """Give each worker the next model whenever it is ready; collect what comes back. Ends when the workers
    have nothing left or the run is over (the connections closed); then this process measures what is left."""
    from multiprocessing.connection import wait

    busy: dict[Any, int | None] = {c: None for c in connections}
    try:
        while busy:
            for connection in wait(list(busy)):
                _answer(board, connection, busy)
    except (OSError, ValueError):  # the run is over (done, or Ctrl-C): the connections are closed
        pass
    finally:
        for worker, lost in busy.items():
            board.give_back(lost, worker)
        board.no_workers()


def _answer(board: _Board, connection, busy: dict) -> None:
    """Take one message of a worker and send it the next model (or None: nothing left)."""
    try:
        kind, index, result = connection.recv()
    except EOFError:  # the worker died (killed, out of memory) or could not start
        board.give_back(busy.pop(connection), connection)
        return
    if kind == "done":
        board.finish(index, result)
    elif kind == "lost":
        board.give_back(index)
    following = busy[connection] = board.next_for_worker(connection)
    connection.send(None if following is None else (following, board.items[following]))
    if following is None:
        busy.pop(connection)


def serve() -> None:
    """A worker (`python -c ... FD THREADS debug|quiet`): import once, then measure each model it is sent.

    Whatever goes wrong here ends the worker quietly (with --debug, its traceback): the main process then
    measures the model it had sent, and any left, itself.
    """
    from multiprocessing.connection import Connection

    connection, debug = Connection(int(sys.argv[1])), sys.argv[3] == "debug"
    try:
        from .cli import preload_libraries, quiet_library_logs

        preload_libraries()
        quiet_library_logs(debug)
        import torch

        torch.set_num_threads(int(sys.argv[2]))
        work = connection.recv()
        connection.send(("ready", None, None))
        while (message := connection.recv()) is not None:
            index, item = message
            result = work(item)
            try:
                connection.send(("done", index, result))
            except (pickle.PicklingError, TypeError, AttributeError):  # cannot be pickled: measured again there
                connection.send(("lost", index, None))
    except (EOFError, OSError):  # the main process is gone, or has what it needs
        pass
    except BaseException:
        if debug:
            import traceback

            traceback.print_exc()
        sys.exit(1)


def _can_cross(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # a lambda, a local class, an open handle: many kinds of exception
        return False
    return True
