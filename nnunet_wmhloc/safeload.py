"""Reading pickles (nnU-Net checkpoints and properties files) without letting them run code.

A pickle names the callables that rebuild its objects; a hostile one names `os.system` or an object whose
`__reduce__` runs a command. Every pickle we read, or hand to nnU-Net (which loads checkpoints with
`torch.load(weights_only=False)`), is first read here against an explicit allow-list of what nnU-Net writes:
- checkpoints: `torch.load(weights_only=True)` (tensors, OrderedDict, builtins, torch.device) plus numpy
  scalars and dtypes (nnU-Net's logging and `_best_ema`), then its layout (weights, trainer name);
- properties `.pkl`: builtins containers, OrderedDict, numpy arrays, dtypes and scalars.
Anything else is refused in one line naming the global it asked for. Plans name the network class and the
layers nnU-Net imports with `pydoc.locate` (any importable callable): `check_plans` limits them to the
architectures nnU-Net plans hold.
"""
from __future__ import annotations

import builtins
import io
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np

from nnunet_wmhloc.io import WMHLocError

_DTYPE_CODES = "?bhilqBHILQefdgFDGUS"  # bool, ints, floats, complex, str, bytes (no object or void dtype)
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
MAX_PICKLE_BYTES = 256 << 20  # nnU-Net properties files are kilobytes to a few megabytes
MAX_ARRAY_ITEMS = 1 << 28  # an ndarray rebuilt from a pickle: nnU-Net's hold at most some 10^5 class locations
# what plans may import by name (nnU-Net calls pydoc.locate on them, then calls the result)
NETWORK_PREFIXES = ("dynamic_network_architectures.architectures.",)
LAYER_PREFIXES = ("torch.nn.",)


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:2])


def _numpy_dtype_classes() -> list[type]:
    return sorted({type(np.dtype(c)) for c in _DTYPE_CODES}, key=lambda t: t.__name__)


def _safe_reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct (what an ndarray's pickle calls first), for plain ndarrays of bounded size."""
    from numpy._core.multiarray import _reconstruct  # numpy >= 2

    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {getattr(subtype, '__name__', subtype)!r}")
    if int(np.prod(shape, dtype=np.int64)) > MAX_ARRAY_ITEMS:
        raise pickle.UnpicklingError(f"array of shape {tuple(shape)}")
    return _reconstruct(subtype, shape, dtype)


def _safe_scalar(dtype, *args):
    from numpy._core.multiarray import scalar

    if dtype.kind in "OV":  # an object 'scalar' is any object; nnU-Net writes none
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype}")
    return scalar(dtype, *args)


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asks for a global outside the allow-list."""


class _PropertiesUnpickler(pickle.Unpickler):
    ALLOWED = {("builtins", n): getattr(builtins, n) for n in ("set", "frozenset", "complex", "slice", "bytearray")}
    ALLOWED.update({("collections", "OrderedDict"): OrderedDict, ("numpy", "ndarray"): np.ndarray,
                    ("numpy", "dtype"): np.dtype})
    ALLOWED.update({(m, "_reconstruct"): _safe_reconstruct for m in _NUMPY_MODULES})
    ALLOWED.update({(m, "scalar"): _safe_scalar for m in _NUMPY_MODULES})
    ALLOWED.update({("numpy.dtypes", t.__name__): t for t in _numpy_dtype_classes()})

    def find_class(self, module, name):
        if module == "_codecs" and name == "encode":  # protocol 2 writes bytes as _codecs.encode(str, 'latin1')
            import codecs

            return codecs.encode
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickle(f"{module}.{name}") from None


def load_pickle(path: str | os.PathLike, *, what: str = "nnU-Net properties file"):
    """Unpickle `path` allowing only what nnU-Net's properties files hold; WMHLocError in one line otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise WMHLocError(f"{path}: {what} is {size >> 20} MiB; nnU-Net writes at most a few MiB")
        with open(path, "rb") as f:
            return _PropertiesUnpickler(f).load()
    except UnsafePickle as e:
        raise WMHLocError(f"{path}: {what} asks for {e}, which nnU-Net never writes: refused (unpickling it "
                          "could run code)") from None
    except WMHLocError:
        raise
    except RecursionError:
        raise WMHLocError(f"{path}: {what} is nested too deeply: not written by nnU-Net") from None
    except Exception as e:  # truncated, not a pickle, a refused array: a bad input file
        raise WMHLocError(f"{path}: cannot read {what} ({type(e).__name__}: {str(e)[:100]})") from None


