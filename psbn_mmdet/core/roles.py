"""Where each BN sits: its ResNet stage and its role (pre-ReLU or pre-add).

Two sources, one rule:

* :func:`roles_from_names` works on names alone (state-dict prefixes or module
  names) for ResNets laid out as in mmdet and torchvision: stem ``bn1`` or
  ``stem.*``, blocks ``layerN.K`` whose last ``bnJ`` and ``downsample`` BN are
  summed with the residual (pre-add) and whose other BNs feed a ReLU (pre-ReLU).
  The report uses it on checkpoints without building a model.
* :func:`roles_from_model` checks the same rule against the module structure
  (block classes, the ReLU after the stem), reads the declared ``order`` of
  mmcv's ``ConvModule`` (FPN, heads: ``('conv', 'norm', 'act')`` with a
  ReLU makes its BN pre-ReLU; FX cannot trace it, its ``norm`` and
  ``activate`` arguments enter control flow), and, for any other backbone,
  traces it with ``torch.fx``: a BN whose only user is a ReLU is pre-ReLU.  BNs it cannot
  place get the role ``None`` (:func:`unplaced`); they are never shifted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

PRE_RELU = 'pre-relu'
PRE_ADD = 'pre-add'
STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')

_LAYER = re.compile(r'layer(\d+)$')
_BLOCK_BN = re.compile(r'(?:bn|norm)(\d+)$')


@dataclass(frozen=True)
class BNRole:
    stage: str  # 'stem', 'layer1'.. or 'other'
    role: str | None  # PRE_RELU, PRE_ADD, or None when unknown


def _split_stage(name: str) -> tuple[int, str] | None:
    """Index of the ``layerN`` part and the stage, or None outside layers."""
    parts = name.split('.')
    for i, part in enumerate(parts):
        if _LAYER.match(part):
            return i, part
    return None


def roles_from_names(names) -> dict[str, BNRole]:
    """Roles of ResNet BNs given by name; names that fit no rule are left out.

    ``names`` are BN prefixes such as ``backbone.layer1.0.bn3`` or ``bn1``.
    """
    names = list(names)
    block_bns: dict[str, list[tuple[int, str]]] = {}
    roles: dict[str, BNRole] = {}
    for name in names:
        parts = name.split('.')
        found = _split_stage(name)
        if found is None:
            if parts[-1] in ('bn1', 'norm1') or 'stem' in parts:
                roles[name] = BNRole('stem', PRE_RELU)
            continue
        i, stage = found
        if len(parts) < i + 3 or not parts[i + 1].isdigit():
            continue
        rest = parts[i + 2:]
        if rest[0] == 'downsample':
            roles[name] = BNRole(stage, PRE_ADD)
            continue
        match = _BLOCK_BN.match(rest[0])
        if len(rest) == 1 and match:
            block = '.'.join(parts[:i + 2])
            block_bns.setdefault(block, []).append((int(match.group(1)), name))
    for members in block_bns.values():
        last = max(members)[0]
        for index, name in members:
            stage = _split_stage(name)[1]
            roles[name] = BNRole(stage, PRE_ADD if index == last else PRE_RELU)
    if all(role.stage == 'stem' for role in roles.values()):
        return {}  # a ``bn1`` without ResNet blocks is no ResNet's stem
    return roles


# ------------------------------------------------------------ model structure
@dataclass(frozen=True)
class InnerLink:
    """A pre-ReLU BN inside a residual block, between two of its convs
    (attribute names within the block)."""
    conv: str  # the conv the BN normalizes: 'conv1'
    norm: str  # the BN: 'bn1'
    next_conv: str  # the conv its ReLU feeds: 'conv2'
    next_norm: str  # the BN after next_conv: 'bn2'


def block_norms(block: nn.Module) -> list[str] | None:
    """The BN attribute names of a ResNet block's convs, in order (the last
    is summed with the residual), or None for any other module.

    mmdet names the BNs in ``norm1_name``...; torchvision's blocks call
    them ``bn1``...  A name may be absent from the block: mmdet's ResNeSt
    Bottleneck deletes ``norm2`` (its ``conv2`` is a split-attention conv
    that normalizes inside).
    """
    kind = type(block).__name__
    convs = {'BasicBlock': 2, 'Bottleneck': 3}.get(kind)
    if convs is None or not all(hasattr(block, f'conv{i}')
                                for i in range(1, convs + 1)):
        return None
    return [getattr(block, f'norm{i}_name', f'bn{i}')
            for i in range(1, convs + 1)]


def inner_links(block: nn.Module) -> list[InnerLink] | None:
    """The channels inside a ResNet block, or None for any other module.

    A BasicBlock's ``bn1`` feeds ``conv2``; a Bottleneck's ``bn1`` and
    ``bn2`` feed ``conv2`` and ``conv3``.  Only the block's next conv reads
    them (the block's last BN and the downsample path are summed with the
    residual).  A link whose BN the block does not have (ResNeSt's
    ``bn2``) is left out.
    """
    norms = block_norms(block)
    if norms is None:
        return None
    links = [InnerLink(f'conv{i + 1}', norms[i], f'conv{i + 2}',
                       norms[i + 1]) for i in range(len(norms) - 1)]
    return [link for link in links
            if isinstance(getattr(block, link.norm, None), _BatchNorm)]


def _is_resnet(module: nn.Module) -> bool:
    """A ResNet body: ``layer1`` plus a stem (``conv1`` or V1d's ``stem``)."""
    return hasattr(module, 'layer1') and (hasattr(module, 'conv1')
                                          or hasattr(module, 'stem'))


def _stem_roles(prefix: str, resnet: nn.Module) -> dict[str, BNRole]:
    roles = {}
    stem = getattr(resnet, 'stem', None)
    if isinstance(stem, nn.Sequential):
        children = list(stem.named_children())
        for (name, child), (_, after) in zip(children, children[1:]):
            if isinstance(child, _BatchNorm) and isinstance(after, nn.ReLU):
                roles[f'{prefix}stem.{name}'] = BNRole('stem', PRE_RELU)
    # torchvision: ``bn1``; mmdet: the name in ``norm1_name`` (also ``bn1``)
    name = getattr(resnet, 'norm1_name', 'bn1')
    if isinstance(getattr(resnet, name, None), _BatchNorm) and isinstance(
            getattr(resnet, 'relu', None), nn.ReLU):
        roles[f'{prefix}{name}'] = BNRole('stem', PRE_RELU)
    return roles


class _BNLeafTracer(torch.fx.Tracer):
    """Keeps every BN subclass (psBN included) a leaf of the traced graph."""

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        return isinstance(module, _BatchNorm) or super().is_leaf_module(
            module, qualname)


def _is_relu(node: torch.fx.Node, modules: dict) -> bool:
    if node.op == 'call_module':
        return isinstance(modules.get(node.target), nn.ReLU)
    if node.op in ('call_function', 'call_method'):
        return getattr(node.target, '__name__', node.target) in ('relu',
                                                                 'relu_')
    return False


def _fx_roles(prefix: str, module: nn.Module) -> dict[str, BNRole]:
    """BNs of an arbitrary module by an FX trace: pre-ReLU when only a ReLU
    reads the output, else unknown.  Empty when the module cannot be traced."""
    try:
        graph = _BNLeafTracer().trace(module)
    except Exception:  # noqa: BLE001 - any untraceable model falls back
        return {}
    modules = dict(module.named_modules())
    roles = {}
    for node in graph.nodes:
        if node.op == 'call_module' and isinstance(
                modules.get(node.target), _BatchNorm):
            users = list(node.users)
            pre_relu = users and all(_is_relu(u, modules) for u in users)
            roles[f'{prefix}{node.target}'] = BNRole(
                'other', PRE_RELU if pre_relu else None)
    return roles


def _conv_module_role(module: nn.Module) -> str | None:
    """The role of an mmcv ``ConvModule``'s BN from its declared ``order``
    (duck-typed: core imports no mmcv); None for any other module or a
    ConvModule without a norm."""
    order = getattr(module, 'order', None)
    name = getattr(module, 'norm_name', None)
    if not (isinstance(order, tuple) and isinstance(name, str)
            and isinstance(getattr(module, name, None), _BatchNorm)
            and 'norm' in order):
        return None
    after = order[order.index('norm') + 1:order.index('norm') + 2]
    relu = (getattr(module, 'with_activation', False)
            and isinstance(getattr(module, 'activate', None), nn.ReLU))
    return PRE_RELU if after == ('act', ) and relu else None


def roles_from_model(model: nn.Module) -> dict[str, BNRole]:
    """Stage and role for every BN module of ``model`` (role None: unknown,
    see :func:`unplaced`)."""
    bns = {n for n, m in model.named_modules() if isinstance(m, _BatchNorm)}
    roles: dict[str, BNRole] = {}
    for name, module in model.named_modules():
        prefix = f'{name}.' if name else ''
        if _is_resnet(module):
            roles.update(_stem_roles(prefix, module))
        elif (links := inner_links(module)) is not None:
            found = _split_stage(name)
            stage = found[1] if found else 'other'
            block_bns = [(link.norm, PRE_RELU) for link in links]
            block_bns.append((block_norms(module)[-1], PRE_ADD))
            for child, role in block_bns:
                if isinstance(getattr(module, child, None), _BatchNorm):
                    roles[f'{prefix}{child}'] = BNRole(stage, role)
            downsample = getattr(module, 'downsample', None)
            if downsample is not None:
                for sub_name, sub in downsample.named_modules():
                    if isinstance(sub, _BatchNorm):
                        roles[f'{prefix}downsample.{sub_name}'.rstrip(
                            '.')] = BNRole(stage, PRE_ADD)
        elif (role := _conv_module_role(module)) is not None:
            roles[f'{prefix}{module.norm_name}'] = BNRole('other', role)
    left = bns - set(roles)
    # Anything else: trace the top-level child holding it (or the model).
    owners = {n.split('.')[0] if '.' in n else '' for n in left}
    for owner in sorted(owners):
        module = model.get_submodule(owner) if owner else model
        prefix = f'{owner}.' if owner else ''
        traced = _fx_roles(prefix, module)
        roles.update({n: r for n, r in traced.items() if n in left})
    for name in bns - set(roles):
        roles[name] = BNRole('other', None)
    return roles


def unplaced(roles: dict[str, BNRole]) -> list[str]:
    """The BNs whose role is unknown: no ReLU-after-BN structure was found
    for them, so they are never shifted."""
    return sorted(name for name, role in roles.items() if role.role is None)
