"""Training learned image codecs (S2LIC) on BasicSR's pipeline.

``RateDistortionLoss``: ``lambda * 255^2 * MSE + bpp`` (the CompressAI / MLIC convention, images in
``[0, 1]``) or, with ``metric: ms-ssim``, ``lambda * (1 - MS-SSIM) + bpp``; ``bpp = sum(-log2 p) / (B H W)``
over the y and z likelihoods.

``S2LICModel`` (``model_type: S2LICModel``, alias ``CodecModel``) is a BasicSR model:

- data: any dataset giving ``gt`` (or ``lq``) images in ``[0, 1]``; BasicSR's ``PairedImageDataset``
  with the same folder as ``dataroot_gt`` and ``dataroot_lq`` and ``scale: 1`` gives random crops and
  flips. Crops must be multiples of 64; the training batch must be >= 2 (BatchNorm in the context gates);
- optimisers: ``train.optim_g`` for every parameter except the EntropyBottleneck quantiles, and
  ``train.optim_aux`` (default Adam 1e-3) for those, driven by the auxiliary loss only (CompressAI's
  recipe); both are saved in the training state and resumed; the scheduler applies to both;
- ``train.grad_clip``: max gradient norm of the main parameters (CompressAI / MLIC++ use 1.0);
- validation: images are reflect-padded to 64 and cropped back; ``val.metrics`` may name ``bpp``
  (the model's estimate in eval mode, per original pixel), ``psnr`` (RGB, 8-bit) and ``loss`` (the RD
  loss); the best values are tracked like BasicSR's (``better: lower`` for bpp and loss);
- checkpoints: ``update(force=True)`` runs before every save, so a saved network carries CDF tables
  that match its weights; loading (``restorer.codec.load_codec``) recomputes them anyway.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from restorer._compat import ensure_basicsr_importable
from restorer.training.models import RestorerSRModel

ensure_basicsr_importable()

from basicsr.utils.registry import LOSS_REGISTRY, MODEL_REGISTRY  # noqa: E402

__all__ = ["RateDistortionLoss", "S2LICModel", "bpp_of"]


def bpp_of(likelihoods: dict[str, torch.Tensor], num_pixels: int) -> torch.Tensor:
    """``sum(-log2 p) / num_pixels`` over every likelihood tensor."""
    return sum(torch.log(v).sum() for v in likelihoods.values()) / (-math.log(2) * num_pixels)


@LOSS_REGISTRY.register()
class RateDistortionLoss(nn.Module):
    """Rate-distortion loss of a learned codec.

    Args:
        lmbda: the trade-off lambda (CompressAI's MSE ladder 0.0018 ... 0.18, MS-SSIM 2.40 ... 220).
        metric: ``"mse"`` (``lambda * 255^2 * MSE + bpp``) or ``"ms-ssim"`` (``lambda * (1 - MS-SSIM) + bpp``;
            the image sides must exceed 160 px).

    ``forward(output, target)`` takes the model's output dict and the ``(B, 3, H, W)`` target and returns
    a dict with ``loss``, ``bpp_loss`` and ``mse_loss`` or ``ms_ssim_loss``.
    """

    def __init__(self, lmbda: float = 0.0130, metric: str = "mse", loss_weight: float = 1.0) -> None:
        super().__init__()
        metric = metric.lower().replace("_", "-")
        if metric not in ("mse", "ms-ssim"):
            raise ValueError(f"metric must be 'mse' or 'ms-ssim', got {metric!r}")
        self.lmbda = float(lmbda)
        self.metric = metric
        self.loss_weight = float(loss_weight)

    def forward(self, output: dict, target: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = target.shape
        out: dict[str, torch.Tensor] = {"bpp_loss": bpp_of(output["likelihoods"], b * h * w)}
        if self.metric == "mse":
            out["mse_loss"] = torch.mean((output["x_hat"] - target) ** 2)
            distortion = self.lmbda * 255**2 * out["mse_loss"]
        else:
            from pytorch_msssim import ms_ssim

            out["ms_ssim_loss"] = ms_ssim(output["x_hat"], target, data_range=1.0)
            distortion = self.lmbda * (1 - out["ms_ssim_loss"])
        out["loss"] = self.loss_weight * (distortion + out["bpp_loss"])
        return out


def _pad64(x: torch.Tensor) -> torch.Tensor:
    from restorer.archs.layers import pad_to_multiple
    from restorer.archs.s2lic_arch import LATENT_MULTIPLE

    return pad_to_multiple(x, LATENT_MULTIPLE)[0]


@MODEL_REGISTRY.register()
class S2LICModel(RestorerSRModel):
    """BasicSR model for learned image codecs (see the module docstring)."""

    def init_training_settings(self) -> None:
        self.net_g.train()
        train_opt = self.opt["train"]
        self.ema_decay = train_opt.get("ema_decay", 0)
        if self.ema_decay > 0:
            from basicsr.archs import build_network

            self.net_g_ema = build_network(self.opt["network_g"]).to(self.device)
            self.model_ema(0)
            self.net_g_ema.eval()
        rd_opt = dict(train_opt.get("rd_opt") or {"lmbda": 0.0130, "metric": "mse"})
        rd_opt.pop("type", None)
        self.cri_rd = RateDistortionLoss(**rd_opt).to(self.device)
        self.cri_pix = None
        self.cri_perceptual = None
        self.setup_optimizers()
        self.setup_schedulers()

    def setup_optimizers(self) -> None:
        train_opt = self.opt["train"]
        main, aux = [], []
        for name, param in self.get_bare_model(self.net_g).named_parameters():
            if not param.requires_grad:
                continue
            (aux if name.endswith(".quantiles") else main).append(param)
        optim_g = dict(train_opt["optim_g"])
        self.optimizer_g = self.get_optimizer(optim_g.pop("type"), main, **optim_g)
        optim_aux = dict(train_opt.get("optim_aux") or {"type": "Adam", "lr": 1e-3})
        self.optimizer_aux = self.get_optimizer(optim_aux.pop("type"), aux, **optim_aux)
        self.optimizers += [self.optimizer_g, self.optimizer_aux]

    def feed_data(self, data: dict) -> None:
        image = data["gt"] if "gt" in data else data["lq"]
        self.gt = image.to(self.device)
        self.lq = self.gt

    def optimize_parameters(self, current_iter: int) -> None:
        """One step: RD loss on the main optimiser (optionally clipped), aux loss on its own."""
        if self.gt.shape[0] < 2:
            raise ValueError("S2LIC training needs batch_size_per_gpu >= 2 (BatchNorm in its context gates)")
        self.optimizer_g.zero_grad()
        self.optimizer_aux.zero_grad()
        output = self.net_g(self.gt)
        losses = self.cri_rd(output, self.gt)
        losses["loss"].backward()
        max_norm = float(self.opt["train"].get("grad_clip") or 0)
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.optimizer_g.param_groups[0]["params"], max_norm)
        self.optimizer_g.step()
        aux_loss = self.get_bare_model(self.net_g).aux_loss()
        self.optimizer_aux.zero_grad()  # the quantiles learn from the aux loss alone
        aux_loss.backward()
        self.optimizer_aux.step()
        self.output = output["x_hat"].detach()
        log = OrderedDict((k, v.detach()) for k, v in losses.items())
        log["aux_loss"] = aux_loss.detach()
        self.log_dict = self.reduce_loss_dict(log)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _eval_net(self) -> nn.Module:
        return self.net_g_ema if hasattr(self, "net_g_ema") else self.get_bare_model(self.net_g)

    def test(self) -> None:
        net = self._eval_net()
        was_training = net.training
        net.eval()
        with torch.no_grad():
            h, w = self.gt.shape[-2:]
            padded = _pad64(self.gt)
            out = net(padded)
            self.output = out["x_hat"][..., :h, :w].clamp(0, 1)
            self.val_bpp = float(bpp_of(out["likelihoods"], self.gt.shape[0] * h * w))
            target = padded
            losses = self.cri_rd(out, target) if hasattr(self, "cri_rd") else {}
            self.val_loss = float(losses["loss"]) if "loss" in losses else float("nan")
        if was_training:
            net.train()

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img) -> None:
        dataset_name = dataloader.dataset.opt["name"]
        wanted = list((self.opt["val"].get("metrics") or {"bpp": {}, "psnr": {}}).keys())
        if not hasattr(self, "best_metric_results"):
            self.best_metric_results = {}
        if dataset_name not in self.best_metric_results:
            self.best_metric_results[dataset_name] = {
                m: {
                    "better": "higher" if m == "psnr" else "lower",
                    "val": float("inf") * (-1 if m == "psnr" else 1),
                    "iter": -1,
                }
                for m in wanted
            }
        totals = dict.fromkeys(wanted, 0.0)
        count = 0
        for data in dataloader:
            self.feed_data(data)
            self.test()
            ref = np.round(self.gt[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.float64)
            out = np.round(self.output[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.float64)
            mse = float(np.mean((ref - out) ** 2))
            values = {
                "bpp": self.val_bpp,
                "psnr": float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse),
                "loss": self.val_loss,
            }
            for m in wanted:
                totals[m] += values.get(m, float("nan"))
            count += 1
        self.metric_results = {m: totals[m] / max(count, 1) for m in wanted}
        for m, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, m, value, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def save(self, epoch: int, current_iter: int) -> None:
        """Refresh the CDF tables (``update(force=True)``), then save as BasicSR does."""
        for net in (self.get_bare_model(self.net_g), getattr(self, "net_g_ema", None)):
            if net is not None:
                net.update(force=True)
        super().save(epoch, current_iter)

    def get_current_visuals(self) -> OrderedDict:
        return OrderedDict(result=self.output.detach().cpu(), gt=self.gt.detach().cpu())


MODEL_REGISTRY.register()(type("CodecModel", (S2LICModel,), {"__doc__": "Alias of S2LICModel."}))
