"""What one training run is asked to do: `FitConfig`, built once from the command line."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Tuple

DIST_ROLE_VAR = "DMLC_ROLE"


@dataclass(frozen=True)
class FitConfig:
    data_train: str
    data_val: Optional[str] = None
    network: str = "resnet"
    num_layers: int = 20
    num_group: Optional[int] = None
    bottleneck_width: Optional[int] = None
    num_classes: int = 10
    num_examples: Optional[int] = None
    image_shape: Tuple[int, int, int] = (3, 28, 28)
    pad_size: int = 4
    random_crop: bool = True
    random_mirror: bool = True
    data_nthreads: Optional[int] = None
    gpus: Tuple[int, ...] = ()
    cpus: int = 1  # CPU contexts when there are no --gpus: the multi-device path without a GPU
    kv_store: Optional[str] = None
    num_epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_factor: float = 0.1
    lr_step_epochs: Tuple[int, ...] = ()
    mom: float = 0.9
    wd: float = 0.0001
    disp_batches: int = 20
    model_prefix: Optional[str] = None
    load_epoch: Optional[int] = None
    load_batch: Optional[int] = None  # with load_epoch E: the checkpoint taken inside epoch E after this many batches
    save_period: int = 1
    seed: Optional[int] = None
    # fine-tuning
    pretrained_model: Optional[str] = None
    # options the user typed (not defaults), for warnings about options an optimizer ignores
    explicit: frozenset = field(default_factory=frozenset)

    @property
    def resumes(self) -> bool:
        """`fit` continues from a checkpoint of its own --model-prefix (--load-epoch 0 alone starts afresh)."""
        return bool(self.load_epoch or self.load_batch)

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
