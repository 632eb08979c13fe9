"""wmhloc_build_atlas: the refined 36-label atlas (and its WM-only version) from the Eve type-II atlas.

    wmhloc_build_atlas --eve-dir Eve_Atlas/ --output refined_atlas/

Eve: JHU MNI single-subject atlas (Oishi et al. 2009), NIfTI files of github.com/muschellij2/Eve_Atlas.
The output folder is what `wmhloc_region_labels --atlas-dir` reads (file list in atlas/_atlas.py)."""
from __future__ import annotations

import sys

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import cli, io
from nnunet_wmhloc.atlas import _atlas


def _main(argv=None) -> int:
    p = cli.parser("wmhloc_build_atlas", __doc__.splitlines()[0])
    p.add_argument("--eve-dir", required=True,
                   help=f"folder with {_atlas.EVE_T1}, {_atlas.EVE_TYPE2}, {_atlas.EVE_TISSUE} "
                        f"(and optionally {_atlas.EVE_MASK})")
    p.add_argument("-o", "--output", required=True, help="atlas folder to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    a = p.parse_args(argv)
    io.check_output(a.output, overwrite=a.overwrite, inputs=[a.eve_dir])
    atlas, prov = _atlas.build_from_eve(a.eve_dir)
    with io.atomic_dir(a.output, overwrite=a.overwrite) as tmp:
        _atlas.write_atlas(atlas, prov, tmp)
    lab = sitk.GetArrayViewFromImage(atlas.labels)
    wm = _atlas.wm_only(atlas)
    print(f"{a.output}: 36-label atlas ({int((lab > 0).sum())} labelled voxels, "
          f"{len(np.unique(lab)) - 1} labels), WM-only version {int((wm > 0).sum())} voxels", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
