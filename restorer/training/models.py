"""Model classes for BasicSR's training pipeline, registered in its ``MODEL_REGISTRY``.

``RestorerSRModel`` is BasicSR's ``SRModel`` (L1/MSE/Charbonnier/perceptual losses, EMA with
``params``/``params_ema`` checkpoints, validation with BasicSR metrics, resumable states) plus:

- Adam, AdamW and SGD (``train.optim_g.type``);
- gradient clipping: ``train.grad_clip`` (max total norm; off when absent or 0);
- speed options: ``train.speed`` (bf16 autocast, channels_last, ``torch.compile``; see
  :mod:`restorer.training.speed`, measured by ``bench/bench_train_step.py``);
- ``pretrain_network_g`` may be a ``.safetensors`` file (the shipped weights fine-tune directly);
- DistributedDataParallel on CPUs (gloo) as well as GPUs;
- the official repositories' ``model_type`` names (``HATModel``, ``DRCTModel``, ``CRAFT_Model``)
  as aliases, so their option files run unchanged. Our architectures pad any input size
  themselves, which is what those classes' ``test`` added to ``SRModel``.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from restorer._compat import ensure_basicsr_importable

ensure_basicsr_importable()

from basicsr.models.sr_model import SRModel  # noqa: E402
from basicsr.utils import get_root_logger  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402

from restorer.training.archs import register_in_basicsr  # noqa: E402
from restorer.training.speed import SpeedOptions  # noqa: E402

# SRModel builds network_g through BasicSR's ARCH_REGISTRY: every training model module imports this
# one, so restorer's architectures are copied there as soon as training code is loaded.
register_in_basicsr()

OPTIMIZERS = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW, "SGD": torch.optim.SGD}


@MODEL_REGISTRY.register()
class RestorerSRModel(SRModel):
    """Image-to-image restoration / super-resolution model (see module docstring)."""

    def model_to_device(self, net: torch.nn.Module) -> torch.nn.Module:
        net = net.to(self.device)
        if self.opt["dist"]:
            find_unused = self.opt.get("find_unused_parameters", False)
            device_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else None
            return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        if self.opt["num_gpu"] > 1:
            return DataParallel(net)
        return net

    @property
    def speed(self) -> SpeedOptions:
        if not hasattr(self, "_speed"):
            train = self.opt.get("train") or {}
            self._speed = SpeedOptions.from_options(train.get("speed"), self.device)
            self._net_g_call = self._speed.wrap(self.net_g)
            if train.get("speed"):
                get_root_logger().info(f"Training step: {self._speed.describe()}")
        return self._speed

    def load_network(self, net, load_path, strict=True, param_key="params"):
        """BasicSR's loader, plus ``.safetensors`` files (a flat state dict, ``param_key`` unused)."""
        if str(load_path).endswith(".safetensors"):
            from safetensors.torch import load_file

            net = self.get_bare_model(net)
            state = load_file(str(load_path))
            get_root_logger().info(
                f"Loading {net.__class__.__name__} from {Path(load_path).name} (safetensors)."
            )
            if not strict:
                own = net.state_dict()
                state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            net.load_state_dict(state, strict=strict)
            return
        super().load_network(net, load_path, strict, param_key)

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        try:
            return OPTIMIZERS[optim_type](params, lr, **kwargs)
        except KeyError:
            raise NotImplementedError(
                f"optimizer {optim_type} is not supported; use one of {', '.join(OPTIMIZERS)}"
            ) from None

    def optimize_parameters(self, current_iter: int) -> None:
        """One step: pixel and/or perceptual loss, backward, optional clipping, step, EMA update."""
        self.optimizer_g.zero_grad()
        speed = self.speed
        with speed.autocast_context():
            self.output = self._net_g_call(speed.input(self.lq))
        self.output = self.output.float()
        losses: OrderedDict[str, torch.Tensor] = OrderedDict()
        if self.cri_pix:
            losses["l_pix"] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            percep, style = self.cri_perceptual(self.output, self.gt)
            if percep is not None:
                losses["l_percep"] = percep
            if style is not None:
                losses["l_style"] = style
        sum(losses.values()).backward()
        max_norm = float(self.opt["train"].get("grad_clip") or 0)
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), max_norm)
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(losses)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)


for _alias in ("HATModel", "DRCTModel", "CRAFTModel", "CRAFT_Model"):
    MODEL_REGISTRY.register()(
        type(_alias, (RestorerSRModel,), {"__doc__": f"Alias of RestorerSRModel ({_alias})."})
    )
