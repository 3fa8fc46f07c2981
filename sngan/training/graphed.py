"""train.cuda_graph: the whole training iteration captured once as a CUDA graph and replayed.

A GAN iteration at SNGAN sizes is launch-bound on a GPU: hundreds of small kernels (spectral
normalization adds hundreds more) keep the GPU idle between them. Replaying a captured graph
launches them all at once. What the capture needs, and how it is met here:
- Fixed memory: the real batches are copied into static buffers before each replay; parameters,
  buffers and optimizer states are updated in place (Adam with capturable=True, its learning rate a
  device tensor that the scheduler fills in place: sngan.train.build_optimizers).
- No host synchronisation inside the iteration: losses and logits are only read at log steps, the
  EMA is updated after the replay without reading its counter (sngan.training.ema).
- Random numbers: torch.randn inside the graph draws from the default CUDA generator; each replay
  advances the generator's offset as the eager iteration would, so a graphed run draws the same
  numbers as an eager one.
- Warm-up: capture needs the optimizer states and cuBLAS/cuDNN workspaces to exist, so a few
  iterations run first, on a side stream. They must not count: every parameter, buffer, optimizer
  state and RNG state is snapshotted before and restored after (TrainingSnapshot), so that the
  first replay is the run's first step, as in an eager run.
The graph is captured at the first call and again whenever the batches change shape; the object
is built anew after a resume, after the checkpoint's states are loaded. Diagnostics stay outside.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from sngan.training.step import Iteration

WARMUP_ITERATIONS = 3


def capture_cuda_graph(run: Callable[[], Iteration]) -> tuple[Callable[[], None], Iteration]:
    """(replay, the captured call's outputs): `run` captured as a CUDA graph, in its own memory pool."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = run()
    return graph.replay, output


class TrainingSnapshot:
    """Copies of every parameter, buffer and optimizer state of a training setup and of the RNG
    states, restored IN PLACE (a captured graph holds the tensors' addresses).

    An optimizer state created after the snapshot (by a warm-up step of a fresh run) is reset to
    zeros on restore: Adam's state on its first step (step 0, both moments 0)."""

    def __init__(self, modules: Sequence[nn.Module], optimizers: Sequence[torch.optim.Optimizer]):
        self.modules, self.optimizers = list(modules), list(optimizers)
        self.tensors = [t.detach().clone() for t in self._model_tensors()]
        self.states = [{p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}
                        for p, state in opt.state.items()} for opt in self.optimizers]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def _model_tensors(self) -> list[Tensor]:
        return [t for m in self.modules for t in itertools.chain(m.parameters(), m.buffers())]

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, saved in zip(self._model_tensors(), self.tensors, strict=True):
            tensor.copy_(saved)
        for opt, saved_states in zip(self.optimizers, self.states):
            for p, state in opt.state.items():
                saved = saved_states.get(p)
                for key, value in state.items():
                    if not isinstance(value, Tensor):
                        if saved is not None:
                            state[key] = saved[key]
                    elif saved is None:
                        value.zero_()
                    else:
                        value.copy_(saved[key])
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


class GraphedIteration:
    """`iteration(next_real)` (one gan_iteration) as a CUDA graph: call it with the n_dis real
    batches of one iteration; it returns the Iteration of static outputs, valid until the next call."""

    def __init__(self, iteration: Callable[[Callable[[], Tensor]], Iteration], modules: Sequence[nn.Module],
                 optimizers: Sequence[torch.optim.Optimizer], warmup: int = WARMUP_ITERATIONS,
                 capture: Callable | None = None):
        """`capture`: capture_cuda_graph (the default); tests pass a stand-in to run the rest on a CPU."""
        self.iteration, self.modules, self.optimizers, self.warmup = iteration, modules, optimizers, warmup
        self.capture = capture or capture_cuda_graph
        self.replay: Callable[[], None] | None = None
        self.inputs: list[Tensor] = []
        self.output: Iteration | None = None

    def __call__(self, batches: Sequence[Tensor]) -> Iteration:
        layout = [(b.shape, b.dtype, b.stride(), b.device) for b in batches]
        if self.replay is None or layout != [(b.shape, b.dtype, b.stride(), b.device) for b in self.inputs]:
            self._capture(batches)
        for static, batch in zip(self.inputs, batches):
            static.copy_(batch, non_blocking=True)
        self.replay()
        return self.output

    def _feed(self) -> Callable[[], Tensor]:
        """next_real for the captured iteration: the static buffers in turn (n_dis per iteration)."""
        order = itertools.cycle(self.inputs)
        return lambda: next(order)

    def _capture(self, batches: Sequence[Tensor]) -> None:
        self.inputs = [torch.empty_like(b).copy_(b) for b in batches]
        feed = self._feed()
        saved = TrainingSnapshot(self.modules, self.optimizers)
        side = torch.cuda.Stream() if self.inputs[0].is_cuda else None  # None: a test's stand-in on the CPU
        if side is not None:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # a no-op for None
            for _ in range(self.warmup):
                self.iteration(feed)
        if side is not None:
            torch.cuda.current_stream().wait_stream(side)
        # A capture only records kernels (a test's stand-in runs them): restoring after it undoes the
        # warm-up, and sets the RNG states back for the first replay.
        self.replay, self.output = self.capture(lambda: self.iteration(feed))
        saved.restore()
