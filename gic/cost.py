"""What an epoch of the two-phase trainer costs, in one unit that holds on any hardware.

    epoch_cost(cfg, phase=1)        # 0.0 on cached features, 1.0 with augmentation
    epoch_cost(cfg, phase=2)        # 1 + 2 x the share of VGG16's arithmetic in the unfrozen convs
    trial_costs(cfg)                # [cumulative cost after epoch 1, 2, ..., E1+E2]

The unit is one forward pass of the VGG16 conv base over the training split. It counts the
multiply-adds of the 13 conv layers (the head's are under 0.01% of the base's and count as zero):
- phase 1 on cached features trains the head alone: 0 (the feature pass is made once per search
  and shared by every trial, see gic.caches);
- phase 1 with augmentation runs the frozen base forward on every augmented image: 1;
- phase 2 runs the base forward and back-propagates through the top n unfrozen convs, about twice
  their forward arithmetic (gradients of inputs and of weights): 1 + 2 x share(n).
Validation is left out: it runs on cached features in phase 1 and on the cached output of the frozen
lower layers in phase 2 (gic.caches), a few % of an epoch.

VGG16's conv shapes are from Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition" (2015), configuration D: 3x3 convs, 2x2 max-pool after each block. No TensorFlow
here, so the search can place its rungs before any trial starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from gic.config import TrainConfig

# (input channels, output channels, pools before this conv) for VGG16's 13 convs, bottom to top
VGG16_CONVS = ((3, 64, 0), (64, 64, 0), (64, 128, 1), (128, 128, 1), (128, 256, 2), (256, 256, 2),
               (256, 256, 2), (256, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 4), (512, 512, 4),
               (512, 512, 4))


def conv_macs(image_size: int) -> list[int]:
    """Multiply-adds per image of each of VGG16's 13 convs (same padding) at `image_size` px."""
    macs = []
    for c_in, c_out, pools in VGG16_CONVS:
        side = image_size >> pools  # each 2x2 max-pool halves the side (floor)
        macs.append(side * side * 9 * c_in * c_out)
    return macs


def unfrozen_share(image_size: int, unfreeze_layers: int) -> float:
    """The share (0..1) of the base's forward arithmetic in its top `unfreeze_layers` convs."""
    macs = conv_macs(image_size)
    return sum(macs[len(macs) - unfreeze_layers:]) / sum(macs) if unfreeze_layers > 0 else 0.0


def epoch_cost(cfg: "TrainConfig", phase: int) -> float:
    """The cost of one epoch of `phase` (1 or 2), in base forward passes over the training split."""
    if phase == 1:
        augmented = cfg.phase1.augment and cfg.model.augmentation.enabled
        return 1.0 if augmented else 0.0
    return 1.0 + 2.0 * unfrozen_share(cfg.data.image_size, cfg.phase2.unfreeze_layers)


def trial_costs(cfg: "TrainConfig") -> list[float]:
    """The cumulative cost after each global epoch 1..E1+E2 of a trial with this config."""
    out, total = [], 0.0
    e2 = cfg.phase2.epochs if cfg.fine_tunes else 0
    for phase, epochs in ((1, cfg.phase1.epochs), (2, e2)):
        for _ in range(epochs):
            total += epoch_cost(cfg, phase)
            out.append(round(total, 6))
    return out
