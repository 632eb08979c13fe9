"""Reading `nnUNetv2_predict --save_probabilities` output, checked against nnU-Net 2.8.1's exporter.

What nnU-Net writes per case (inference/export_prediction.py, export_prediction_from_logits):
- `<case><file_ending>`: the argmax segmentation, written by the plans' reader/writer with the input image's
  spacing/origin/direction (SimpleITKIO.write_seg; uint8 when labels < 255);
- `<case>.npz`, key 'probabilities': float32 softmax, shape (C, *spatial). Resampling, cropping and the
  plans' transpose are already reverted, so `spatial` is the array order of the reader that loaded the
  image (SimpleITKIO: SimpleITK's (z, y, x)); C = number of label classes, ignore label excluded;
- `<case>.pkl`: the preprocessing properties; 'sitk_stuff' holds the grid the probabilities live on.
  With SimpleITKIOWithReorient that grid is the RAS-reoriented one and 'original_orientation' says how
  the segmentation was turned back, so the probabilities must be reoriented the same way here.
The segmentation is nnU-Net's argmax of exactly these float32 probabilities, so after mapping them onto the
segmentation's grid their argmax must reproduce it voxel for voxel: `CaseReader.check_against_segmentation`
uses that to catch axis-order or pairing mistakes instead of trusting our reading of the format.

The .pkl is a pickle: it is read by a restricted unpickler (nnunet_wmhloc.safeload) that allows only what
nnU-Net's properties hold (builtins, OrderedDict, numpy arrays, dtypes and scalars), so it cannot run code.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.safeload import load_pickle

SEG_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".gipl")
NNUNET_SIDE_FILES = {"plans.json", "dataset.json", "predict_from_raw_data_args.json"}


@dataclass
class Case:
    name: str           # e.g. wmh012_flair
    subject: str        # wmh012
    modality: str       # flair
    folder: Path
    npz: Path
    pkl: Path
    seg: Path
    # filled by CaseReader.open()
    n_channels: int = 0
    seg_info: dict = field(default_factory=dict)


def _find_seg(folder: Path, name: str) -> Path | None:
    for e in SEG_ENDINGS:
        p = folder / f"{name}{e}"
        if p.is_file():
            return p
    return None


def _check_not_region_based(folder: Path) -> None:
    """Region-based (sigmoid) models store per-region probabilities: averaging + argmax would be wrong."""
    dj = folder / "dataset.json"
    if not dj.is_file():
        return
    try:
        labels = json.loads(dj.read_text(encoding="utf-8")).get("labels", {})
    except (OSError, ValueError):
        return  # not ours to validate; the argmax check still guards the result
    if any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values()):
        raise WMHLocError(f"{dj}: region-based nnU-Net model (overlapping labels); only softmax label models "
                          "can be fused by averaging")


def scan_prediction_folders(folders, modalities) -> tuple[dict[str, dict[str, Case]], list[str]]:
    """Map subject -> modality -> Case over all folders; return (cases, notes on skipped files).

    A case is `<subject>_<modality>` (modality compared case-insensitively). Cases of other modalities are
    skipped with a note; a case listed in two folders, a missing .pkl or segmentation, or a segmentation
    without probabilities is an error naming the file."""
    wanted = [m.lower() for m in modalities]
    cases: dict[str, dict[str, Case]] = {}
    notes: list[str] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise WMHLocError(f"{folder}: prediction folder not found")
        _check_not_region_based(folder)
        npzs = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
        if not npzs:
            segs = [p for p in folder.iterdir() if p.name.endswith(SEG_ENDINGS)]
            hint = (" (it has segmentations only: rerun nnUNetv2_predict with --save_probabilities)"
                    if segs else "")
            raise WMHLocError(f"{folder}: no nnU-Net probability files (*.npz) in prediction folder{hint}")
        for npz in npzs:
            name = npz.name[:-4]
            subject, sep, mod = name.rpartition("_")
            if not sep or not subject:
                raise WMHLocError(f"{npz}: case name '{name}' is not <subject>_<modality> "
                                  f"(modalities: {', '.join(modalities)})")
            if mod.lower() not in wanted:
                notes.append(f"{npz}: modality '{mod}' not selected, skipped")
                continue
            mod = modalities[wanted.index(mod.lower())]
            pkl = folder / f"{name}.pkl"
            if not pkl.is_file():
                raise WMHLocError(f"{pkl}: missing (nnU-Net writes <case>.pkl beside <case>.npz)")
            seg = _find_seg(folder, name)
            if seg is None:
                raise WMHLocError(f"{folder / (name + '.nii.gz')}: missing segmentation for {npz.name} "
                                  "(nnU-Net writes it beside the probabilities)")
            prev = cases.get(subject, {}).get(mod)
            if prev is not None:
                raise WMHLocError(f"{npz}: case {name} also found in {prev.folder} (give each case once)")
            cases.setdefault(subject, {})[mod] = Case(name, subject, mod, folder, npz, pkl, seg)
        # segmentations of selected modalities without probabilities would silently drop a modality
        for p in sorted(folder.iterdir()):
            if p.name in NNUNET_SIDE_FILES or p.name.startswith(".") or not p.name.endswith(SEG_ENDINGS):
                continue
            stem = next(p.name[: -len(e)] for e in SEG_ENDINGS if p.name.endswith(e))
            subject, sep, mod = stem.rpartition("_")
            if sep and mod.lower() in wanted and not (folder / f"{stem}.npz").is_file():
                raise WMHLocError(f"{p}: segmentation without {stem}.npz (rerun nnUNetv2_predict with "
                                  "--save_probabilities)")
    return cases, notes


# ------------------------------------------------------------------------------------- npz streaming
def _read_npy_header(f):
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    return fmt.read_array_header_2_0(f)  # 2.0 and 3.0 share the layout we need (utf8 only differs)


class _NpzChannels:
    """Read the 'probabilities' array of an nnU-Net .npz one channel at a time.

    np.savez_compressed stores a C-ordered .npy inside a zip, so channel c is one contiguous run of bytes:
    streaming keeps memory at a few volumes even for the 37-channel region model (~0.4 GB per case whole)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._zf = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise WMHLocError(f"{path}: not a readable .npz file ({e})") from None
        if "probabilities.npy" not in self._zf.namelist():
            keys = [n[:-4] for n in self._zf.namelist()]
            self._zf.close()
            raise WMHLocError(f"{path}: no 'probabilities' array (has: {', '.join(keys) or 'nothing'}); "
                              "not written by nnUNetv2_predict --save_probabilities")
        with self._zf.open("probabilities.npy") as f:
            try:
                shape, fortran, dtype = _read_npy_header(f)
            except (ValueError, OSError, EOFError) as e:
                self._zf.close()
                raise WMHLocError(f"{path}: corrupt probabilities array ({e})") from None
        if len(shape) != 4 or shape[0] < 2:
            self._zf.close()
            raise WMHLocError(f"{path}: probabilities have shape {shape}, expected (classes>=2, z, y, x)")
        if dtype.kind != "f":
            self._zf.close()
            raise WMHLocError(f"{path}: probabilities have dtype {dtype}, expected float")
        self.shape, self.fortran, self.dtype = tuple(shape), fortran, dtype

    def __iter__(self) -> Iterator[np.ndarray]:
        n = int(np.prod(self.shape[1:]))
        try:
            if self.fortran:  # not what nnU-Net writes, but still a valid npy: load whole
                arr = np.load(self.path)["probabilities"]
                for c in range(self.shape[0]):
                    yield np.ascontiguousarray(arr[c])
                return
            with self._zf.open("probabilities.npy") as f:
                _read_npy_header(f)
                nbytes = n * self.dtype.itemsize
                for _ in range(self.shape[0]):
                    buf = f.read(nbytes)
                    if len(buf) != nbytes:
                        raise WMHLocError(f"{self.path}: truncated probabilities array")
                    yield np.frombuffer(buf, dtype=self.dtype).reshape(self.shape[1:])
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise WMHLocError(f"{self.path}: corrupt probabilities array ({str(e)[:120]})") from None

    def close(self):
        self._zf.close()


