"""Reading the Eve type-II atlas, building the refined 36-label atlas, and loading it back.

An atlas folder (what `wmhloc_build_atlas` writes, `--atlas-dir` of `wmhloc_region_labels`):
    36_labels_merged.nii.gz           refined labels 0..36 (int16), = the authors' file of the same name
    36_labels_merged_only_WM.nii.gz   the same, zero outside the atlas WM (FSL class 3)
    atlas_T1_brain.nii.gz             the Eve skull-stripped T1
    atlas_brain_mask.nii.gz           its brain mask (uint8)
    atlas_tissue.nii.gz               FSL FAST classes 0 bg, 1 CSF, 2 GM, 3 WM (uint8)
    refined_atlas_labels.tsv          label, short name, full name, type-II labels merged into it
    atlas.json                        manifest: source files with sha256, the files above
`--atlas-dir` may also point at the raw Eve folder: the atlas is then built in memory (≈1 s)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc import io
from nnunet_wmhloc.atlas import merge_table as mt
from nnunet_wmhloc.vocab import REGION_FULL_NAMES, REGION_NAMES
from nnunet_wmhloc.io import WMHLocError

# raw Eve release (github.com/muschellij2/Eve_Atlas)
EVE_T1 = "JHU_MNI_SS_T1_brain.nii.gz"
EVE_TYPE2 = "JHU_MNI_SS_WMPM_Type-II.nii.gz"
EVE_TISSUE = "JHU_MNI_SS_T1_FSL_Tissue_Classes_seg.nii.gz"
EVE_MASK = "JHU_MNI_SS_T1_mask.nii.gz"  # optional: T1 > 0 when absent

# built atlas folder
LABELS = "36_labels_merged.nii.gz"
LABELS_WM = "36_labels_merged_only_WM.nii.gz"
T1 = "atlas_T1_brain.nii.gz"
BRAIN = "atlas_brain_mask.nii.gz"
TISSUE = "atlas_tissue.nii.gz"
NAMES = "refined_atlas_labels.tsv"
MANIFEST = "atlas.json"
WM_CLASS = 3


@dataclass
class Atlas:
    t1: sitk.Image       # float32
    brain: sitk.Image    # uint8 0/1
    tissue: sitk.Image   # uint8 0..3
    labels: sitk.Image   # int16 0..36
    source: str

    @property
    def wm(self) -> sitk.Image:
        return sitk.Cast(self.tissue == WM_CLASS, sitk.sitkUInt8)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_from_eve(eve_dir: str | Path) -> tuple[Atlas, dict]:
    """Read the raw Eve files, check them, merge type-II → 36 labels. Returns the atlas and provenance."""
    eve_dir = Path(eve_dir)
    if not eve_dir.is_dir():
        raise WMHLocError(f"{eve_dir}: Eve atlas folder not found")
    t1_p, t2_p, tis_p, mask_p = (eve_dir / n for n in (EVE_T1, EVE_TYPE2, EVE_TISSUE, EVE_MASK))
    t1 = sitk.Cast(io.read_image(t1_p, what="Eve T1"), sitk.sitkFloat32)
    type2, t2_img = io.read_labels(t2_p, allowed=range(0, mt.N_TYPE2 + 1), what="type-II label map")
    tissue, tis_img = io.read_labels(tis_p, allowed=range(0, 4), what="FSL tissue classes")
    for img, p in ((t2_img, t2_p), (tis_img, tis_p)):
        io.check_same_geometry(t1, t1_p, img, p)
    if mask_p.is_file():
        mask, mask_img = io.read_labels(mask_p, allowed=(0, 1), what="brain mask")
        io.check_same_geometry(t1, t1_p, mask_img, mask_p)
    else:
        mask = (sitk.GetArrayViewFromImage(t1) > 0)
    if not (tissue == WM_CLASS).any():
        raise WMHLocError(f"{tis_p}: no white matter (class {WM_CLASS}) voxels")
    merged = mt.merge_type2(type2, source=str(t2_p)).astype(np.int16)
    atlas = Atlas(t1=t1, brain=io.array_to_image(mask.astype(np.uint8), t1),
                  tissue=io.array_to_image(tissue.astype(np.uint8), t1),
                  labels=io.array_to_image(merged, t1), source=str(eve_dir))
    prov = {"eve_dir": str(eve_dir.resolve()),
            "sources": {p.name: _sha256(p) for p in (t1_p, t2_p, tis_p, mask_p) if p.is_file()},
            "wm_definition": f"FSL FAST class {WM_CLASS} of {EVE_TISSUE}",
            "brain_mask": EVE_MASK if mask_p.is_file() else f"{EVE_T1} > 0"}
    return atlas, prov


def wm_only(atlas: Atlas) -> np.ndarray:
    lab = sitk.GetArrayFromImage(atlas.labels)
    return np.where(sitk.GetArrayViewFromImage(atlas.tissue) == WM_CLASS, lab, 0).astype(np.int16)


def names_tsv() -> str:
    lines = ["label\tshort_name\tfull_name\ttype2_labels"]
    for lab in range(0, 37):
        t2 = ",".join(map(str, mt.type2_labels_of(lab))) if lab else ""
        lines.append(f"{lab}\t{REGION_NAMES[lab]}\t{REGION_FULL_NAMES[lab]}\t{t2}")
    return "\n".join(lines) + "\n"


def write_atlas(atlas: Atlas, prov: dict, out_dir: Path) -> None:
    """Write the atlas folder's files into `out_dir` (an empty temporary folder: see io.atomic_dir)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out_dir, 0o777 & ~umask)  # mkdtemp makes it private; a shared atlas should be readable
    sitk.WriteImage(atlas.labels, str(out_dir / LABELS), True)
    sitk.WriteImage(io.array_to_image(wm_only(atlas), atlas.labels), str(out_dir / LABELS_WM), True)
    sitk.WriteImage(atlas.t1, str(out_dir / T1), True)
    sitk.WriteImage(atlas.brain, str(out_dir / BRAIN), True)
    sitk.WriteImage(atlas.tissue, str(out_dir / TISSUE), True)
    (out_dir / NAMES).write_text(names_tsv(), encoding="utf-8")
    manifest = {"format": "nnunet_wmhloc refined atlas v1", **prov,
                "files": {"labels": LABELS, "labels_wm_only": LABELS_WM, "t1": T1, "brain_mask": BRAIN,
                          "tissue": TISSUE, "names": NAMES},
                "merge_table": {str(k): v for k, v in mt.merge_table().items()}}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def load_atlas(atlas_dir: str | Path) -> Atlas:
    """Load a built atlas folder, or build in memory from a raw Eve folder."""
    atlas_dir = Path(atlas_dir)
    if not atlas_dir.is_dir():
        raise WMHLocError(f"{atlas_dir}: atlas folder not found")
    if not (atlas_dir / MANIFEST).is_file():
        if (atlas_dir / EVE_TYPE2).is_file():
            return build_from_eve(atlas_dir)[0]
        raise WMHLocError(f"{atlas_dir}: neither a built atlas ({MANIFEST}; see wmhloc_build_atlas) "
                          f"nor the raw Eve folder ({EVE_TYPE2})")
    t1 = sitk.Cast(io.read_image(atlas_dir / T1, what="atlas T1"), sitk.sitkFloat32)
    brain, b_img = io.read_labels(atlas_dir / BRAIN, allowed=(0, 1), what="atlas brain mask")
    tissue, t_img = io.read_labels(atlas_dir / TISSUE, allowed=range(0, 4), what="atlas tissue classes")
    labels, l_img = io.read_labels(atlas_dir / LABELS, allowed=range(0, 37), what="atlas labels")
    for img, name in ((b_img, BRAIN), (t_img, TISSUE), (l_img, LABELS)):
        io.check_same_geometry(t1, atlas_dir / T1, img, atlas_dir / name)
    if not (tissue == WM_CLASS).any():
        raise WMHLocError(f"{atlas_dir / TISSUE}: no white matter voxels")
    return Atlas(t1=t1, brain=io.array_to_image(brain.astype(np.uint8), t1),
                 tissue=io.array_to_image(tissue.astype(np.uint8), t1),
                 labels=io.array_to_image(labels.astype(np.int16), t1), source=str(atlas_dir))
