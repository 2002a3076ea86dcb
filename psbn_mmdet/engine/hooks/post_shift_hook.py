"""``PostShiftHook``: psBN's recovery in an mmengine run (``custom_hooks``).

::

    custom_hooks = [dict(type='PostShiftHook', interval=50)]

It logs, per stage (stem, layer1..layer4), through the runner's MessageHub so
the text log, the JSON log and every visualizer backend (TensorBoard...) see
:func:`log_key` ``(kind, stage)`` for each of :data:`LOG_KINDS`:
``psbn/dead_<stage>`` (pre-ReLU channels dead in the last window),
``psbn/collapsed_gamma_<stage>`` (|γ| < 1e-3) and ``psbn/recovered_<stage>``
(shifts so far).  At the first training iteration it logs the loaded
weights' dead channels per stage (dead on the first batch, before any
revival: what a pretrained checkpoint brings), as ``psbn/dead_<stage>`` at
step 0 for the visualizer and one line in the text log; and one warning at
train start when the optimizer is a known collapse regime
(:func:`~psbn_mmdet.core.criteria.collapse_regime`).  The controller's counters are saved in checkpoints under
:data:`CHECKPOINT_KEY` and restored on resume.  Windows count optimizer steps,
so ``accumulative_counts`` is respected.

At train start it also logs, per stage, which rule the psBN layers apply
(the fresh unit, or the shift where the layer that reads a channel is not
known: a ResNet stem, ResNeXt's grouped convs, ResNeSt's split attention).
A checkpoint saved between a revival and the next training batch holds, for
the revived channels, running statistics measured on the saving iteration's
batch (:meth:`~psbn_mmdet.core.controller.PostShiftController.pending_statistics`),
so ``load_from``, ``tools/test.py``, export and the report read what
training will use; ``--resume`` still recalibrates on the next batch, as the
uninterrupted run does.  The fresh units' draws are seeded by
``randomness.seed`` as rank 0 has it: identical on every rank also under
``diff_rank_seed=True``.
"""
from __future__ import annotations

import torch
from mmengine.dist import broadcast_object_list
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...core.controller import PostShiftController, check_options
from ...core.criteria import collapse_regime, per_stage
from ...core.revival import fresh_rule
from ...core.statistics import is_trainable
from ...models.layers import restore_post_shift
from ...utils.errors import UserError

#: the checkpoint entry holding the controller's state
CHECKPOINT_KEY = 'psbn'
#: what the hooks log per stage (see :func:`log_key`)
LOG_KINDS = ('dead', 'collapsed_gamma', 'recovered')


def log_key(kind: str, stage: str) -> str:
    """The name a per-stage count is logged under: ``psbn/<kind>_<stage>``
    (``train/`` in front in the MessageHub, as mmengine logs it)."""
    return f'psbn/{kind}_{stage}'


def optimizer_stepped(optim_wrapper) -> bool:
    """True when this iteration's ``update_params`` stepped the optimizer.

    mmengine's ``OptimWrapper`` counts backward passes; after one,
    ``should_update()`` is True exactly when it also stepped.  An
    ``OptimWrapperDict`` stepped when any of its wrappers did.
    """
    wrappers = getattr(optim_wrapper, 'optim_wrappers', None)
    if wrappers is not None:
        return any(optimizer_stepped(w) for w in wrappers.values())
    should_update = getattr(optim_wrapper, 'should_update', None)
    return True if should_update is None else bool(should_update())


def same_on_every_rank(value: int) -> int:
    """Rank 0's ``value`` on every rank (a collective when distributed):
    the runner's seed differs per rank under ``diff_rank_seed=True``."""
    box = [int(value)]
    broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def _forward(model, data_batch):
    """The model's forward on a training batch, as mmengine runs it
    (``data_preprocessor``, then ``mode='tensor'``)."""
    data = model.data_preprocessor(data_batch, False)
    if isinstance(data, dict):
        return model(**data, mode='tensor')
    return model(*data, mode='tensor')


def runner_model(runner):
    """``runner.model`` without its wrapper (DDP, FSDP...)."""
    model = runner.model
    return model.module if is_model_wrapper(model) else model


def find_controller(runner, needed_by: str | None = None
                    ) -> PostShiftController | None:
    """The controller of the runner's (first) :class:`PostShiftHook`; None
    before training or without one, or, when ``needed_by`` names the
    asking hook, a one-line :class:`UserError` saying it needs one."""
    controller = next((hook.controller for hook in runner.hooks
                       if isinstance(hook, PostShiftHook)
                       and hook.controller is not None), None)
    if controller is None and needed_by is not None:
        raise UserError(f'{needed_by} needs a PostShiftHook before it in '
                        'custom_hooks')
    return controller


