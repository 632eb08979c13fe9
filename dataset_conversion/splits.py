"""wmhloc_splits: (re)write a dataset's subject-grouped splits_final.json where nnU-Net reads it.

The converters write it themselves when nnUNet_preprocessed is set; this covers the other cases (and datasets
converted by other tools): T1 and FLAIR cases of one subject must never fall in different folds."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnunet_wmhloc import cli
from nnunet_wmhloc.io import WMHLocError, list_inputs, strip_nifti
from nnunet_wmhloc.dataset_conversion.common import N_FOLDS, grouped_splits, write_splits
from nnunet_wmhloc.vocab import find_dataset


@dataclass
class Splits:
    """What make_splits wrote: the dataset folder, its training cases, the folds and where they went."""
    dataset: Path
    cases: list
    splits: list
    target: Path


def make_splits(raw: str | os.PathLike, dataset_id: int, preprocessed: str | os.PathLike, *,
                folds: int = N_FOLDS, overwrite: bool = False) -> Splits:
    """Subject-grouped folds of the labelsTr cases of Dataset<id>_* under `raw`, written to
    <preprocessed>/<dataset>/splits_final.json (a different existing split is kept unless `overwrite`)."""
    ds = find_dataset(Path(raw), dataset_id)
    labels = ds / "labelsTr"
    cases = [strip_nifti(f) for f in list_inputs(labels, (".nii.gz",), what="labelsTr")] if labels.is_dir() else []
    if not cases:
        raise WMHLocError(f"{labels}: no training labels")
    splits = grouped_splits(cases, folds)
    return Splits(ds, cases, splits, write_splits(ds.name, splits, preprocessed, overwrite))


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_splits", __doc__.split("\n\n")[0])
    p.add_argument("-d", "--dataset-id", type=int, required=True, help="nnU-Net dataset id (e.g. 601)")
    p.add_argument("--raw", default=os.environ.get("nnUNet_raw"), help="nnU-Net raw folder (default $nnUNet_raw)")
    p.add_argument("--preprocessed", default=os.environ.get("nnUNet_preprocessed"),
                   help="nnU-Net preprocessed folder (default $nnUNet_preprocessed)")
    p.add_argument("--folds", type=int, default=N_FOLDS, help="number of cross-validation folds (at least 2)")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing split")
    a = p.parse_args(argv)
    if not a.raw or not a.preprocessed:
        raise WMHLocError("set nnUNet_raw and nnUNet_preprocessed (or give --raw and --preprocessed)")
    s = make_splits(a.raw, a.dataset_id, a.preprocessed, folds=a.folds, overwrite=a.overwrite)
    notes = [f"{a.folds} folds asked for, but the cases hold only {len(s.splits)} subjects: {len(s.splits)} folds"
             ] if len(s.splits) < a.folds else []  # not silently fewer
    cli.print_result([f"wrote {len(s.splits)} subject-grouped folds for {len(s.cases)} cases to {s.target}"], notes)
    return 0


main = cli.entry(_main)
