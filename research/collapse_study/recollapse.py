"""Why revived channels die again: follow every shifted channel after its shift.

    python -m research.collapse_study.recollapse [--network basicnet]
        [--regime adam_l2] [--variants shipped defaults] [--seeds 0 1 2]
        [--json OUT] [--out docs/collapse_study.md] [--from-json OUT]

For each post-shift (an *episode*: from a channel's shift to its next shift
or the end of training) the probe records, per training batch, the channel's
largest BN output ``max y``, the fraction of its elements with ``y > 0``,
γ, β, the largest x̂ and x̂'s std (``x̂ = (y − β)/γ``), and per optimizer step
the loss gradient of γ, β and of the incoming conv filter against the coupled
L2 pull ``weight_decay × parameter`` (torch's Adam and SGD add it inside the
step, so ``.grad`` is the loss's alone).

The summary answers, per run:

* how many episodes end dead again, and after how many steps (the batch after
  which the channel never fires again in the episode);
* what killed them: ``max y = γ·max x̂ + β`` fell from its value in the first
  batch after the shift to ``<= 0``; the fall splits exactly into a β term
  (``Δβ``), a γ term (``Δγ · max x̂₀``) and an x̂ term (``γ · Δmax x̂``: the
  filter and the input), each given as a share of the fall;
* the spread the shift worked with (x̂ std ``s`` at the shift) and the margin
  ``|γ|·z·s`` against one step's move of β, for the channels that stayed
  alive and for those that died;
* gradient against L2 pull (median ratio) for γ, β and the filter in the
  episode's first window.

Research only: it reads the model through the controller's public attributes.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import torch
from torch import nn

from psbn_mmdet.cli import run_tool

from ..records import read_records
from .variants import VARIANTS

PROG = 'recollapse'


def incoming_convs(model: nn.Module, names: list[str]) -> dict[str, nn.Conv2d]:
    """The conv whose output each named BN normalizes: the module defined
    just before it (BasicNet's Sequential, mmdet's ``convN`` → ``bnN``)."""
    modules = list(model.named_modules())
    found = {}
    for index, (name, _) in enumerate(modules):
        if name not in names:
            continue
        for before_name, before in reversed(modules[:index]):
            if isinstance(before, nn.Conv2d):
                found[name] = before
                break
    return found


@dataclass
class Episode:
    layer: str
    channel: int
    step: int  # the step whose window end shifted it
    gamma: float
    beta: float
    filter_ratio: float  # ‖w_c‖ / median ‖w‖ of the layer's live channels
    batches: list = field(default_factory=list)  # (max y, active, γ, β, max x̂, std x̂)
    grads: list = field(default_factory=list)  # (γ, β, filter) grad / L2 pull
    beta_steps: list = field(default_factory=list)  # |β change| per step
    ended: str = 'end'  # 'end' (training ended) or 'reshift'
    z: float = 2.326  # Φ⁻¹(1 − ρ) of the layer
    # x̂ std and |γ|·z·s just after the shift: the controller has reset the
    # window's statistics by then, so :func:`summarize` takes them from the
    # episode's first batch
    s: float = float('nan')
    margin: float = float('nan')


class RecollapseProbe:
    """Follows shifted channels; see the module docstring."""

    def __init__(self, model, optimizer, controller) -> None:
        self.controller = controller
        self.optimizer = optimizer
        self.weight_decay = optimizer.param_groups[0].get('weight_decay', 0.0)
        self.decoupled = isinstance(optimizer, torch.optim.AdamW)
        psbn_layers = [n for n in controller.pre_relu
                       if hasattr(controller.bns[n], 'post_shift_')]
        self.convs = incoming_convs(model, psbn_layers)
        self.open: dict[tuple[str, int], Episode] = {}
        self.closed: list[Episode] = []
        self.handles = [controller.bns[n].register_forward_hook(self._hook(n))
                        for n in psbn_layers]
        self._last_beta: dict[tuple[str, int], float] = {}

    def _hook(self, name: str):
        def hook(bn, inputs, output):
            if not bn.training or not torch.is_grad_enabled():
                return
            channels = [c for (n, c) in self.open if n == name]
            if not channels:
                return
            y = output.detach().transpose(0, 1)[channels].flatten(1).float()
            gamma = bn.weight.detach()[channels].float()
            beta = bn.bias.detach()[channels].float()
            xhat = (y - beta[:, None]) / gamma[:, None]
            for i, c in enumerate(channels):
                self.open[(name, c)].batches.append((
                    y[i].max().item(), (y[i] > 0).float().mean().item(),
                    gamma[i].item(), beta[i].item(),
                    xhat[i].max().item() if gamma[i] > 0 else
                    (-xhat[i]).max().item(), xhat[i].std().item()))
        return hook

    def after_step(self, result) -> None:
        """After ``optimizer.step()`` and ``controller.step()``."""
        wd = 0.0 if self.decoupled else self.weight_decay
        for (name, c), episode in self.open.items():
            bn = self.controller.bns[name]
            conv = self.convs.get(name)
            if len(episode.grads) < bn.window and bn.weight.grad is not None:
                ratios = []
                for param in (bn.weight, bn.bias):
                    pull = wd * abs(param.detach()[c].item())
                    ratios.append(abs(param.grad[c].item()) / pull
                                  if pull > 0 else float('inf'))
                if conv is not None and conv.weight.grad is not None:
                    pull = wd * conv.weight.detach()[c].norm().item()
                    ratios.append(conv.weight.grad[c].norm().item() / pull
                                  if pull > 0 else float('inf'))
                episode.grads.append(ratios)
            beta = bn.bias.detach()[c].item()
            last = self._last_beta.get((name, c))
            if last is not None:
                episode.beta_steps.append(abs(beta - last))
            self._last_beta[(name, c)] = beta
        if result is None:
            return
        for name, mask in result.shifted_channels.items():
            bn = self.controller.bns[name]
            z = NormalDist().inv_cdf(1.0 - bn.active_fraction)
            conv = self.convs.get(name)
            norms = (conv.weight.detach().flatten(1).norm(dim=1)
                     if conv is not None else None)
            dead = self.controller.last_dead.get(name)
            healthy = (norms[~dead].median().item()
                       if norms is not None and dead is not None
                       and (~dead).any() else float('nan'))
            for c in mask.nonzero().flatten().tolist():
                previous = self.open.pop((name, c), None)
                if previous is not None:
                    previous.ended = 'reshift'
                    self.closed.append(previous)
                self.open[(name, c)] = Episode(
                    name, c, result.step, bn.weight.detach()[c].item(),
                    bn.bias.detach()[c].item(),
                    norms[c].item() / healthy if norms is not None
                    else float('nan'), z=z)
                self._last_beta.pop((name, c), None)

    def close(self) -> dict:
        for handle in self.handles:
            handle.remove()
        self.closed += list(self.open.values())
        self.open = {}
        return summarize(self.closed)


def _median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


def summarize(episodes: list[Episode]) -> dict:
    """The numbers of the module docstring, over all episodes of a run."""
    died, lived = [], []
    shares = {'beta': [], 'gamma': [], 'xhat': []}
    for e in episodes:
        if len(e.batches) < 2:
            continue
        active = [b[1] > 0 for b in e.batches]
        last_active = max((i for i, a in enumerate(active) if a), default=-1)
        if last_active == len(active) - 1:
            lived.append(e)
            continue
        e.death = last_active + 1  # batches until it stopped firing for good
        died.append(e)
        y0, _, g0, b0, x0, _ = e.batches[0]
        yd, _, gd, bd, xd, _ = e.batches[e.death]
        fall = y0 - yd
        if fall > 0:
            shares['beta'].append((b0 - bd) / fall)
            shares['gamma'].append((abs(g0) - abs(gd)) * x0 / fall)
            shares['xhat'].append(abs(gd) * (x0 - xd) / fall)

    for e in episodes:  # s and margin from the first batch after the shift
        if e.batches and math.isnan(e.s):
            e.s = e.batches[0][5]
            e.margin = abs(e.gamma) * e.z * e.s

    def group(name, members):
        return {
            f'{name}_episodes': len(members),
            f'{name}_s_median': _median([e.s for e in members]),
            f'{name}_margin_median': _median([e.margin for e in members]),
            f'{name}_beta_step_median': _median(
                [s for e in members for s in e.beta_steps[:20]]),
            f'{name}_filter_ratio_median': _median(
                [e.filter_ratio for e in members]),
            f'{name}_active_first_batch_median': _median(
                [e.batches[0][1] for e in members]),
        }

    grads = [g for e in episodes for g in e.grads]
    return {
        'episodes': len(died) + len(lived),
        'died': len(died),
        'died_steps_median': _median([e.death for e in died]),
        'died_within_20_steps': sum(e.death <= 20 for e in died),
        'share_median': {k: _median(v) for k, v in shares.items()},
        **group('died', died), **group('lived', lived),
        'grad_over_l2_median': {
            k: _median([g[i] for g in grads if len(g) > i])
            for i, k in enumerate(('gamma', 'beta', 'filter'))},
    }


def table(results: list[dict]) -> str:
    """Markdown: one row per variant, the per-run summaries' medians and
    totals over seeds."""
    rows = {}
    for result in results:
        rows.setdefault(result['job']['variant'], []).append(result)
    lines = ['| variant | seeds | dead % (end) | shift episodes | died again '
             '| steps to dying again (median) | fall of max y: β / γ / x̂ '
             'share (median) | loss grad / L2 pull: γ / β / filter (median) '
             '| filter norm / live median at the shift (died, lived) |',
             '|---|---|---|---|---|---|---|---|---|']

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float('nan')

    for variant, runs in rows.items():
        probes = [r['recollapse'] for r in runs]
        episodes = sum(p['episodes'] for p in probes)
        died = sum(p['died'] for p in probes)
        share = [med([p['share_median'][k] for p in probes])
                 for k in ('beta', 'gamma', 'xhat')]
        grads = [med([p['grad_over_l2_median'][k] for p in probes])
                 for k in ('gamma', 'beta', 'filter')]
        lines.append(
            f'| {VARIANTS[variant].label} | {len(runs)} '
            f'| {statistics.fmean(r["dead_pct"] for r in runs):.1f} '
            f'| {episodes} | {died} ({100 * died / max(episodes, 1):.0f}%) '
            f'| {med([p["died_steps_median"] for p in probes]):.0f} '
            f'| {share[0]:.2f} / {share[1]:.2f} / {share[2]:.2f} '
            f'| {grads[0]:.3g} / {grads[1]:.3g} / {grads[2]:.3g} '
            f'| {med([p["died_filter_ratio_median"] for p in probes]):.3f}, '
            f'{med([p["lived_filter_ratio_median"] for p in probes]):.3f} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    from ..benchmark import machine
    from ..markdown import write_generated
    from .training import Job, run
    parser = argparse.ArgumentParser(prog=PROG,
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--network', default='basicnet')
    parser.add_argument('--regime', default='adam_l2')
    parser.add_argument('--variants', nargs='+', default=['shipped'],
                        choices=[v for v, spec in VARIANTS.items()
                                 if spec.psbn])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--epochs', type=int, default=15)
    parser.add_argument('--json', help='write the runs\' summaries here')
    parser.add_argument('--from-json', dest='from_json',
                        help='render an earlier --json, train nothing')
    parser.add_argument('--out', help='markdown page: the recollapse section')
    args = parser.parse_args(argv)
    if args.from_json:
        [record] = read_records([args.from_json])
    else:
        torch.set_num_threads(1)
        results, started = [], time.perf_counter()
        for variant in args.variants:
            for seed in args.seeds:
                job = Job(args.network, args.regime, variant, seed,
                          args.epochs)
                found = run(job, probes=[RecollapseProbe])
                results.append(dict(job=found['job'],
                                    dead_pct=found['dead_pct'],
                                    test_acc=found['test_acc'],
                                    recollapse=found['probes'][0]))
                print(json.dumps(results[-1]), flush=True)
        record = dict(machine=machine(),
                      argv=sys.argv[1:] if argv is None else list(argv),
                      wall_seconds=time.perf_counter() - started,
                      results=results)
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=1) + '\n')
    text = table(record['results'])
    print(text)
    if args.out:
        write_generated(args.out, 'recollapse', (
            f'Machine: {record["machine"]}. Command: `python -m '
            f'research.collapse_study.recollapse '
            f'{shlex.join(record["argv"])}` '
            f'({record["wall_seconds"] / 60:.1f} min).'
            + ''.join(f' Renamed: {note}.'
                      for note in record.get('renamed', []))
            + f'\n\n{text}'),
            title='Collapse study: BN vs psBN')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(PROG, main))
