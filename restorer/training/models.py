"""Model classes for BasicSR's training pipeline, registered in its ``MODEL_REGISTRY``.

``RestorerSRModel`` is BasicSR's ``SRModel`` (L1/MSE/Charbonnier/perceptual losses, EMA with
``params``/``params_ema`` checkpoints, validation with BasicSR metrics, resumable states) plus:

- Adam, AdamW and SGD (``train.optim_g.type``);
- gradient clipping: ``train.grad_clip`` (max total norm; off when absent or 0);
- DistributedDataParallel on CPUs (gloo) as well as GPUs;
- the official repositories' ``model_type`` names (``HATModel``, ``DRCTModel``, ``CRAFT_Model``)
  as aliases, so their option files run unchanged. Our architectures pad any input size
  themselves, which is what those classes' ``test`` added to ``SRModel``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel

from restorer._compat import ensure_basicsr_importable

ensure_basicsr_importable()

from basicsr.models.sr_model import SRModel  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402

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
        self.output = self.net_g(self.lq)
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