# ------------------------------------------------------------------------------------------- checkpoints
def checkpoint_globals() -> list:
    """What nnU-Net checkpoints hold beyond torch's own weights-only set: numpy scalars and dtypes."""
    from numpy._core.multiarray import scalar

    return [scalar, np.dtype, *_numpy_dtype_classes()]


def load_checkpoint(source: str | os.PathLike | bytes, *, where: str) -> dict:
    """A checkpoint read with torch's weights-only unpickler and our allow-list, on the CPU; its layout
    checked (a dict with network_weights of tensors, trainer_name, init_args). WMHLocError naming `where`."""
    import torch

    if _version(torch.__version__) < (2, 6):
        raise WMHLocError(f"{where}: torch {torch.__version__}'s weights-only loader can be made to run code "
                          "(CVE-2025-32434); install torch >= 2.6 to load shared models")
    f = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with torch.serialization.safe_globals(checkpoint_globals()):
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL (\S+)", str(e)) or re.search(r"but got (<[^>]*>)", str(e))
        need = m.group(1) if m else "an object outside the allow-list"
        raise WMHLocError(f"{where}: checkpoint needs {need}, which nnU-Net checkpoints never hold: refused "
                          "(loading it could run code)") from None
    except RecursionError:
        raise WMHLocError(f"{where}: checkpoint is nested too deeply: not an nnU-Net checkpoint") from None
    except Exception as e:  # truncated or not a torch file at all
        why = str(e).strip().splitlines()[0][:100] if str(e).strip() else ""
        raise WMHLocError(f"{where}: not a readable PyTorch checkpoint ({type(e).__name__}: {why})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("network_weights"), dict):
        raise WMHLocError(f"{where}: not an nnU-Net checkpoint (no network_weights)")
    weights = ckpt["network_weights"]
    if not weights or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise WMHLocError(f"{where}: network_weights is not a mapping of names to tensors")
    if not isinstance(ckpt.get("trainer_name"), str) or not isinstance(ckpt.get("init_args", {}), dict):
        raise WMHLocError(f"{where}: not an nnU-Net checkpoint (no trainer_name)")
    return ckpt


def output_channels(ckpt: dict) -> int | None:
    """Classes the network predicts: the out-channels of nnU-Net's last segmentation layer, if it has one."""
    heads = [k for k in ckpt["network_weights"] if re.search(r"seg_layers\.(\d+)\.weight$", k)]
    if not heads:
        return None
    last = max(heads, key=lambda k: int(re.search(r"seg_layers\.(\d+)\.weight$", k).group(1)))
    return int(ckpt["network_weights"][last].shape[0])


def check_plans(plans, *, where: str) -> None:
    """Every class plans.json makes nnU-Net import (network, conv/norm/dropout/nonlinearity layers) is one of
    the architectures nnU-Net plans hold: pydoc.locate would import and call anything."""
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict):
        raise WMHLocError(f"{where}: not nnU-Net plans (no configurations)")
    for name, conf in plans["configurations"].items():
        arch = conf.get("architecture") if isinstance(conf, dict) else None
        if arch is None:
            continue
        if not isinstance(arch, dict) or not isinstance(arch.get("arch_kwargs", {}), dict):
            raise WMHLocError(f"{where}: configuration {name}: architecture is not a mapping")
        net = arch.get("network_class_name")
        if not (isinstance(net, str) and net.startswith(NETWORK_PREFIXES)):
            raise WMHLocError(f"{where}: configuration {name}: network class {net!r} is not a "
                              f"{NETWORK_PREFIXES[0]}* architecture: refused (nnU-Net would import and call it)")
        imports = arch.get("_kw_requires_import", [])
        if not isinstance(imports, list):
            raise WMHLocError(f"{where}: configuration {name}: _kw_requires_import is not a list")
        for k in imports:
            v = arch.get("arch_kwargs", {}).get(k) if isinstance(k, str) else k
            if v is not None and not (isinstance(v, str) and v.startswith(LAYER_PREFIXES)):
                raise WMHLocError(f"{where}: configuration {name}: {k} = {v!r} is not a torch.nn layer: refused "
                                  "(nnU-Net would import and call it)")
