"""Data layer: the :class:`Dataset`, the MMRec folder layout, datasets by name, builders,
feature encoders, a synthetic generator and BPR sampling."""

from mmrobust.data.dataset import SPLITS, Dataset, check_feature_array
from mmrobust.data.errors import DataError
from mmrobust.data.mmrec import load_mmrec, write_mmrec
from mmrobust.data.registry import (
    DEFAULT_DATASET,
    build_dataset,
    data_home,
    data_path,
    import_dataset,
    list_datasets,
    load_dataset,
    resolve_dataset,
)
from mmrobust.data.sampling import BPRSampler
from mmrobust.data.synthetic import make_synthetic

__all__ = [
    "DEFAULT_DATASET",
    "SPLITS",
    "BPRSampler",
    "DataError",
    "Dataset",
    "build_dataset",
    "check_feature_array",
    "data_home",
    "data_path",
    "import_dataset",
    "list_datasets",
    "load_dataset",
    "load_mmrec",
    "make_synthetic",
    "resolve_dataset",
    "write_mmrec",
]
