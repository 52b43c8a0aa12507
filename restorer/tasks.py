"""Task router: a task names what the user wants done; it fixes the kind of job and the scale,
lists the models allowed, and picks a default.

Kinds:
- ``image``: image in, image out, at ``scale`` (1 for denoising or reflection removal);
- ``codec``: image in, bitstream out, and back (compression).
The models a task allows come from the zoo (each entry lists its tasks), so adding a model never
means editing a list here.
"""

from __future__ import annotations

from dataclasses import dataclass

from restorer import zoo
from restorer.errors import UsageError
from restorer.medical_tasks import MEDICAL_TASKS


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name, kind, output scale and the preference order of its default models."""

    name: str
    kind: str
    scale: int
    description: str
    preferred: tuple[str, ...]

    def models(self) -> list[str]:
        """Command-line names of the models this task allows, preferred ones first."""
        allowed = [e.model for e in zoo.entries(task=self.name)]
        allowed = list(dict.fromkeys(allowed))
        ranked = [m for m in self.preferred if m in allowed]
        return ranked + [m for m in allowed if m not in ranked]

    def entry(self, model: str) -> zoo.ZooEntry:
        """The zoo entry of ``model`` for this task; a clear error when it does not fit."""
        name = model.lower()
        if name not in self.models():
            raise UsageError(
                f"Model '{model}' is not available for task '{self.name}'. "
                f"Choose one of: {', '.join(self.models())} (see `restorer models`)."
            )
        return zoo.get_entry(name, self.scale)


# Preference when --model is not given, strongest published x4 Urban100 PSNR first.
_SR_ORDER = (
    "drct-l",
    "hat-l",
    "hat-imagenet",
    "drct-imagenet",
    "drct",
    "hat",
    "hat-s",
    "dlgsanet",
    "craft",
    "dlgsanet-light",
    "dlgsanet-tiny",
    # Trained here on a few photos: used only when no official weights are present.
    "craft-bundled",
)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("sr_x2", "image", 2, "Super-resolution x2 (bicubic degradation)", _SR_ORDER),
        TaskSpec("sr_x3", "image", 3, "Super-resolution x3 (bicubic degradation)", _SR_ORDER),
        TaskSpec("sr_x4", "image", 4, "Super-resolution x4 (bicubic degradation)", _SR_ORDER),
        TaskSpec(
            "real_sr_x4",
            "image",
            4,
            "Real-world super-resolution x4 (noise, blur, JPEG; GAN-trained)",
            # The CPU recipe last: trained here (not shipped), used only when no official weights are present.
            ("real-hat-gan", "real-hat-gan-sharper", "real-drct-gan", "craft-real-cpu"),
        ),
        TaskSpec(
            "denoise",
            "image",
            1,
            "Gaussian denoising, sigma 25 (colour and grayscale)",
            ("restore-rwkv", "restore-rwkv-light"),
        ),
        TaskSpec(
            "reflection_removal",
            "image",
            1,
            "Reflection removal: the scene behind the glass (transmission layer)",
            ("rrformer", "rrformer-small"),
        ),
        TaskSpec(
            "compress",
            "codec",
            1,
            "Learned image compression (S2LIC): images to .s2l files and back",
            ("s2lic-small", "s2lic"),
        ),
        *(TaskSpec(t.name, "medical", 1, t.description, ()) for t in MEDICAL_TASKS.values()),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look up a task by name; a clear error listing the tasks when it is unknown."""
    try:
        return TASKS[name.lower()]
    except KeyError:
        raise UsageError(
            f"Unknown task '{name}'. Tasks: {', '.join(TASKS)} (see `restorer models`)."
        ) from None


def resolve(task: str, model: str | None = None, weights_available=None) -> zoo.ZooEntry:
    """Pick the zoo entry for ``task``.

    With ``model`` given, that model at the task's scale. Otherwise the first model in the task's
    preference order whose weights are present (``weights_available(entry) -> bool``), or the
    first preferred model when none is present (loading it then explains where to get weights).
    """
    spec = get_task(task)
    if model:
        return spec.entry(model)
    candidates = [spec.entry(m) for m in spec.models()]
    if weights_available is not None:
        for entry in candidates:
            if weights_available(entry):
                return entry
    return candidates[0]
