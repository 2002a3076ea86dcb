"""One run of the study: train a network, measure its dead channels.

A run trains with a :class:`~psbn_mmdet.PostShiftController` (only
monitoring for BN) stepped after every optimizer step.  It measures, in eval
mode over the whole training set, the percentage of *dead* pre-ReLU channels
(maximum post-ReLU activation < 1e-12, Mehta's activation criterion) every few
epochs, and at the end also in train mode, with |γ| < 1e-3, test accuracy and
the controller's shift / re-collapse counters.

**Regimes** (:data:`REGIMES`): Adam + L2 (Mehta: strong sparsity), AdamW
(decoupled decay), SGD + momentum at a high and at an ordinary learning rate
(Zhou: the collapse probability grows like lr²).
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from psbn_mmdet import PostShiftController
from psbn_mmdet.core import (ChannelMax, WindowResult, collapsed_gamma,
                             dead_activation)
from psbn_mmdet.models.layers import PSBN_TYPES

from ..reshifts import ReshiftCounter
from .networks import INPUT_SIZE, build_network
from .variants import VARIANTS


@dataclass(frozen=True)
class Regime:
    label: str
    optimizer: str  # 'adam' (L2 in the gradient), 'adamw' or 'sgd'
    lr: float
    weight_decay: float
    momentum: float = 0.0
    #: the lr of the Linear layers (BasicNet's BN-free FC head, ResNet's
    #: classifier); None: ``lr`` as every other parameter
    head_lr: float | None = None


REGIMES = {
    'adam_l2': Regime('Adam + L2', 'adam', 1e-2, 5e-3),
    'adamw': Regime('AdamW', 'adamw', 1e-2, 5e-2),
    'sgd_high': Regime('SGD+m, high lr', 'sgd', 0.5, 5e-4, 0.9),
    'sgd': Regime('SGD+m, ordinary lr', 'sgd', 0.05, 5e-4, 0.9),
    # issue 29's finetune: mmdet's SGD recipe (momentum 0.9, weight decay
    # 1e-4, its 0.02 lr)
    'sgd_ft': Regime('SGD+m finetune (mmdet recipe)', 'sgd', 0.02, 1e-4, 0.9),
    # Zhou's large lr on the conv and BN layers only: the FC head, which has
    # no BN, keeps the ordinary lr (at lr 0.5 83-94% of its units die)
    'sgd_high_body': Regime('SGD+m, high lr on conv/BN, ordinary on the head',
                            'sgd', 0.5, 5e-4, 0.9, head_lr=0.05),
}


def build_optimizer(model: nn.Module, regime: Regime):
    params = model.parameters()
    if regime.head_lr is not None:
        head = [p for m in model.modules() if isinstance(m, nn.Linear)
                for p in m.parameters(recurse=False)]
        ids = {id(p) for p in head}
        params = [dict(params=[p for p in model.parameters()
                               if id(p) not in ids]),
                  dict(params=head, lr=regime.head_lr)]
    if regime.optimizer == 'adam':
        return torch.optim.Adam(params, lr=regime.lr,
                                weight_decay=regime.weight_decay)
    if regime.optimizer == 'adamw':
        return torch.optim.AdamW(params, lr=regime.lr,
                                 weight_decay=regime.weight_decay)
    return torch.optim.SGD(params, lr=regime.lr, momentum=regime.momentum,
                           weight_decay=regime.weight_decay)


@dataclass(frozen=True)
class Job:
    """One training run: a cell of the grid and a seed."""
    network: str
    regime: str
    variant: str
    seed: int
    epochs: int = 15
    batch_size: int = 40
    dataset: str = 'digits'  # a name for research.capacity_study.data.load_dataset
    width: float = 1.0  # the network's channel multiplier
    #: 'task:regime:epochs': start from a BN network trained so (every
    #: variant of a seed from the same weights), its classifier layer drawn
    #: anew; None: from scratch
    pretrain: str | None = None

    @property
    def cell(self) -> tuple[str, str, str]:
        return (self.network, self.regime, self.variant)


@contextlib.contextmanager
def _evaluating(model: nn.Module, batch_statistics: bool):
    """No-grad evaluation; ``batch_statistics``: BN normalizes with the
    batch's statistics, as in training (else eval mode).  Mode and BN running
    statistics are restored afterwards, so evaluating never changes a run."""
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train(batch_statistics)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])


def _pre_relu_max(model: nn.Module, names: list[str], images: torch.Tensor,
                  train_mode: bool, batch_size: int) -> list[torch.Tensor]:
    """Per-channel maximum of each named layer's output over ``images``
    (``train_mode``: under batch statistics, see :func:`_evaluating`)."""
    modules = dict(model.named_modules())
    with ChannelMax({n: modules[n] for n in names}) as collector, \
            _evaluating(model, train_mode):
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    return [collector.maxima[n] for n in names]


def _percent_dead(maxima: list[torch.Tensor]) -> float:
    dead = sum(int(dead_activation(m).sum()) for m in maxima)
    return 100.0 * dead / sum(m.numel() for m in maxima)


def dead_percent(model: nn.Module, pre_relu: list[str], images: torch.Tensor,
                 train_mode: bool = False, batch_size: int = 256) -> float:
    """% of pre-ReLU channels whose max post-ReLU activation is < 1e-12."""
    return _percent_dead(
        _pre_relu_max(model, pre_relu, images, train_mode, batch_size))


def pre_relu_maxima(model: nn.Module, pre_relu: list[str],
                    images: torch.Tensor, train_mode: bool = False,
                    batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Per named layer, each channel's maximum output over ``images``."""
    return dict(zip(pre_relu, _pre_relu_max(model, pre_relu, images,
                                            train_mode, batch_size)))


