"""Train generated Modules under DistributedDataParallel and check that two
processes reach the same parameters as one.

The model is built only from Modules that fngen generated into the committed
examples (``Linear`` and ``RmsNorm`` from tensors.py, ``Prelu`` from ops.py)
and is trained with the generated ``mse_loss``:

    Linear(4 -> 16) -> RmsNorm(16) -> Prelu -> Linear(16 -> 1)

on a fixed, seeded regression data set, with plain SGD, for a few steps:

* once in one process, on whole global batches;
* once in two processes (``torch.multiprocessing``, gloo backend, TCP on
  127.0.0.1), each rank taking its half of every global batch, the model
  wrapped in ``torch.nn.parallel.DistributedDataParallel``.

DDP averages the ranks' gradients, and each rank's loss is the mean over its
equal-sized shard, so the averaged gradient is the gradient of the mean loss
over the global batch: the one-process run sees exactly that.  Everything is
float64, so the two runs agree to rounding.  (This holds because no layer here
mixes samples of a batch; a BatchNorm would break it.)

Run it with:

    python examples/ddp_train.py

It prints the loss of every step of both runs and exits non-zero if their
final parameters differ.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

# tensors.py and ops.py live next to this file; import them from there
# wherever we are run (and in the spawned workers, which inherit sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ops import Prelu  # noqa: E402
from tensors import Linear, RmsNorm, mse_loss  # noqa: E402

DTYPE = torch.float64
IN_FEATURES = 4
HIDDEN = 16
SAMPLES = 64
GLOBAL_BATCH = 16  # split evenly between the ranks: a multiple of world_size
LEARNING_RATE = 0.05
STEPS = 20
WORLD_SIZE = 2
# Both runs are float64 and differ only in the order of a few sums.
ATOL = 1e-10
RTOL = 1e-10


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed regression data set: y = 3 sin(x @ w) + a little noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, IN_FEATURES, generator=generator, dtype=DTYPE)
    w = torch.randn(IN_FEATURES, 1, generator=generator, dtype=DTYPE)
    noise = 0.05 * torch.randn(SAMPLES, 1, generator=generator, dtype=DTYPE)
    return x, 3 * torch.sin(x @ w) + noise


def make_model(seed: int = 0) -> torch.nn.Sequential:
    """The model, with the same initial weights for the same seed.

    Note the generated ``Linear`` takes ``(out_features, in_features)``, the
    order of its weight's shape in tensors.yaml."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        Linear(IN_FEATURES, HIDDEN),
        RmsNorm(HIDDEN),
        Prelu(),
        Linear(HIDDEN, 1),
    )
    return model.to(DTYPE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(
    rank: int, world_size: int, steps: int, seed: int
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train on this rank's shard of every global batch; return the final
    parameters and the loss over the global batch at every step.

    With world_size == 1 this is plain single-process training; otherwise
    the default process group must already be initialised."""
    x, y = make_data(seed)
    model = make_model(seed)
    module = model
    if world_size > 1:
        # DDP broadcasts rank 0's parameters at construction and averages
        # the gradients across ranks in backward.
        model = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

    shard = GLOBAL_BATCH // world_size
    batches = SAMPLES // GLOBAL_BATCH
    losses = []
    for step in range(steps):
        # Global batch `step % batches`, in a fixed order; this rank takes
        # a contiguous, equal-sized slice of it.
        start = (step % batches) * GLOBAL_BATCH + rank * shard
        inputs, targets = x[start : start + shard], y[start : start + shard]

        loss = mse_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        # Only to report it: the global batch's loss is the ranks' mean.
        global_loss = loss.detach().clone()
        if world_size > 1:
            dist.all_reduce(global_loss)
            global_loss /= world_size
        losses.append(global_loss.item())

    parameters = {name: p.detach().clone() for name, p in module.named_parameters()}
    return parameters, losses


def _worker(
    rank: int,
    world_size: int,
    steps: int,
    seed: int,
    port: int,
    timeout: float,
    result_path: str,
) -> None:
    """One spawned rank: join the group, train, rank 0 saves the result."""
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout),
    )
    try:
        parameters, losses = _run(rank, world_size, steps, seed)
        if rank == 0:
            torch.save({"parameters": parameters, "losses": losses}, result_path)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(world_size: int, steps: int, seed: int, timeout: float) -> dict:
    """Run `world_size` ranks in spawned processes; return rank 0's result.

    Raises if a rank fails, and stops them all if they have not finished
    within `timeout` seconds (a hung collective must not hang the caller)."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "result.pt")
        args = (world_size, steps, seed, free_port(), timeout, result_path)
        context = mp.start_processes(
            _worker, args=args, nprocs=world_size, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout
        # join() returns True once all ranks exited cleanly and raises, after
        # stopping the others, as soon as one of them fails.
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                        process.join()
                raise TimeoutError(
                    f"DDP training with {world_size} processes did not finish "
                    f"within {timeout} s"
                )
        return torch.load(result_path)


def train(
    world_size: int,
    steps: int = STEPS,
    *,
    seed: int = 0,
    timeout: float = 60.0,
    losses: list[float] | None = None,
) -> dict[str, torch.Tensor]:
    """Train the model for `steps` SGD steps; return its final parameters by
    name (``"0.weight"``, ``"2.a"``, ...).

    world_size == 1 trains in this process on whole global batches, without
    DDP; world_size > 1 spawns that many DDP ranks over gloo on 127.0.0.1.
    If `losses` is given, the loss over the global batch of every step is
    appended to it."""
    if world_size < 1 or GLOBAL_BATCH % world_size:
        raise ValueError(
            f"world_size must divide the global batch of {GLOBAL_BATCH}, "
            f"got {world_size}"
        )
    if world_size == 1:
        parameters, step_losses = _run(0, 1, steps, seed)
    else:
        result = _spawn(world_size, steps, seed, timeout)
        parameters, step_losses = result["parameters"], result["losses"]
    if losses is not None:
        losses.extend(step_losses)
    return parameters


def parameters_match(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, and the same values to within ATOL/RTOL."""
    return a.keys() == b.keys() and all(
        torch.allclose(a[name], b[name], rtol=RTOL, atol=ATOL) for name in a
    )


def main() -> None:
    if not (dist.is_available() and dist.is_gloo_available()):
        raise SystemExit("torch.distributed with the gloo backend is not available")

    runs = {}
    for world_size in (1, WORLD_SIZE):
        losses: list[float] = []
        started = time.perf_counter()
        parameters = train(world_size, STEPS, losses=losses)
        seconds = time.perf_counter() - started
        label = "1 process" if world_size == 1 else f"{world_size} processes (DDP)"
        print(f"{label}: {STEPS} steps in {seconds:.1f} s")
        for step, loss in enumerate(losses):
            print(f"  step {step:2d}  loss {loss:.6f}")
        runs[world_size] = parameters

    single, ddp = runs[1], runs[WORLD_SIZE]
    if single.keys() != ddp.keys():
        raise SystemExit(f"parameter names differ: {sorted(single)} != {sorted(ddp)}")
    worst = max((single[n] - ddp[n]).abs().max().item() for n in single)
    if not parameters_match(single, ddp):
        raise SystemExit(
            f"final parameters differ: largest difference {worst:.3g} "
            f"(atol={ATOL}, rtol={RTOL})"
        )
    print(
        f"final parameters match (largest difference {worst:.3g}, "
        f"atol={ATOL}, rtol={RTOL})"
    )


if __name__ == "__main__":
    main()
