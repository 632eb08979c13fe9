"""wmhloc_splits: (re)write a dataset's subject-grouped splits_final.json where nnU-Net reads it.

The converters write it themselves when nnUNet_preprocessed is set; this covers the other cases (and datasets
converted by other tools): T1 and FLAIR cases of one subject must never fall in different folds."""
from __future__ import annotations

import os
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, list_inputs, strip_nifti
from nnunet_wmhloc.dataset_conversion.common import N_FOLDS, grouped_splits, write_splits


def find_dataset(raw_root: Path, dataset_id: int) -> Path:
    hits = sorted(raw_root.glob(f"Dataset{dataset_id:03d}_*")) if raw_root.is_dir() else []
    if len(hits) != 1:
        raise WMHLocError(f"{raw_root}: expected one Dataset{dataset_id:03d}_* folder, found {len(hits)}")
    return hits[0]


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_splits", __doc__.split("\n\n")[0])
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (e.g. 601)")
    p.add_argument("--raw", default=os.environ.get("nnUNet_raw"), help="nnU-Net raw folder (default $nnUNet_raw)")
    p.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="nnU-Net preprocessed folder (default $nnUNet_preprocessed)")
    p.add_argument("--folds", type=int, default=N_FOLDS, help="number of cross-validation folds (at least 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing split")
    a = p.parse_args(argv)
    if a.folds < 2:
        raise WMHLocError(f"--folds {a.folds}: cross-validation needs at least 2 folds")
    if not a.raw or not a.preprocessed:
        raise WMHLocError("set nnUNet_raw and nnUNet_preprocessed (or give --raw and --preprocessed)")
    ds = find_dataset(Path(a.raw), a.dataset_id)
    labels = ds / "labelsTr"
    cases = [strip_nifti(f) for f in list_inputs(labels, (".nii.gz",), what="labelsTr")] if labels.is_dir() else []
    if not cases:
        raise WMHLocError(f"{labels}: no training labels")
    splits = grouped_splits(cases, a.folds)
    target = write_splits(ds.name, splits, a.preprocessed, a.overwrite)
    print(f"wrote {len(splits)} subject-grouped folds for {len(cases)} cases to {target}")
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)