def _seg_info(path: Path) -> dict:
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    try:
        r.ReadImageInformation()
    except RuntimeError:
        raise WMHLocError(f"{path}: cannot read segmentation header") from None
    if r.GetDimension() != 3:
        raise WMHLocError(f"{path}: segmentation is {r.GetDimension()}D, expected 3D")
    return {"size": tuple(r.GetSize()), "spacing": tuple(r.GetSpacing()), "origin": tuple(r.GetOrigin()),
            "direction": tuple(r.GetDirection())}


def _same_grid(a: dict, b: dict) -> bool:
    if tuple(a["size"]) != tuple(b["size"]):
        return False
    sp = max(1.0, max(a["spacing"]))
    return (np.allclose(a["spacing"], b["spacing"], atol=1e-3 * sp)
            and np.allclose(a["origin"], b["origin"], atol=1e-2 * sp)
            and np.allclose(a["direction"], b["direction"], atol=1e-3))


class CaseReader:
    """Probabilities of one case mapped onto its segmentation's grid (z, y, x), channel by channel."""

    def __init__(self, case: Case):
        self.case = case
        self.seg_info = _seg_info(case.seg)
        props = load_pickle(case.pkl)  # only what nnU-Net's properties hold: a hostile .pkl cannot run code
        if not isinstance(props, dict):
            raise WMHLocError(f"{case.pkl}: not an nnU-Net properties dict")
        self._npz = _NpzChannels(case.npz)
        self.n_channels = self._npz.shape[0]
        spatial = self._npz.shape[1:]
        self._index = None  # flat index map for reoriented readers, else identity
        seg_size_zyx = tuple(self.seg_info["size"][::-1])
        try:
            if "sitk_stuff" in props:
                st = props["sitk_stuff"]
                prob_info = {"size": spatial[::-1], "spacing": tuple(st["spacing"]), "origin": tuple(st["origin"]),
                             "direction": tuple(st["direction"])}
                if len(prob_info["spacing"]) != 3:
                    raise WMHLocError(f"{case.pkl}: 2D prediction; only 3D volumes are supported")
                if "original_orientation" in st:
                    self._index = self._reorient_index(prob_info, st["original_orientation"])
                elif not _same_grid(prob_info, self.seg_info):
                    raise WMHLocError(f"{case.npz}: probability grid {prob_info['size']} / spacing "
                                      f"{np.round(prob_info['spacing'], 3).tolist()} differs from {case.seg} "
                                      f"{self.seg_info['size']}")
            elif "nibabel_stuff" in props:
                if "reoriented_affine" in props["nibabel_stuff"]:
                    raise WMHLocError(f"{case.pkl}: predictions from NibabelIOWithReorient are not supported "
                                      "(use SimpleITKIO or SimpleITKIOWithReorient)")
                # NibabelIO transposes nibabel's (x, y, z) to (z, y, x): same order as SimpleITK's array
                if spatial != seg_size_zyx:
                    raise WMHLocError(f"{case.npz}: probability shape {spatial} does not match {case.seg} "
                                      f"(z, y, x) {seg_size_zyx}")
            else:
                raise WMHLocError(f"{case.pkl}: no 'sitk_stuff' or 'nibabel_stuff' geometry; not an nnU-Net "
                                  "prediction properties file")
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            raise WMHLocError(f"{case.pkl}: nnU-Net properties malformed ({type(e).__name__}: {str(e)[:80]}); "
                              "not written by nnUNetv2_predict") from None
        case.n_channels = self.n_channels
        case.seg_info = self.seg_info

    def _reorient_index(self, prob_info: dict, orientation: str) -> np.ndarray:
        """Where each voxel of the original grid sits in the reoriented probability array.

        Reorienting an image of its own flat indices with the same DICOMOrient call nnU-Net's writer uses
        gives the exact permutation/flip, whatever the orientations involved."""
        n = int(np.prod(prob_info["size"]))
        idx = sitk.GetImageFromArray(np.arange(n, dtype=np.int64 if n >= 2**31 else np.int32)
                                     .reshape(prob_info["size"][::-1]))
        idx.SetSpacing(prob_info["spacing"])
        idx.SetOrigin(prob_info["origin"])
        idx.SetDirection(prob_info["direction"])
        back = sitk.DICOMOrient(idx, orientation)
        info = {"size": back.GetSize(), "spacing": back.GetSpacing(), "origin": back.GetOrigin(),
                "direction": back.GetDirection()}
        if not _same_grid(info, self.seg_info):
            raise WMHLocError(f"{self.case.npz}: probabilities reoriented to {orientation} do not match the "
                              f"grid of {self.case.seg}")
        return sitk.GetArrayFromImage(back).ravel()

    def channels(self) -> Iterator[np.ndarray]:
        shape = tuple(self.seg_info["size"][::-1])
        for ch in self._npz:
            if self._index is not None:
                ch = ch.ravel()[self._index].reshape(shape)
            yield ch

    def close(self):
        self._npz.close()

    def check_against_segmentation(self, argmax: np.ndarray) -> None:
        """nnU-Net's own segmentation is the argmax of these probabilities: any disagreement means we (or
        the user's files) mixed up cases, axes or model types."""
        seg = sitk.GetArrayFromImage(sitk.ReadImage(str(self.case.seg)))
        if seg.shape != argmax.shape:
            raise WMHLocError(f"{self.case.seg}: shape {seg.shape} differs from the probabilities {argmax.shape}")
        bad = int(np.count_nonzero(seg != argmax))
        if bad:
            raise WMHLocError(f"{self.case.npz}: argmax of the probabilities differs from {self.case.seg.name} in "
                              f"{bad} voxels (files of different cases/models, or a region-based model)")