def dead_masks(maxima: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer, the bool mask of its dead channels given
    :func:`pre_relu_maxima` (the criterion of :func:`dead_percent`)."""
    return {name: dead_activation(m) for name, m in maxima.items()}


def head_pre_relu(model: nn.Module) -> list[str]:
    """Names of the Linear layers that feed a ReLU without a BN between
    (BasicNet's FC head): units psBN does not manage."""
    if not isinstance(model, nn.Sequential):
        return []
    children = list(model.named_children())
    return [name for (name, module), (_, after) in zip(children, children[1:])
            if isinstance(module, nn.Linear) and isinstance(after, nn.ReLU)]


def small_gamma_percent(model: nn.Module) -> float:
    """% of BN channels (every BN) with |γ| < 1e-3."""
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    small = sum(int(collapsed_gamma(bn.weight).sum()) for bn in bns)
    return 100.0 * small / sum(bn.num_features for bn in bns)


def accuracy(model: nn.Module, images, labels, batch_size: int = 256,
             train_mode: bool = False) -> float:
    """% correct; ``train_mode``: under batch statistics of ``batch_size``
    images, which tells a network that trained badly from one whose BN
    running statistics are off."""
    with _evaluating(model, train_mode):
        correct = sum(
            int((model(images[i:i + batch_size]).argmax(1)
                 == labels[i:i + batch_size]).sum())
            for i in range(0, len(images), batch_size))
    return 100.0 * correct / len(labels)


#: fraction of the epochs trained at lr / 10 at the end (Mehta: 75 of 325)
LR_DROP_FRACTION = 0.2
#: epochs between two points of the eval-mode dead curve
CURVE_EVERY = 3


class ShiftProbe:
    """How active just-shifted channels are on the next training batch.

    Records, for every channel the controller shifted, the fraction of its
    elements with y > 0 in the first training forward pass after the shift:
    ≈ ``active_fraction`` when the shift works, 0 when the channel stays dead.
    """

    def __init__(self, controller: PostShiftController) -> None:
        self.pending: dict[str, torch.Tensor] = {}
        self.fractions: list[float] = []
        self.handles = [
            controller.bns[name].register_forward_hook(self._hook(name))
            for name in controller.pre_relu
            if isinstance(controller.bns[name], PSBN_TYPES)
        ]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            mask = self.pending.pop(name, None)
            if mask is not None and module.training:
                active = (output.detach().transpose(0, 1)[mask] > 0)
                self.fractions += active.flatten(1).float().mean(1).tolist()
        return hook

    def after_window(self, result: WindowResult | None) -> None:
        """Watch the channels a window's end shifted."""
        if result is not None:
            self.pending.update(
                {n: m for n, m in result.shifted_channels.items() if m.any()})

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _batch_loss(model: nn.Module, x, y) -> float:
    """The training loss of one batch under batch statistics, changing
    nothing (no gradient, BN buffers restored)."""
    with _evaluating(model, batch_statistics=True):
        return nn.functional.cross_entropy(model(x), y).item()


def _redo(model, optimizer, controller, **options):
    from research.redo import ReDo, units_of
    return ReDo(units_of(model), optimizer, **options)


def _revival(model, optimizer, controller, seed=0, **rule):
    from .revival import Revival, Rule
    return Revival(model, optimizer, controller, Rule(**rule), seed=seed)


def _train_epochs(model, optimizer, data, epochs: int, batch_size: int,
                  seed: int, lr_drop: bool = True) -> None:
    """Plain training (no controller): the pretraining of a finetune."""
    order = torch.Generator().manual_seed(seed)
    drop_at = epochs - round(LR_DROP_FRACTION * epochs)
    model.train()
    for epoch in range(epochs):
        if lr_drop and epoch == drop_at:
            for group in optimizer.param_groups:
                group['lr'] /= 10
        permutation = torch.randperm(len(data.train_y), generator=order)
        for start in range(0, len(permutation), batch_size):
            batch = permutation[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(data.train_x[batch]),
                                               data.train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


#: the seed of a pretraining is the job's plus this (its own draws)
PRETRAIN_SEED_OFFSET = 1000


@functools.lru_cache(maxsize=8)
def pretrained(network: str, width: float, seed: int, spec: str,
               batch_size: int) -> tuple[dict, float]:
    """A BN network trained by ``spec`` ('task:regime:epochs') from seed
    ``seed + PRETRAIN_SEED_OFFSET``: its state dict and test accuracy (%).
    Cached: the variants of a seed finetune the same weights."""
    task, regime, epochs = spec.split(':')
    # here, not at the top: research.capacity_study.data imports this
    # package's data module, which runs this package's __init__
    from ..capacity_study.data import load_dataset
    data = load_dataset(task, INPUT_SIZE[network])
    torch.manual_seed(seed + PRETRAIN_SEED_OFFSET)
    model = build_network(network, VARIANTS['bn'], width, data.num_classes)
    _train_epochs(model, build_optimizer(model, REGIMES[regime]), data,
                  int(epochs), batch_size, seed + PRETRAIN_SEED_OFFSET)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, accuracy(model, data.test_x, data.test_y)


def _load_pretrained(model: nn.Module, state: dict) -> None:
    """Every tensor of ``state`` but the classifier's (the last Linear),
    which keeps ``model``'s fresh draw."""
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    kept = {k: v for k, v in state.items()
            if not k.startswith(last + '.')}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    assert not unexpected and all(k.startswith(last + '.') for k in missing)


def run(job: Job, probes=()) -> dict:
    """Train one network; return final metrics and curves.

    Metrics: ``dead_pct`` (Mehta's criterion in eval mode over the training
    set, at the end), ``dead_train_pct`` (same, BN in train mode, batches of
    the training size: what the controller sees), ``small_gamma_pct``,
    ``head_dead_pct`` (the same criterion for the FC head's ReLU units, which
    have no BN; None without such a head),
    ``test_acc`` (eval mode) and ``test_acc_batch_stats`` (BN in train mode,
    batches of the training size), the controller's shift and re-collapse
    counters, ``active_after_shift_pct`` (:class:`ShiftProbe`).  Curves:
    ``dead_curve`` (``[epoch, dead %]``, eval mode, every ``CURVE_EVERY``
    epochs from 0), ``window_curve`` (``[step, % pre-ReLU channels dead in
    the window]`` at each window end) and ``loss_curve`` (``[epoch, mean
    training loss]``).

    ``probes``: factories ``probe(model, optimizer, controller)`` of objects
    with ``after_step(result)`` (called after every optimizer and controller
    step) and ``close() -> dict``; their dicts are returned under ``probes``
    (research instruments such as :mod:`.recollapse`, and recovery rules that
    act on the model, such as :mod:`.redo`).
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    # here, not at the top: research.capacity_study.data imports this
    # package's data module, which runs this package's __init__
    from ..capacity_study.data import load_dataset
    data = load_dataset(job.dataset, INPUT_SIZE[job.network])
    variant, regime = VARIANTS[job.variant], REGIMES[job.regime]
    pretrain_acc = None
    if job.pretrain is not None:  # before the run's seed: its own draws
        state, pretrain_acc = pretrained(job.network, job.width, job.seed,
                                         job.pretrain, job.batch_size)
    torch.manual_seed(job.seed)
    model = build_network(job.network, variant, job.width, data.num_classes)
    if job.pretrain is not None:
        _load_pretrained(model, state)
    optimizer = build_optimizer(model, regime)
    controller = PostShiftController(model, optimizer, shift=variant.psbn,
                                     seed=job.seed,
                                     **variant.controller_kwargs())
    reshifts = ReshiftCounter(controller.window_of)
    controller.callbacks.append(reshifts)
    pre_relu = controller.pre_relu
    channels = sum(controller.bns[n].num_features for n in pre_relu)
    order = torch.Generator().manual_seed(job.seed)
    drop_at = job.epochs - round(LR_DROP_FRACTION * job.epochs)
    probe = ShiftProbe(controller)
    if variant.revival is not None:
        probes = [*probes, functools.partial(_revival, seed=job.seed,
                                             **variant.revival)]
    if variant.redo is not None:
        probes = [*probes, functools.partial(_redo, seed=job.seed,
                                             **variant.redo)]
    extra = [factory(model, optimizer, controller) for factory in probes]
    intervention_loss = []  # [before, after] at steps that changed the model
    head = head_pre_relu(model)

    def dead_now() -> tuple[float, float | None]:
        """Eval-mode dead % of the BN channels and of the FC head's units,
        over the training set, in one pass."""
        maxima = _pre_relu_max(model, pre_relu + head, data.train_x,
                               train_mode=False, batch_size=256)
        return (_percent_dead(maxima[:len(pre_relu)]),
                _percent_dead(maxima[len(pre_relu):]) if head else None)

    dead, head_dead = dead_now()
    dead_curve = [[0, dead]]
    window_curve, loss_curve = [], []
    model.train()
    for epoch in range(job.epochs):
        if epoch == drop_at:
            for group in optimizer.param_groups:
                group['lr'] /= 10  # every group: its own lr / 10
        permutation = torch.randperm(len(data.train_y), generator=order)
        losses = []
        for start in range(0, len(permutation), job.batch_size):
            batch = permutation[start:start + job.batch_size]
            loss = nn.functional.cross_entropy(model(data.train_x[batch]),
                                               data.train_y[batch])
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            # only runs that can change the model (psBN, ReDo) pay for it
            window_end = ((variant.psbn or variant.redo is not None)
                          and (controller.steps + 1) % variant.period == 0)
            if window_end:
                before = _batch_loss(model, data.train_x[batch],
                                     data.train_y[batch])
            result = controller.step()
            probe.after_window(result)
            changed = bool(result and sum(result.shifted.values()))
            for instrument in extra:
                changed |= bool(instrument.after_step(result))
            if window_end and changed:
                intervention_loss.append([before, _batch_loss(
                    model, data.train_x[batch], data.train_y[batch])])
            if result is not None:
                window_dead = sum(result.dead.values())
                window_curve.append(
                    [result.step, 100.0 * window_dead / channels])
        loss_curve.append([epoch + 1, statistics.fmean(losses)])
        if (epoch + 1) % CURVE_EVERY == 0 or epoch + 1 == job.epochs:
            dead, head_dead = dead_now()
            dead_curve.append([epoch + 1, dead])
    controller.close()
    probe.close()
    extra = [instrument.close() for instrument in extra]
    shifts = sum(int(c.sum()) for c in controller.shift_counts.values())
    if variant.redo is not None:  # the units ReDo recycled count as shifts
        shifts = extra[-1]['recycled']
    return dict(
        job=asdict(job),
        dead_pct=dead_curve[-1][1],
        head_dead_pct=head_dead,
        dead_train_pct=dead_percent(model, pre_relu, data.train_x,
                                    train_mode=True,
                                    batch_size=job.batch_size),
        small_gamma_pct=small_gamma_percent(model),
        test_acc=accuracy(model, data.test_x, data.test_y),
        test_acc_batch_stats=accuracy(model, data.test_x, data.test_y,
                                      batch_size=job.batch_size,
                                      train_mode=True),
        shifts=shifts,
        active_after_shift_pct=(100.0 * statistics.fmean(probe.fractions)
                                if probe.fractions else None),
        recollapses=reshifts.reshifts,
        recollapses_next_window=(extra[-1]['again_next_period']
                                 if variant.redo is not None else
                                 reshifts.reshifts_next_window),
        intervention_loss_pct=(statistics.fmean(
            100.0 * (after - before) / before
            for before, after in intervention_loss)
            if intervention_loss else None),
        steps_to_recollapse=(reshifts.steps_to_reshift_sum /
                             reshifts.reshifts
                             if reshifts.reshifts else None),
        steps=controller.steps,
        pre_relu_channels=channels,
        dead_curve=dead_curve,
        window_curve=window_curve,
        loss_curve=loss_curve,
        intervention_loss=intervention_loss,
        **({'pretrain_test_acc': pretrain_acc} if job.pretrain else {}),
        **({'probes': extra} if extra else {}),
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started)
