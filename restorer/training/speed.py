"""Speed options of a training step: mixed precision, memory format, ``torch.compile``.

One object states them and applies them the same way in the trainer (``train.speed`` in an option
file) and in ``bench/bench_train_step.py``, which measures each against plain fp32 eager::

    train:
      speed: {autocast: bf16, channels_last: false, compile: false}

``autocast: bf16`` runs the forward under ``torch.autocast`` (CPU: only where the processor has native
bf16 arithmetic, AVX512-BF16 or AMX; elsewhere it is emulated and slower, so it falls back to fp32
with a note). Parameters, optimizer state and the loss stay fp32. ``auto`` picks bf16 where the
device supports it.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def device_supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_supports_bf16()


@dataclass(frozen=True)
class SpeedOptions:
    """How a training step runs; the default is plain fp32 eager."""

    autocast: str | None = None  # None | "bf16" | "fp16" | "auto"
    channels_last: bool = False
    compile: bool = False
    device: str = "cpu"

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None, device: torch.device) -> SpeedOptions:
        options = dict(options or {})
        unknown = set(options) - {"autocast", "channels_last", "compile"}
        if unknown:
            raise ValueError(f"train.speed: unknown option(s) {', '.join(sorted(unknown))}")
        autocast = options.get("autocast") or None
        if autocast not in (None, "bf16", "fp16", "auto"):
            raise ValueError(f"train.speed.autocast must be bf16, fp16, auto or null, not {autocast!r}")
        if autocast == "auto":
            autocast = "bf16" if device_supports_bf16(device) else None
        elif autocast == "bf16" and not device_supports_bf16(device):
            warnings.warn(
                f"bf16 autocast is not native on this {device.type}; training in fp32", stacklevel=2
            )
            autocast = None
        if autocast == "fp16" and device.type != "cuda":
            raise ValueError("train.speed.autocast fp16 needs a CUDA device (use bf16 on CPUs)")
        return cls(autocast, bool(options.get("channels_last")), bool(options.get("compile")), device.type)

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.autocast or "")

    def autocast_context(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def input(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def wrap(self, net: torch.nn.Module) -> Callable[..., torch.Tensor]:
        """Apply the memory format to ``net`` in place; returns what to call (compiled or not)."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return torch.compile(net) if self.compile else net

    def describe(self) -> str:
        parts = [self.autocast or "fp32"]
        if self.channels_last:
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        return "+".join(parts)
