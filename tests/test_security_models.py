"""Issue #21: a model archive, model folder or prediction folder from a stranger cannot run code, exhaust
memory or disk, or give maps of the wrong task; each is refused in one line before anything is written.

The archives are built here, small: nnU-Net's layout and our manifest around tiny checkpoints saved with
torch.save exactly as nnU-Net's trainer saves them (tensors, numpy scalars, torch.device), so every check
runs on real zip, pickle and JSON files in milliseconds."""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_wmhloc.dataset_conversion.common import dataset_json
from nnunet_wmhloc.io import WMHLocError
from nnunet_wmhloc.pipeline import archive as A
from nnunet_wmhloc.pipeline import models as M
from nnunet_wmhloc.safeload import load_checkpoint, load_pickle

torch = pytest.importorskip("torch")

TRAINER = "nnUNetTrainer"
PATHS = {"lesion": "Dataset601_WMHLesion/nnUNetTrainer__nnUNetPlans__2d",
         "region": "Dataset602_WMHRegion/nnUNetTrainer__nnUNetPlans__2d"}


class Payload:
    """Unpickling this creates a file: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def checkpoint(n_classes: int, *, extra=None, trainer: str = TRAINER, configuration: str = "2d") -> bytes:
    """What nnUNetTrainer.save_checkpoint writes, at toy size."""
    import io

    ckpt = {"network_weights": OrderedDict([("encoder.stages.0.weight", torch.zeros(4, 1, 3, 3)),
                                            ("decoder.seg_layers.0.weight", torch.zeros(n_classes, 4, 1, 1)),
                                            ("decoder.seg_layers.1.weight", torch.zeros(n_classes, 4, 1, 1))]),
            "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "nesterov": True}]},
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float32(0.5)], "lrs": [np.float64(0.01)]},
            "_best_ema": np.float32(0.5), "current_epoch": 1,
            "init_args": {"plans": {}, "configuration": configuration, "fold": 0, "device": torch.device("cpu")},
            "trainer_name": trainer, "inference_allowed_mirroring_axes": (0, 1)}
    if extra is not None:
        ckpt["extra"] = extra
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def plans(network: str = "dynamic_network_architectures.architectures.unet.PlainConvUNet",
          conv: str = "torch.nn.modules.conv.Conv2d") -> dict:
    return {"dataset_name": "x", "plans_name": "nnUNetPlans", "configurations": {"2d": {"architecture": {
        "network_class_name": network, "arch_kwargs": {"conv_op": conv, "nonlin": "torch.nn.LeakyReLU"},
        "_kw_requires_import": ["conv_op", "nonlin"]}}}}


def members(task_files=None) -> dict[str, bytes]:
    """Archive members (name -> bytes) of a valid two-task archive, before the manifest."""
    out = {}
    for task, n in (("lesion", 2), ("region", 37)):  # lesion: label 2 is nnU-Net's ignore label
        p = PATHS[task]
        out[f"{p}/dataset.json"] = json.dumps(dataset_json(task, 2, "test")).encode()
        out[f"{p}/plans.json"] = json.dumps(plans()).encode()
        out[f"{p}/fold_0/checkpoint_final.pth"] = checkpoint(n)
        out[f"{p}/fold_0/debug.json"] = b"{}"
    out.update(task_files or {})
    return out


def manifest(files: dict[str, bytes]) -> dict:
    models = {}
    for task in M.TASKS:
        labels = json.loads(files[f"{PATHS[task]}/dataset.json"])["labels"]
        models[task] = {"dataset": PATHS[task].split("/")[0], "trainer": TRAINER, "plans": "nnUNetPlans",
                        "configuration": "2d", "path": PATHS[task], "task": task, "folds": ["0"], "labels": labels}
    return {"format": M.FORMAT, "format_version": M.FORMAT_VERSION, "id": "test", "nnunetv2_version": version("nnunetv2"),
            "models": models, "fusion": {"lesion": M.fusion_spec("flair"), "region": M.fusion_spec("fused", 0.5)},
            A.SHA_KEY: {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}


def write_archive(path: Path, files: dict[str, bytes] | None = None, man=None, *, raw_manifest: bytes | None = None,
                  compression=zipfile.ZIP_DEFLATED) -> Path:
    files = members() if files is None else files
    man = manifest(files) if man is None else man
    with zipfile.ZipFile(path, "w", compression) as z:
        for k, v in files.items():
            z.writestr(k, v)
        z.writestr(M.MANIFEST, raw_manifest if raw_manifest is not None else json.dumps(man))
    return path


def refused(fn, *args, **kw) -> str:
    with pytest.raises(WMHLocError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------- a clean archive
def test_clean_archive_opens_and_unpacks_the_bytes_checked(tmp_path):
    files = members()
    z = write_archive(tmp_path / "ok.zip", files)
    man = M.open_archive(z)
    dest = M.extract_archive(z, man, tmp_path / "out" / "models")
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    ckpt = load_checkpoint(dest / PATHS["region"] / "fold_0" / "checkpoint_final.pth", where="x")
    assert ckpt["trainer_name"] == TRAINER and isinstance(ckpt["_best_ema"], np.float32)
    # an archive without recorded hashes (older export) is hashed on opening and unpacked against those
    man_old = manifest(files)
    del man_old[A.SHA_KEY]
    z2 = write_archive(tmp_path / "old.zip", files, man_old)
    assert M.open_archive(z2)[A.SHA_KEY] == manifest(files)[A.SHA_KEY]


# --------------------------------------------------------------------- item 1: checkpoints and .pkl
def test_checkpoint_that_runs_code_is_refused_unloaded(tmp_path):
    marker = tmp_path / "pwned"
    files = members({f"{PATHS['lesion']}/fold_0/checkpoint_final.pth": checkpoint(2, extra=Payload(marker))})
    z = write_archive(tmp_path / "evil.zip", files)
    msg = refused(M.open_archive, z)
    assert "checkpoint_final.pth" in msg and "refused" in msg
    assert not marker.exists()
    # unpacking an archive open_archive did not pass checks it first
    assert "refused" in refused(M.extract_archive, z, manifest(files), tmp_path / "o" / "models")
    assert not marker.exists() and not (tmp_path / "o" / "models").exists()
    # a model folder given by path (--lesion-model), before nnU-Net loads it
    folder = tmp_path / "results" / PATHS["lesion"]
    for name, data in files.items():
        if name.startswith(PATHS["lesion"]):
            (tmp_path / "results" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "results" / name).write_bytes(data)
    assert "refused" in refused(M.check_model_folder, folder, ["0"], "lesion")
    assert not marker.exists()


def test_predict_refuses_code_running_archive_in_one_line(tmp_path):
    marker = tmp_path / "pwned"
    files = members({f"{PATHS['region']}/fold_0/checkpoint_final.pth": checkpoint(37, extra=Payload(marker))})
    z = write_archive(tmp_path / "evil.zip", files)
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("subject,flair,t1\n")
    out = tmp_path / "out"
    p = subprocess.run([str(Path(sys.executable).parent / "wmhloc_predict"), str(cohort), "-o", str(out),
                        "--models", str(z), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    err = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(err) == 1 and err[0].startswith("error:") and "refused" in err[0], p.stderr
    assert not marker.exists() and not out.exists()


def test_properties_pickle_that_runs_code_is_refused(tmp_path):
    """wmhloc_fuse reads <case>.pkl through the restricted unpickler: nnU-Net's properties load, a payload
    does not run."""
    from nnunet_wmhloc.postprocessing import fuse

    marker = tmp_path / "pwned"
    pred = tmp_path / "pred"
    pred.mkdir()
    seg = np.zeros((4, 5, 6), np.uint8)
    seg[1:3, 1:3, 1:4] = 1
    img = sitk.GetImageFromArray(seg)
    sitk.WriteImage(img, str(pred / "s01_flair.nii.gz"))
    probs = np.stack([1.0 - seg, seg]).astype(np.float32)
    np.savez_compressed(pred / "s01_flair.npz", probabilities=probs)
    props = {"sitk_stuff": {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0),
                            "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)},
             "spacing": [np.float64(1.0)] * 3, "class_locations": {1: np.zeros((3, 4), np.int64)},
             "shape_before_cropping": (4, 5, 6)}
    (pred / "s01_flair.pkl").write_bytes(pickle.dumps(props))
    assert load_pickle(pred / "s01_flair.pkl")["spacing"] == props["spacing"]  # nnU-Net's own kinds load
    assert fuse.main([str(pred), "-o", str(tmp_path / "ok"), "--modalities", "flair"]) == 0
    (pred / "s01_flair.pkl").write_bytes(pickle.dumps(dict(props, x=Payload(marker))))
    assert fuse.main([str(pred), "-o", str(tmp_path / "fused"), "--modalities", "flair"]) == 1
    assert not marker.exists() and not (tmp_path / "fused").exists()
    msg = refused(load_pickle, pred / "s01_flair.pkl")
    assert "s01_flair.pkl" in msg and "refused" in msg
    (pred / "deep.pkl").write_bytes(b"(" * 100000 + b".")
    assert "cannot read" in refused(load_pickle, pred / "deep.pkl")


def test_plans_that_import_other_code_are_refused(tmp_path):
    for net, conv, says in (("os.system", "torch.nn.modules.conv.Conv2d", "network class 'os.system'"),
                            ("dynamic_network_architectures.architectures.unet.PlainConvUNet", "subprocess.Popen",
                             "'subprocess.Popen' is not a torch.nn layer")):
        files = members({f"{PATHS['lesion']}/plans.json": json.dumps(plans(net, conv)).encode()})
        assert says in refused(M.open_archive, write_archive(tmp_path / "p.zip", files))


def test_pickled_member_and_altered_member_are_refused(tmp_path):
    files = members({f"{PATHS['lesion']}/fold_0/validation/x.pkl": pickle.dumps({})})
    assert "is a pickle" in refused(M.open_archive, write_archive(tmp_path / "pkl.zip", files))
    files = members()
    man = manifest(files)
    files[f"{PATHS['lesion']}/fold_0/debug.json"] = b'{"changed": 1}'
    assert "differs from its SHA-256" in refused(M.open_archive, write_archive(tmp_path / "alt.zip", files, man))
    files = members({"stowaway.txt": b"x"})
    assert "stowaway.txt" in refused(M.open_archive, write_archive(tmp_path / "add.zip", files, manifest(members())))


# ------------------------------------------------------------------------------------- item 2: zip bomb
def _declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite `member`'s declared uncompressed size in the local header and the central directory."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig + b"")
        while i >= 0:
            name_at = i + (30 if sig == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(name)] == name:
                struct.pack_into("<I", data, i + off, size)
            i = data.find(sig, i + 4)
    path.write_bytes(bytes(data))


def test_zip_bomb_is_refused_before_decompression(tmp_path):
    files = members({"Dataset601_WMHLesion/zeros.bin": b"\0" * 1024})
    z = write_archive(tmp_path / "declared.zip", files)
    _declare_size(z, "Dataset601_WMHLesion/zeros.bin", 3 << 30)
    with zipfile.ZipFile(z) as zz:
        assert zz.getinfo("Dataset601_WMHLesion/zeros.bin").file_size == 3 << 30
    msg = refused(M.open_archive, z)
    assert "declares 3.0 GiB" in msg and "zeros.bin" in msg
    # a real bomb: 64 MiB of zeros deflate to 64 KiB
    files = members({"Dataset601_WMHLesion/zeros.bin": b"\0" * (64 << 20)})
    msg = refused(M.open_archive, write_archive(tmp_path / "ratio.zip", files))
    assert "expands" in msg and "zip bomb" in msg
    many = {f"f{i}": b"" for i in range(A.MAX_MEMBERS + 1)}
    assert "members" in refused(M.open_archive, write_archive(tmp_path / "many.zip", many, {"format": "x"},
                                                              compression=zipfile.ZIP_STORED))


# ---------------------------------------------------------------- item 6: models checked against task
def test_archive_models_are_checked_against_their_task(tmp_path):
    files = members()
    man = manifest(files)
    same = copy.deepcopy(man)
    same["models"]["region"] = dict(man["models"]["lesion"], task="region")
    assert "same model" in refused(M.open_archive, write_archive(tmp_path / "same.zip", files, same))
    # the region entry's files are a lesion model (labels, left/right pairs and checkpoint consistent)
    swapped = dict(files)
    for f in ("dataset.json", "plans.json", "fold_0/checkpoint_final.pth"):
        swapped[f"{PATHS['region']}/{f}"] = files[f"{PATHS['lesion']}/{f}"]
    msg = refused(M.open_archive, write_archive(tmp_path / "swap.zip", swapped))
    assert "3 labels; a region model has 37" in msg
    # the checkpoint of another model under the right dataset.json
    other = dict(files)
    other[f"{PATHS['region']}/fold_0/checkpoint_final.pth"] = checkpoint(2)
    assert "predicts 2 classes" in refused(M.open_archive, write_archive(tmp_path / "ck.zip", other))
    # left/right pairs of another scheme
    ds = json.loads(files[f"{PATHS['region']}/dataset.json"])
    ds["wmhloc_lr_pairs"] = [[1, 2]]
    pairs = dict(files, **{f"{PATHS['region']}/dataset.json": json.dumps(ds).encode()})
    assert "left/right" in refused(M.open_archive, write_archive(tmp_path / "lr.zip", pairs))
    # a checkpoint of another trainer than the folder's
    tr = dict(files, **{f"{PATHS['lesion']}/fold_0/checkpoint_final.pth": checkpoint(2, trainer="Evil")})
    assert "trained with Evil" in refused(M.open_archive, write_archive(tmp_path / "tr.zip", tr))
    conf = dict(files, **{f"{PATHS['lesion']}/fold_0/checkpoint_final.pth": checkpoint(2, configuration="3d")})
    assert "configuration '3d'" in refused(M.open_archive, write_archive(tmp_path / "conf.zip", conf))
    # a model folder given by path, named otherwise: the checkpoint's trainer must still be one we know
    folder = tmp_path / "my_model"
    (folder / "fold_0").mkdir(parents=True)
    for f in ("dataset.json", "plans.json"):
        (folder / f).write_bytes(files[f"{PATHS['region']}/{f}"])
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(checkpoint(37))
    A.check_model_folder(folder, ["0"], "region")
    assert "Lesion and region models swapped" in refused(A.check_model_folder, folder, ["0"], "lesion")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(checkpoint(37, trainer="Evil"))
    assert "trainer 'Evil' is not known" in refused(A.check_model_folder, folder, ["0"], "region")


# ------------------------------------------------------------------------- item 11: hostile manifests
@pytest.mark.parametrize("change, says", [
    (lambda m: m["models"]["lesion"].update(folds=5), "folds 5 is not a list"),
    (lambda m: m.update(models=[]), "'models' is not a mapping"),
    (lambda m: m["models"]["lesion"].update(trainer=12345), "trainer 12345 is not a name"),
    (lambda m: m["fusion"]["lesion"].pop("weights"), "fusion entry 'lesion'"),
    (lambda m: m["fusion"].update(lesion={"choice": "fused", "weights": {"flair": 7}}), "between 0 and 1"),
    (lambda m: m["models"]["lesion"].update(path="../../etc"), "is not DatasetXXX_Name"),
    (lambda m: m["models"]["lesion"].update(folds=["../x"]), "not a list of fold names"),
    (lambda m: m.update(fusion=[1]), "'fusion' is not a mapping"),
])
def test_hostile_manifest_fields_are_one_line_errors(tmp_path, change, says):
    files = members()
    man = manifest(files)
    change(man)
    assert says in refused(M.open_archive, write_archive(tmp_path / "m.zip", files, man))


def test_deeply_nested_manifest_is_one_line_error(tmp_path):
    z = write_archive(tmp_path / "deep.zip", raw_manifest=b"[" * 100000 + b"]" * 100000)
    assert "nested too deeply" in refused(M.open_archive, z)
    z = write_archive(tmp_path / "bin.zip", raw_manifest=bytes(range(256)))
    assert "not valid JSON" in refused(M.open_archive, z)
