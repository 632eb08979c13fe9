"""wmhloc_build_atlas: the refined 36-label atlas (and its WM-only version) from the Eve type-II atlas.

    wmhloc_build_atlas --eve-dir Eve_Atlas/ --output refined_atlas/

Eve: JHU MNI single-subject atlas (Oishi et al. 2009), NIfTI files of github.com/muschellij2/Eve_Atlas.
The output folder is what `wmhloc_region_labels --atlas-dir` reads (file list in atlas/_atlas.py)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.atlas import _atlas


@dataclass
class BuiltAtlas:
    """What build_atlas made: the atlas folder, its files, and the label counts the command prints."""
    folder: Path
    files: list
    labelled_voxels: int
    labels: int
    wm_voxels: int


def build_atlas(eve_dir, output, *, overwrite: bool = False) -> BuiltAtlas:
    """wmhloc_build_atlas: the refined atlas folder `output` from the Eve folder `eve_dir`, written as a unit."""
    io.check_output(output, overwrite=overwrite, inputs=[eve_dir])
    atlas, prov = _atlas.build_from_eve(eve_dir)
    with io.atomic_dir(output, overwrite=overwrite) as tmp:
        _atlas.write_atlas(atlas, prov, tmp)
        names = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
    lab = sitk.GetArrayViewFromImage(atlas.labels)
    return BuiltAtlas(Path(output), [Path(output) / n for n in names], int((lab > 0).sum()),
                      len(np.unique(lab)) - 1, int((_atlas.wm_only(atlas) > 0).sum()))


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_build_atlas", __doc__.splitlines()[0])
    p.add_argument("--eve-dir", required=True,
                   help=f"folder with {_atlas.EVE_T1}, {_atlas.EVE_TYPE2}, {_atlas.EVE_TISSUE} "
                        f"(and optionally {_atlas.EVE_MASK})")
    p.add_argument("-o", "--output", required=True, help="atlas folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    a = p.parse_args(argv)
    b = build_atlas(a.eve_dir, a.output, overwrite=a.overwrite)
    print(f"{a.output}: 36-label atlas ({b.labelled_voxels} labelled voxels, {b.labels} labels), WM-only version "
          f"{b.wm_voxels} voxels", file=sys.stderr)
    return 0


main = cli.entry(_main)


if __name__ == "__main__":
    sys.exit(main())
