"""A model archive from a stranger, checked before anything is written or nnU-Net starts.

`open_archive` reads the zip's directory and refuses, in one line:
- too many members, absolute/`..`/link members, a member declaring more than MAX_MEMBER_BYTES, all of them
  more than MAX_TOTAL_BYTES, or a compression ratio above MAX_RATIO (zip bombs), before decompressing any;
- a manifest that is not ours, of another format or nnU-Net version, or malformed in any field we use;
- a member whose data fail their CRC, or differ from the SHA-256 the manifest records (integrity);
- per task: plans importing anything but nnU-Net's architectures and torch.nn layers, a dataset.json whose
  labels are not the task's (or not the manifest's), left/right pairs that are not ours, a checkpoint that
  needs more than torch's weights-only unpickler plus numpy scalars (safeload), or whose trainer or number of
  output classes differ from the manifest's; pickled `.pkl` members.
`extract_archive` then writes exactly the bytes checked (sizes bounded, hashes compared again).
`check_model_folder` applies the same per-task checks to a model folder given by path.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from nnunet_wmhloc.io import WMHLocError, atomic_dir
from nnunet_wmhloc.pipeline import models as M
from nnunet_wmhloc.safeload import check_plans, load_checkpoint, output_channels

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 2 << 30  # the largest nnU-Net checkpoints (ResEnc XL: weights and optimizer state) are smaller
MAX_TOTAL_BYTES = 16 << 30
MAX_RATIO = 200  # float weights hardly compress, JSON some tenfold; zeros a thousandfold
MAX_JSON_BYTES = 64 << 20
SHA_KEY = "files_sha256"  # manifest: member name -> SHA-256 of its data (all members but the manifest)
_CHECKED: dict[str, dict[str, str]] = {}  # archive -> member hashes, of archives open_archive passed
_FOLD = re.compile(r"[A-Za-z0-9_]{1,32}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def check_members(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Count, names, kinds, declared sizes and compression ratios, from the zip's directory only."""
    if len(infos) > MAX_MEMBERS:
        raise WMHLocError(f"{path}: {len(infos)} members (a model archive has a few dozen; at most {MAX_MEMBERS})")
    seen, total = set(), 0
    for i in infos:
        p = PurePosixPath(i.filename)
        if p.is_absolute() or ".." in p.parts or "\\" in i.filename or ":" in i.filename:
            raise WMHLocError(f"{path}: member {i.filename} points outside the archive")
        if i.filename in seen:
            raise WMHLocError(f"{path}: member {i.filename} appears twice")
        seen.add(i.filename)
        mode = i.external_attr >> 16
        if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise WMHLocError(f"{path}: member {i.filename} is a link or special file")
        if i.file_size > MAX_MEMBER_BYTES:
            raise WMHLocError(f"{path}: member {i.filename} declares {_gib(i.file_size)} (at most "
                              f"{_gib(MAX_MEMBER_BYTES)}): refused unread (zip bomb?)")
        if i.file_size > (1 << 20) and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            raise WMHLocError(f"{path}: member {i.filename} expands {i.file_size // max(i.compress_size, 1)}-fold "
                              f"(at most {MAX_RATIO}): refused unread (zip bomb?)")
        total += i.file_size
    if total > MAX_TOTAL_BYTES:
        raise WMHLocError(f"{path}: members declare {_gib(total)} in all (at most {_gib(MAX_TOTAL_BYTES)})")