@HOOKS.register_module()
class PostShiftHook(Hook):
    """Wraps :class:`PostShiftController`: detect, post-shift, log.

    Args:
        interval: log the per-stage scalars every ``interval`` iterations.
        window: detection window for every layer; None uses each psBN layer's
            ``window`` from ``norm_cfg``.
        optimizer_reset: see :class:`PostShiftController`.
        shift: False to monitor only.
        revival: the revival rule of every psBN layer (one of
            :data:`~psbn_mmdet.core.revival.REVIVALS`); None (default)
            uses each layer's ``revival`` from ``norm_cfg``.
        seed: seeds the fresh filters of a re-initializing revival; None
            (default) uses the runner's seed (``randomness.seed``).
    """

    # After the optimizer step (inside train_step), before LoggerHook.
    priority = 'NORMAL'

    def __init__(self, interval: int = 50, window: int | None = None,
                 optimizer_reset: str = 'none', shift: bool = True,
                 revival: str | None = None,
                 seed: int | None = None) -> None:
        name = type(self).__name__
        if (isinstance(interval, bool) or not isinstance(interval, int)
                or interval < 1):
            raise ValueError(
                f'{name}: interval must be an integer >= 1, got {interval!r}')
        try:  # validated here, when the Runner is built, not at train start
            check_options(window, optimizer_reset, revival, shift, seed)
        except ValueError as error:
            raise ValueError(f'{name}: {error}') from None
        self.interval = interval
        self.window = window
        self.optimizer_reset = optimizer_reset
        self.shift = shift
        self.revival = revival
        self.seed = seed
        self._inheritance_logged = False
        self.controller: PostShiftController | None = None
        self._resumed_state: dict | None = None
        #: the last training batch (pending recalibrations at a save)
        self._last_batch = None

    def before_train(self, runner) -> None:
        # Resume loads the checkpoint (``after_load_checkpoint``) before this
        # builds the controller.  The Runner has converted SyncBN by now
        # (reverted in a one-process run, ``sync_bn`` in a distributed one):
        # layers that were psBN post-shift again.
        model = runner_model(runner)
        _, restored = restore_post_shift(model)
        if restored:
            runner.logger.info(
                f'{type(self).__name__}: {restored} BN layer(s) that the '
                'Runner converted (SyncBN reverted in a one-process run, or '
                'sync_bn) post-shift again, as psBN / psSyncBN')
        self.controller = PostShiftController(
            model,
            runner.optim_wrapper,
            shift=self.shift,
            window=self.window,
            optimizer_reset=self.optimizer_reset,
            revival=self.revival,
            seed=self.seed if self.seed is not None else same_on_every_rank(
                runner.seed or 0))
        self._check_layers(runner)
        self._warn_collapse_regime(runner)
        self._log_rules(runner)
        if self._resumed_state is not None:
            self.controller.load_state_dict(self._resumed_state)
            if self.controller.resume_note:
                runner.logger.warning(
                    f'{type(self).__name__}: {self.controller.resume_note}')
        unplaced = self.controller.unplaced
        if unplaced:
            runner.logger.warning(
                f'{type(self).__name__}: no ReLU-after-BN structure found for '
                f'{len(unplaced)} BN layer(s), left untouched: '
                f'{", ".join(unplaced[:8])}{" ..." if len(unplaced) > 8 else ""}')
        self._publish(runner)

    def _check_layers(self, runner) -> None:
        """Never run without the layers the hook is for."""
        if not self.controller.shiftable:
            pre_relu = len(self.controller.pre_relu)
            raise UserError(
                f'{type(self).__name__} found no psBN layer to post-shift '
                f'among the model\'s {pre_relu} pre-ReLU BN layer(s): set '
                "the backbone's norm_cfg=dict(type='psBN') (or psSyncBN), "
                'or use CollapseMonitorHook to count dead channels only')

    def _log_rules(self, runner) -> None:
        """One line when psBN layers configured to re-initialize fall back
        to the shift: per stage, the layers that re-initialize of those
        configured to."""
        controller = self.controller
        if not self.shift:
            return
        fresh, configured = [], []
        for name in controller.shiftable:
            rule = controller.revival or getattr(controller.bns[name],
                                                 'revival', 'shift')
            if (fresh_rule(rule) == 'shift'
                    or not is_trainable(controller.bns[name])):
                continue  # a shift by choice, or a frozen layer
            stage = controller.roles[name].stage
            configured.append((stage, 1))
            if fresh_rule(controller.revival_of(name)) != 'shift':
                fresh.append((stage, 1))
        fresh = per_stage(fresh, controller.stages)
        configured = per_stage(configured, controller.stages)
        if sum(fresh.values()) == sum(configured.values()):
            return
        parts = ', '.join(f'{stage} {fresh[stage]}/{configured[stage]}'
                          for stage in controller.stages if configured[stage])
        runner.logger.info(
            f'{type(self).__name__}: dead channels are re-initialized in '
            f'{sum(fresh.values())} of {sum(configured.values())} psBN '
            f'layers ({parts}); the others fall back to the shift: no known '
            'layer reads their channels (a stem, grouped, split-attention or '
            'weight-standardized convs, a frozen conv)')

    def _warn_collapse_regime(self, runner) -> None:
        regimes = {collapse_regime(optimizer)
                   for optimizer in self.controller.optimizers} - {None}
        if regimes:
            runner.logger.warning(
                f'{type(self).__name__}: {", ".join(sorted(regimes))} is a '
                'known collapse regime (adaptive learning rate, coupled '
                'weight decay): expect dead channels; AdamW or SGD keep '
                'them alive')

    def _log_inheritance(self, runner) -> None:
        """The loaded weights' dead channels (on the first batch), per
        stage: the text log, and the visualizer at step 0."""
        controller = self.controller
        dead = controller.dead_so_far_by_stage()
        total = per_stage(((controller.roles[name].stage,
                            controller.bns[name].num_features)
                           for name in controller.pre_relu
                           if controller.stats[name].max is not None),
                          controller.stages)
        runner.visualizer.add_scalars(
            {log_key('dead', stage): count for stage, count in dead.items()},
            step=runner.iter)
        parts = ', '.join(f'{stage} {dead[stage]}/{total[stage]}'
                          for stage in total if total[stage])
        runner.logger.info(
            f'{type(self).__name__}: at train start (iteration '
            f'{runner.iter}) the loaded weights have {sum(dead.values())} '
            f'of {sum(total.values())} pre-ReLU channels dead on the first '
            f'batch ({parts}; frozen layers not measured); '
            + ('those still dead at a window\'s end are revived'
               if self.shift else 'monitor only, none is revived'))

    def after_train(self, runner) -> None:
        self.controller.close()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        # windows count optimizer steps: with gradient accumulation
        # (``accumulative_counts``) not every iteration is one
        if not self._inheritance_logged:
            self._inheritance_logged = True
            self._log_inheritance(runner)
        self._last_batch = data_batch
        if optimizer_stepped(runner.optim_wrapper):
            self.controller.step()
        if self.every_n_train_iters(runner, self.interval):
            self._publish(runner)

    def _publish(self, runner) -> None:
        hub = runner.message_hub
        controller = self.controller
        counts = dict(dead=controller.dead_by_stage(),
                      collapsed_gamma=controller.collapsed_gamma_by_stage(),
                      recovered=controller.recovered_by_stage())
        for kind in LOG_KINDS:
            for stage, count in counts[kind].items():
                hub.update_scalar(f'train/{log_key(kind, stage)}', count)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.controller is not None:
            checkpoint[CHECKPOINT_KEY] = self.controller.state_dict()
            self._save_recalibrated(runner, checkpoint)

    def _save_recalibrated(self, runner, checkpoint: dict) -> None:
        """Revived channels awaiting their recalibration get, in the saved
        weights, the running statistics of the last training batch (the
        model in eval mode, no gradient; the live model is unchanged)."""
        model = runner_model(runner)
        pending = [name for name, bn in self.controller.bns.items()
                   if getattr(bn, 'pending_recalibration', None) is not None]
        if not pending:
            return
        estimates, why = {}, 'no training batch seen'
        if self._last_batch is not None:
            training = model.training
            model.eval()
            try:
                estimates = self.controller.pending_statistics(
                    lambda: _forward(model, self._last_batch))
            except Exception as error:  # noqa: BLE001 - say it, keep saving
                why = f'{type(error).__name__}: {error}'
            finally:
                model.train(training)
        weights = checkpoint.get('state_dict', {})
        for name, (channels, mean, var) in estimates.items():
            for key, value in (('running_mean', mean), ('running_var', var)):
                key = f'{name}.{key}'
                if key in weights:  # a copy: the live buffer stays
                    weights[key] = weights[key].clone()
                    weights[key][channels.to(weights[key].device)] = \
                        value.to(weights[key])
        missing = [name for name in pending if name not in estimates]
        if missing:
            runner.logger.warning(
                f'{type(self).__name__}: the checkpoint holds stale running '
                f'statistics for the revived channels of {len(missing)} '
                f'layer(s) ({missing[0]}...): {why}; --resume recalibrates '
                'them on the next batch')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(CHECKPOINT_KEY)
        # as mmengine's EMAHook: ``load_from`` alone starts counting anew
        if state is not None and runner._resume:
            self._resumed_state = state
