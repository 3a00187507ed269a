"""What one training run is asked to do: `FitConfig`, built once from the command line by `build`."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

from mxlaunch.errors import UsageError

DIST_ROLE_VAR = "DMLC_ROLE"


@dataclass(frozen=True)
class FitConfig:
    data_train: Optional[str] = None
    data_val: Optional[str] = None
    data_train_idx: str = ""
    data_val_idx: str = ""
    command: str = "fit"
    network: Optional[str] = "resnet"
    num_layers: Optional[int] = 110
    num_group: Optional[int] = None
    bottleneck_width: Optional[int] = None
    num_classes: int = 10
    num_examples: Optional[int] = None
    image_shape: Tuple[int, int, int] = (3, 28, 28)
    rgb_mean: Tuple[float, float, float] = (123.68, 116.779, 103.939)
    rgb_std: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    pad_size: int = 4
    fill_value: int = 127
    random_crop: bool = False
    random_mirror: bool = False
    max_random_h: int = 0
    max_random_s: int = 0
    max_random_l: int = 0
    min_random_aspect_ratio: Optional[float] = None
    max_random_aspect_ratio: float = 0.0
    max_random_rotate_angle: int = 0
    max_random_shear_ratio: float = 0.0
    max_random_scale: float = 1.0
    min_random_scale: float = 1.0
    max_random_area: float = 1.0
    min_random_area: float = 1.0
    min_crop_size: int = -1
    max_crop_size: int = -1
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    pca_noise: float = 0.0
    random_resized_crop: bool = False
    data_nthreads: Optional[int] = None
    benchmark: bool = False
    test_io: bool = False
    gpus: Tuple[int, ...] = ()
    cpus: int = 1  # CPU contexts when there are no --gpus: the multi-device path without a GPU
    kv_store: Optional[str] = None
    num_epochs: int = 300
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    lr_factor: float = 0.1
    lr_step_epochs: Tuple[int, ...] = (200, 250)
    lr_power: Optional[float] = None  # --lr-step-epochs powN: polynomial decay instead of steps
    mom: float = 0.9
    wd: float = 0.0001
    initializer: str = "default"
    dtype: str = "float32"
    gc_type: str = "none"
    gc_threshold: float = 0.5
    macrobatch_size: int = 0
    warmup_epochs: int = 5
    warmup_strategy: str = "linear"
    top_k: int = 0
    loss: Tuple[str, ...] = ()  # MXNet metric names: ce, nll_loss
    monitor: int = 0
    disp_batches: int = 20
    profile_worker_suffix: str = ""
    profile_server_suffix: str = ""
    model_prefix: Optional[str] = None
    load_epoch: Optional[int] = None
    load_batch: Optional[int] = None  # with load_epoch E: the checkpoint taken inside epoch E after this many batches
    save_period: int = 1
    seed: Optional[int] = None
    # fine-tuning
    pretrained_model: Optional[str] = None
    layer_before_fullc: str = "flatten0"
    # options the user typed (not defaults), for warnings about options a run does not use
    explicit: frozenset = field(default_factory=frozenset)

    @property
    def resumes(self) -> bool:
        """`fit --load-epoch E` continues from PREFIX-E of its own --model-prefix (E = 0 too, as in MXNet)."""
        return self.pretrained_model is None and (self.load_epoch is not None or self.load_batch is not None)

    @property
    def num_devices(self) -> int:
        """The contexts each batch is split over: the GPUs of --gpus, else --cpus CPU contexts."""
        return len(self.gpus) if self.gpus else self.cpus

    def resolved_kv_store(self) -> str:
        """Under the launcher (DMLC_ROLE set) the default is dist_sync: the same command runs alone or as a worker."""
        if self.kv_store:
            return self.kv_store
        if os.environ.get(DIST_ROLE_VAR):
            return "dist_sync"
        return "device" if self.num_devices > 1 else "local"

    @property
    def distributed(self) -> bool:
        return self.resolved_kv_store().startswith("dist")


def finite(option: str, value: float, least: Optional[float] = None) -> float:
    """`value` when it is a finite number (>= least); else the UsageError naming `option`."""
    if not math.isfinite(value) or (least is not None and value < least):
        bound = f" >= {least:g}" if least is not None else ""
        raise UsageError(f"{option} {value!r}: expected a finite number{bound}")
    return value