def _json(data: bytes, where: str):
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise WMHLocError(f"{where}: JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WMHLocError(f"{where}: not valid JSON ({str(e)[:100]})") from None


def check_manifest(path: Path, man) -> dict:
    """Every manifest field wmhloc_predict uses has the right kind; returns the manifest."""
    if not isinstance(man, dict) or man.get("format") != M.FORMAT:
        raise WMHLocError(f"{path}: {M.MANIFEST} is not an nnunet_wmhloc model manifest")
    if man.get("format_version") != M.FORMAT_VERSION:
        raise WMHLocError(f"{path}: archive format version {man.get('format_version')}; this nnunet_wmhloc reads "
                          f"version {M.FORMAT_VERSION} (use a matching nnunet_wmhloc)")
    from importlib.metadata import version

    have, made = version("nnunetv2"), str(man.get("nnunetv2_version", "?"))
    if M._version_tuple(have)[:2] != M._version_tuple(made)[:2]:
        raise WMHLocError(f"{path}: models exported with nnU-Net {made}, this installation has {have} "
                          "(checkpoints are only read by the same nnU-Net minor version)")
    models = man.get("models")
    if not isinstance(models, dict):
        raise WMHLocError(f"{path}: manifest 'models' is not a mapping of task to model")
    for t in M.TASKS:
        m = models.get(t)
        if not isinstance(m, dict) or not {"path", "trainer", "folds"} <= set(m):
            raise WMHLocError(f"{path}: manifest has no complete {t} model entry")
        parts = m["path"].split("/") if isinstance(m["path"], str) else []
        if len(parts) != 2 or not all(_NAME.fullmatch(x) and ".." not in x for x in parts):
            raise WMHLocError(f"{path}: manifest {t} path {m['path']!r} is not DatasetXXX_Name/<model folder>")
        for k in ("trainer", "plans", "configuration"):
            if k in m and not (isinstance(m[k], str) and _NAME.fullmatch(m[k])):
                raise WMHLocError(f"{path}: manifest {t} {k} {m[k]!r} is not a name")
        f = m["folds"]
        if not isinstance(f, list) or not f or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                       and _FOLD.fullmatch(str(x)) for x in f):
            raise WMHLocError(f"{path}: manifest {t} folds {f!r} is not a list of fold names")
        if "labels" in m and not isinstance(m["labels"], dict):
            raise WMHLocError(f"{path}: manifest {t} labels is not a mapping")
        if not M.trainer_available(m["trainer"]):
            raise WMHLocError(f"{path}: {t} trainer {m['trainer']} is not known to this nnunet_wmhloc/nnU-Net "
                              "installation (exported with a newer version?)")
    if models["lesion"]["path"] == models["region"]["path"]:
        raise WMHLocError(f"{path}: the manifest gives the same model ({models['lesion']['path']}) for lesions "
                          "and regions")
    fusion = man.get("fusion", {})
    if not isinstance(fusion, dict):
        raise WMHLocError(f"{path}: manifest 'fusion' is not a mapping of task to fusion")
    for t, f in fusion.items():
        w = f.get("weights") if isinstance(f, dict) else None
        if t not in M.TASKS or not isinstance(w, dict) or not isinstance(w.get("flair"), (int, float)) \
                or isinstance(w.get("flair"), bool):
            raise WMHLocError(f"{path}: manifest fusion entry {t!r} has no task, choice and FLAIR weight")
        try:
            M.fusion_spec(f.get("choice"), w["flair"])
        except WMHLocError as e:
            raise WMHLocError(f"{path}: manifest fusion {t}: {e}") from None
    sha = man.get(SHA_KEY)
    if sha is not None and not (isinstance(sha, dict) and all(isinstance(v, str) for v in sha.values())):
        raise WMHLocError(f"{path}: manifest {SHA_KEY} is not a mapping of member to SHA-256")
    return man


def _labels(dataset, where: str) -> dict:
    labels = dataset.get("labels") if isinstance(dataset, dict) else None
    if not isinstance(labels, dict):
        raise WMHLocError(f"{where}: 'labels' is not a mapping of label names to values")
    return labels


def _heads(labels: dict, dataset: dict, where: str) -> int:
    """Output channels nnU-Net gives a network for these labels (the ignore label is not predicted)."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    try:
        return int(LabelManager(labels, dataset.get("regions_class_order")).num_segmentation_heads)
    except Exception as e:  # nnU-Net's own reason for refusing the labels
        raise WMHLocError(f"{where}: labels nnU-Net cannot use ({type(e).__name__}: {str(e)[:100]})") from None


def check_task(task: str, dataset, plans, checkpoints: dict, *, where: str, trainer: str | None,
               configuration: str | None = None, labels: dict | None = None) -> None:
    """The model is one of `task`: its labels (count, the manifest's), left/right pairs, plans, and each
    checkpoint (restricted load; trainer, configuration and output classes nnU-Net will build the network
    from). `checkpoints`: fold -> path or bytes; `trainer`/`configuration` None: any known one."""
    heads = check_task_files(task, dataset, plans, where=where, configuration=configuration, labels=labels)
    for fold, source in checkpoints.items():
        check_task_checkpoint(source, where=f"{where}/fold_{fold}/checkpoint_final.pth", plans=plans, heads=heads,
                              trainer=trainer, configuration=configuration)


def check_task_files(task: str, dataset, plans, *, where: str, configuration: str | None = None,
                     labels: dict | None = None) -> int:
    """dataset.json and plans.json of a `task` model; returns the output classes its network must have."""
    from nnunet_wmhloc.vocab import LR_PAIRS, LR_PAIRS_KEY

    have = _labels(dataset, f"{where}/dataset.json")
    n = len([v for v in have.values() if not isinstance(v, (list, tuple))])
    if task == "region" and n < 30:
        raise WMHLocError(f"{where}: {n} labels; a region model has 37 (0..36). Lesion and region models swapped?")
    if task == "lesion" and not 2 <= n <= 3:
        raise WMHLocError(f"{where}: {n} labels; a lesion model has 2-3 (0 background, 1 WMH, 2 other). "
                          "Lesion and region models swapped?")
    if labels is not None and labels != have:
        raise WMHLocError(f"{where}/dataset.json: labels differ from the manifest's {task} labels")
    if LR_PAIRS_KEY in dataset:
        pairs = dataset[LR_PAIRS_KEY]
        try:
            ours = isinstance(pairs, list) and sorted(tuple(p) for p in pairs) == sorted(LR_PAIRS)
        except TypeError:  # pairs of lists or dicts, or of mixed kinds
            ours = False
        if task != "region" or not ours:
            raise WMHLocError(f"{where}/dataset.json: {LR_PAIRS_KEY} are not this package's left/right region "
                              "pairs (a model of another task or label scheme)")
    heads = _heads(have, dataset, f"{where}/dataset.json")
    check_plans(plans, where=f"{where}/plans.json")
    if configuration is not None and configuration not in plans["configurations"]:
        raise WMHLocError(f"{where}/plans.json: no configuration {configuration}")
    return heads


def check_task_checkpoint(source, *, where: str, plans: dict, heads: int, trainer: str | None,
                          configuration: str | None) -> None:
    """One fold's checkpoint: restricted load, then what nnU-Net's predictor builds the network from (the
    checkpoint's trainer and configuration) and the classes its last layer predicts."""
    ckpt = load_checkpoint(source, where=where)
    if trainer is not None and ckpt["trainer_name"] != trainer:
        raise WMHLocError(f"{where}: trained with {ckpt['trainer_name']}, the model folder says {trainer}")
    if trainer is None and not M.trainer_available(ckpt["trainer_name"]):
        raise WMHLocError(f"{where}: trainer {ckpt['trainer_name']!r} is not known to this installation")
    conf = ckpt["init_args"].get("configuration")
    if not (isinstance(conf, str) and conf in plans["configurations"]) or \
            (configuration is not None and conf != configuration):
        raise WMHLocError(f"{where}: trained on configuration {conf!r}, not {configuration or 'one of plans.json'}")
    out = output_channels(ckpt)
    if out is not None and out != heads:
        raise WMHLocError(f"{where}: the network predicts {out} classes, its dataset.json {heads} "
                          "(checkpoint of another model)")


def check_model_folder(folder: Path, folds: list[str], task: str) -> None:
    """check_task on a model folder given by path (--lesion-model/--region-model), before nnU-Net loads it."""
    folder = Path(folder)
    try:
        ident = M.model_identity(folder)
    except WMHLocError:  # a folder named otherwise: nnU-Net goes by the checkpoint alone
        ident = {"trainer": None, "configuration": None}
    read = {}
    for f in ("dataset.json", "plans.json"):
        p = folder / f
        if p.stat().st_size > MAX_JSON_BYTES:
            raise WMHLocError(f"{p}: {p.stat().st_size >> 20} MiB: not an nnU-Net {f}")
        read[f] = _json(p.read_bytes(), str(p))
    check_task(task, read["dataset.json"], read["plans.json"],
               {f: folder / f"fold_{f}" / "checkpoint_final.pth" for f in folds}, where=str(folder),
               trainer=ident["trainer"], configuration=ident["configuration"])


def open_archive(path: Path) -> dict:
    """Check an archive without writing anything (see the module's docstring); returns the manifest, with
    SHA_KEY holding the hashes checked (computed here for archives that record none)."""
    path = Path(path)
    if not path.is_file():
        raise WMHLocError(f"{path}: model archive not found")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            check_members(path, infos)
            names = {i.filename for i in infos}
            if M.MANIFEST not in names:
                raise WMHLocError(f"{path}: not an nnunet_wmhloc model archive (no {M.MANIFEST}; "
                                  "make one with wmhloc_export_models)")
            if z.getinfo(M.MANIFEST).file_size > MAX_JSON_BYTES:
                raise WMHLocError(f"{path}: {M.MANIFEST} is too large for a manifest")
            man = check_manifest(path, _json(z.read(M.MANIFEST), f"{path}: {M.MANIFEST}"))
            return _check_contents(path, z, man, names)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise WMHLocError(f"{path}: damaged or not a model archive ({type(e).__name__}: {str(e)[:100]})") from None


def _check_contents(path: Path, z: zipfile.ZipFile, man: dict, names: set[str]) -> dict:
    models = man["models"]
    for t in M.TASKS:
        m = models[t]
        for f in m["folds"]:
            for need in (f"fold_{f}/checkpoint_final.pth", "plans.json", "dataset.json"):
                if f"{m['path']}/{need}" not in names:
                    raise WMHLocError(f"{path}: {m['path']}/{need} missing from the archive")
    recorded = man.get(SHA_KEY)
    if recorded is not None:
        files = {i.filename for i in z.infolist() if not i.is_dir()} - {M.MANIFEST}
        extra = sorted(set(recorded) ^ files)
        if extra:
            raise WMHLocError(f"{path}: {extra[0]}: member and manifest {SHA_KEY} disagree (archive altered?)")
    # the small JSON files first (CRC-checked; hashed again below), then every member in one pass: each
    # checkpoint is loaded (restricted) and checked as it is read, so one at a time is in memory
    folds = {}
    for t in M.TASKS:
        m = models[t]
        where = f"{path}: {m['path']}"
        js = {}
        for f in ("dataset.json", "plans.json"):
            if z.getinfo(f"{m['path']}/{f}").file_size > MAX_JSON_BYTES:
                raise WMHLocError(f"{where}/{f}: too large for an nnU-Net {f}")
            js[f] = _json(z.read(f"{m['path']}/{f}"), f"{where}/{f}")
        heads = check_task_files(t, js["dataset.json"], js["plans.json"], where=where,
                                 configuration=m.get("configuration"), labels=m.get("labels"))
        for f in m["folds"]:
            folds[f"{m['path']}/fold_{f}/checkpoint_final.pth"] = dict(
                plans=js["plans.json"], heads=heads, trainer=m["trainer"], configuration=m.get("configuration"))
    hashes = {}
    for i in z.infolist():
        if i.is_dir() or i.filename == M.MANIFEST:
            continue
        if i.filename.endswith((".pkl", ".pickle")):
            raise WMHLocError(f"{path}: member {i.filename} is a pickle, which a model archive never needs")
        h = hashlib.sha256()
        buf = bytearray() if i.filename.endswith(".pth") else None
        with z.open(i) as src:  # raises BadZipFile on a CRC mismatch
            while chunk := src.read(1 << 20):
                h.update(chunk)
                if buf is not None:
                    buf += chunk
        hashes[i.filename] = h.hexdigest()
        if recorded is not None and recorded[i.filename] != hashes[i.filename]:
            raise WMHLocError(f"{path}: member {i.filename} differs from its SHA-256 in the manifest (altered "
                              "or damaged)")
        if i.filename in folds:
            check_task_checkpoint(bytes(buf), where=f"{path}: {i.filename}", **folds[i.filename])
        elif buf is not None:  # other checkpoints: not loaded by nnU-Net's prediction, but unpacked
            load_checkpoint(bytes(buf), where=f"{path}: {i.filename}")
    _CHECKED[str(path.resolve())] = hashes
    return dict(man, **{SHA_KEY: hashes})


def extract_archive(path: Path, manifest: dict, dest: Path) -> Path:
    """Unpack the archive into `dest` (atomically; kept when it already holds this archive): members
    re-checked against the hashes open_archive checked, each no longer than it declared."""
    path = Path(path)
    # the hashes of what open_archive checked in this process (checkpoints included); else check it now
    hashes = _CHECKED.get(str(path.resolve())) or open_archive(path)[SHA_KEY]
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    stamp = {"archive": str(path.resolve()), "id": manifest.get("id"), "size": path.stat().st_size,
             "files": digest}
    mark = dest / ".archive.json"
    if mark.is_file():
        try:
            if json.loads(mark.read_text()) == stamp:
                return dest
        except ValueError:
            pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(dest, overwrite=True) as tmp, zipfile.ZipFile(path) as z:
        infos = z.infolist()
        check_members(path, infos)
        need = sum(i.file_size for i in infos)
        free = shutil.disk_usage(tmp).free
        if need > free:
            raise WMHLocError(f"{dest}: the archive unpacks to {_gib(need)}, only {_gib(free)} free there")
        for i in infos:
            target = tmp / i.filename
            if i.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            if i.filename != M.MANIFEST and i.filename not in hashes:
                raise WMHLocError(f"{path}: member {i.filename} was not checked (archive changed meanwhile?)")
            target.parent.mkdir(parents=True, exist_ok=True)
            h, n = hashlib.sha256(), 0
            with z.open(i) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    n += len(chunk)
                    if n > i.file_size:
                        raise WMHLocError(f"{path}: member {i.filename} is longer than it declares")
                    h.update(chunk)
                    out.write(chunk)
            if i.filename != M.MANIFEST and h.hexdigest() != hashes[i.filename]:
                raise WMHLocError(f"{path}: member {i.filename} changed since it was checked (archive replaced "
                                  "meanwhile?)")
        (tmp / ".archive.json").write_text(json.dumps(stamp))
    return dest
