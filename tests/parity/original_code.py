"""Running the original third-party code inside the tests.

Where it lives (ignored by git, never committed; ``make third-party`` puts it there; the
environment variable ``VMUNET_THIRD_PARTY`` names another folder):

* ``third_party/VM-UNet``: JCruan519/VM-UNet at commit :data:`VMUNET_COMMIT` (``COMMIT`` holds it).
* ``third_party/VM-UNetV2``: nobodyplayer1/VM-UNetV2 at commit :data:`VMUNET_V2_COMMIT`.
* ``third_party/Mamba-UNet``: ziyangwang007/Mamba-UNet at commit :data:`MAMBA_UNET_COMMIT`.
* ``third_party/RS-Mamba``: walking-shadow/Official_Remote_Sensing_Mamba at :data:`RS_MAMBA_COMMIT`.
* ``third_party/VMamba``: MzeroMiko/VMamba at :data:`VMAMBA_COMMIT` (its one-file ``vmamba.py``).
* ``third_party/Swin-UMamba``: JiarunLiu/Swin-UMamba at :data:`SWIN_UMAMBA_COMMIT` (its model files
  ``swin_umamba/nnunetv2/nets/SwinUMamba.py`` and ``SwinUMambaD.py``).
* ``third_party/UltraLight-VM-UNet``: wurenkai/UltraLight-VM-UNet at :data:`ULTRALIGHT_COMMIT`
  (its model file ``models/UltraLight_VM_UNet.py``).
* ``third_party/mamba-ssm``: the mamba-ssm 2.3.2.post1 source distribution (PyPI), for its
  ``selective_scan_ref``, the pure-PyTorch definition its CUDA kernel is tested against, and its
  ``Mamba`` block (``mamba_ssm/modules/mamba_simple.py``, UltraLight VM-UNet's mixer).
* ``third_party/torchvision-0.14.0``: the torchvision 0.14.0 wheel (PyPI) unpacked, the version
  VM-UNet's README pins, for the tensor transforms its ISIC pipeline calls (``TF.resize``,
  ``hflip``, ``vflip``, ``rotate``; see :func:`torchvision_0_14`).

Without them the tests that execute this code skip with the reason; every such test also checks a
small output frozen from the original code (literals in the test, with the commit, or a file under
``frozen/`` written by a committed script, ``freeze_*.py``), so a fresh clone still checks the numbers.

Only what a comparison needs is executed: top-level functions and classes are taken out of the
original files with :mod:`ast` and run in a namespace holding the modules they use, so
``utils.py``'s unrelated imports (torchvision, thop, matplotlib, SimpleITK) are not needed (its
ISIC transforms are given torchvision 0.14.0's ``functional`` from :func:`torchvision_0_14`). The
model package imports ``timm`` (DropPath, to_2tuple, trunc_normal_: initialisation and drop path,
identity in eval mode) and ``mamba_ssm`` (the scan); stand-ins for these are put in
``sys.modules`` only while it is imported, the scan being mamba-ssm's own ``selective_scan_ref``.
Swin-UMamba's model files also import two nnU-Net classes, for type hints only: empty stand-ins
(and ``SwinUMambaD.py`` two initialisers: stand-ins that do nothing, but where the real
``InitWeights_He`` of Swin-UMamba's own nnU-Net copy is put in, :func:`swin_umamba_init_weights_he`).
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import math
import os
import re
import sys
import types
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
THIRD_PARTY = Path(os.environ.get("VMUNET_THIRD_PARTY", REPO / "third_party"))
VMUNET_DIR = THIRD_PARTY / "VM-UNet"
VMUNET_V2_DIR = THIRD_PARTY / "VM-UNetV2"
MAMBA_UNET_DIR = THIRD_PARTY / "Mamba-UNet"
RS_MAMBA_DIR = THIRD_PARTY / "RS-Mamba"
VMAMBA_DIR = THIRD_PARTY / "VMamba"
SWIN_UMAMBA_DIR = THIRD_PARTY / "Swin-UMamba"
ULTRALIGHT_DIR = THIRD_PARTY / "UltraLight-VM-UNet"
MAMBA_DIR = THIRD_PARTY / "mamba-ssm"
VMUNET_COMMIT = "43c495bfd0cb2bd58fd0147687c60c9c624c4840"  # JCruan519/VM-UNet, 2024-08 ("update packs ...")
VMUNET_V2_COMMIT = "b65f04c10237158ddd4ebe5bf2c1b5cbb15524fb"  # nobodyplayer1/VM-UNetV2 ("add readme.md")
MAMBA_UNET_COMMIT = "dfe92ba3788970e2dd5a4eaf7876bd3e32d3dc0a"  # ziyangwang007/Mamba-UNet ("13sep")
RS_MAMBA_COMMIT = "aa6494e7752efc9fafd507b24f3d9c8d7098e491"  # walking-shadow/Official_Remote_Sensing_Mamba
VMAMBA_COMMIT = "2ed52ead062a51a64521ed3871d52914bf532876"  # MzeroMiko/VMamba ("Update vmamba.py", 2025-03-07)
SWIN_UMAMBA_COMMIT = "2c1f72e1975cef6621f239117efdc954237c6952"  # JiarunLiu/Swin-UMamba ("support updated vssm ckpt", 2024-03-19)
SWIN_UMAMBA_NETS = "swin_umamba/nnunetv2/nets"
# wurenkai/UltraLight-VM-UNet ("Update README.md", 2025-06-27; models/UltraLight_VM_UNet.py unchanged
# since its upload, 2024-04-01)
ULTRALIGHT_COMMIT = "d7648e4ece5311d2a6d7c8ea7572f9ca78ae18d2"
ULTRALIGHT_MODEL = "models/UltraLight_VM_UNet.py"
MAMBA_SIMPLE_FILE = "mamba_ssm/modules/mamba_simple.py"  # mamba-ssm 2.3.2.post1, class Mamba
MAMBA_SCAN_FILE = "mamba_ssm/ops/selective_scan_interface.py"  # mamba-ssm 2.3.2.post1
TORCHVISION_DIR = THIRD_PARTY / "torchvision-0.14.0"
TORCHVISION_VERSION = "0.14.0"  # VM-UNet's README: pip install torch==1.13.0 torchvision==0.14.0


def _pinned(folder: Path, marker: str, url: str, commit: str) -> Path:
    """``folder`` holding ``marker`` at ``commit`` (its COMMIT file), or skip saying how to get it."""
    if not (folder / marker).is_file():
        where = f"{folder} has no {marker}" if folder.is_dir() else f"original code not in {folder}"
        pytest.skip(f"{where} (`make third-party`, or clone {url} at {commit[:7]} there); "
                    "the frozen outputs are still checked")
    commit_file = folder / "COMMIT"
    found = commit_file.read_text().strip() if commit_file.is_file() else "unknown"
    if found != commit:
        pytest.skip(f"{folder} is at commit {found} (COMMIT file), the tests pin {commit[:7]}")
    return folder


def vmunet_dir(marker: str = "utils.py") -> Path:
    """``third_party/VM-UNet`` holding ``marker`` (default: the whole repository, utils.py,
    engine*.py, configs; the model tests need only ``models/vmunet``)."""
    return _pinned(VMUNET_DIR, marker, "github.com/JCruan519/VM-UNet", VMUNET_COMMIT)


def vmunet_v2_dir() -> Path:
    return _pinned(VMUNET_V2_DIR, "models/vmunet/vmunet_v2.py", "github.com/nobodyplayer1/VM-UNetV2",
                   VMUNET_V2_COMMIT)


def mamba_unet_dir() -> Path:
    return _pinned(MAMBA_UNET_DIR, "code/networks/mamba_sys.py", "github.com/ziyangwang007/Mamba-UNet",
                   MAMBA_UNET_COMMIT)


def rs_mamba_file() -> Path:
    """RS-Mamba's ``semantic_segmentation_mamba/rs_mamba_ss.py`` (its 8-direction cross-scan)."""
    marker = "semantic_segmentation_mamba/rs_mamba_ss.py"
    return _pinned(RS_MAMBA_DIR, marker, "github.com/walking-shadow/Official_Remote_Sensing_Mamba",
                   RS_MAMBA_COMMIT) / marker


def vmamba_renamer():
    """VMamba's ``VSSM._load_from_state_dict`` (one-file ``vmamba.py``), which renames v0 checkpoint
    keys to its later module names, as a function ``state_dict -> renamed state_dict``. The method
    is executed in a bare ``nn.Module`` subclass, so its ``super()`` call has nothing to load."""
    import torch.nn.functional as F
    from torch import nn

    path = _pinned(VMAMBA_DIR, "vmamba.py", "github.com/MzeroMiko/VMamba", VMAMBA_COMMIT) / "vmamba.py"
    text = path.read_text()
    vssm = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "VSSM")
    method = next(n for n in vssm.body if isinstance(n, ast.FunctionDef) and n.name == "_load_from_state_dict")
    stub = ast.ClassDef(name="VSSMRenamer", bases=[ast.Name("Module", ast.Load())], keywords=[], body=[method],
                        decorator_list=[], type_params=[])
    ns: dict[str, Any] = {"Module": nn.Module, "F": F, "torch": __import__("torch")}
    exec(compile(ast.fix_missing_locations(ast.Module(body=[stub], type_ignores=[])), str(path), "exec"), ns)  # noqa: S102

    def rename(state_dict: dict) -> dict:
        out = dict(state_dict)
        ns["VSSMRenamer"]()._load_from_state_dict(out, "", {}, True, [], [], [])
        return out

    return rename


def mamba_scan_file() -> Path:
    path = MAMBA_DIR / MAMBA_SCAN_FILE
    if not path.is_file():
        pytest.skip(f"mamba-ssm source not in {MAMBA_DIR} (`make third-party`: the 2.3.2.post1 sdist "
                    "unpacked there); the frozen outputs are still checked")
    return path


def torchvision_0_14() -> types.ModuleType:
    """torchvision 0.14.0's ``torchvision.transforms`` package, pure Python, from the unpacked wheel.

    torchvision cannot be installed here (its wheels pin their own torch build). Its package
    ``__init__.py`` is the only file not executed: it loads the compiled extension (``_C``, image
    and video I/O) and imports ``datasets``, ``io``, ``models`` and ``ops``, none of which the
    transforms use. In its place a bare package object is registered under a private name
    (``_torchvision_0_14_0``, so MONAI or Lightning looking for an installed ``torchvision`` find
    nothing), whose path is the wheel's folder; ``transforms/`` (``functional.py``,
    ``functional_tensor.py``, ``functional_pil.py``, ``transforms.py``, ...) and ``utils.py`` are
    then imported unchanged (they import each other relatively, and otherwise only torch, numpy
    and PIL). Nothing else is stubbed.
    """
    name = "_torchvision_0_14_0"
    if f"{name}.transforms" in sys.modules:
        return sys.modules[f"{name}.transforms"]
    root = TORCHVISION_DIR / "torchvision"
    if not (root / "transforms" / "functional_tensor.py").is_file():
        pytest.skip(f"torchvision {TORCHVISION_VERSION} not in {TORCHVISION_DIR} (`make third-party`: its "
                    "wheel from PyPI unpacked there); the frozen outputs are still checked")
    version_py = (root / "version.py").read_text()
    match = re.search(r"^__version__ = ['\"]([^'\"]+)['\"]", version_py, re.MULTILINE)
    found = match.group(1) if match else "unknown"
    if found != TORCHVISION_VERSION:
        pytest.skip(f"{root} is torchvision {found} (version.py), the tests pin {TORCHVISION_VERSION}")
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = [str(root)]
    sys.modules[name] = importlib.util.module_from_spec(spec)  # torchvision/__init__.py not run
    try:
        return importlib.import_module(f"{name}.transforms")
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            sys.modules.pop(key)
        raise


def load_definitions(path: Path, names: list[str], namespace: dict[str, Any],
                     rewrite: Callable[[str], str] | None = None) -> dict[str, Any]:
    """Execute the top-level ``def``/``class`` statements ``names`` of ``path`` (nothing else of
    the file) in ``namespace`` and return it; ``rewrite`` edits the source first. Tracebacks point
    into the original file."""
    text = path.read_text()
    tree = ast.parse(rewrite(text) if rewrite else text, filename=str(path))
    found = {node.name: node for node in tree.body
             if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names}
    missing = [n for n in names if n not in found]
    if missing:
        raise AssertionError(f"{path}: no top-level definition of {missing}")
    module = ast.Module(body=[found[n] for n in names], type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)  # noqa: S102 - the pinned original code
    return namespace


def definition_source(path: Path, name: str) -> str:
    """The source text of the top-level definition ``name`` of ``path``."""
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return ast.get_source_segment(text, node)
    raise AssertionError(f"{path}: no top-level definition of {name}")


def replace_exactly(text: str, where: str, edits: list[tuple[str, str, int]]) -> str:
    """``text`` with each ``(old, new, count)`` applied, after checking ``old`` occurs exactly
    ``count`` times (so an edited original fails loudly instead of running unedited)."""
    for old, new, count in edits:
        found = text.count(old)
        if found != count:
            raise AssertionError(f"{where}: expected {count} occurrences of {old!r} to rewrite, found {found}")
        text = text.replace(old, new)
    return text


def _scan_ref_float64(text: str) -> str:
    # selective_scan_ref computes in float32 whatever its inputs (`.float()` on u, delta, delta_bias,
    # B, C, and B, C again in the complex-A branch: the file's only 7); the float64 run keeps float64
    return replace_exactly(text, MAMBA_SCAN_FILE, [(".float()", ".double()", 7)])


def mamba_selective_scan_ref(float64: bool = False):
    """mamba-ssm's ``selective_scan_ref`` (executed from its source); ``float64``: with its float32
    casts rewritten to float64 (for float64 comparisons; nothing else changes)."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange, repeat

    ns = load_definitions(mamba_scan_file(), ["selective_scan_ref"],
                          {"torch": torch, "F": F, "rearrange": rearrange, "repeat": repeat},
                          _scan_ref_float64 if float64 else None)
    return ns["selective_scan_ref"]


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """``timm.models.layers`` as VM-UNet uses it (timm 0.4.12): DropPath, to_2tuple, trunc_normal_."""
    import torch
    from torch import nn

    class DropPath(nn.Module):
        """timm's stochastic depth: identity in eval mode (the only mode these tests run)."""

        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if not self.drop_prob or not self.training:
                return x
            keep = 1 - self.drop_prob
            mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor_()
            return x.div(keep) * mask

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
        return nn.init.trunc_normal_(tensor, mean, std, a, b)

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, trunc_normal_
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


def _import_package(root: Path, name: str, modules: list[str],
                    extra: dict[str, types.ModuleType] | None = None,
                    rewrite: Callable[[str], str] | None = None, float64_scan: bool = False) -> types.ModuleType:
    """Import ``root``'s ``modules`` (files of one folder that import each other relatively) as the
    package ``name``, once; ``selective_scan_fn`` is mamba-ssm's ``selective_scan_ref`` (its float64
    rewrite with ``float64_scan``); ``extra``: more stand-in modules for the import; ``rewrite``
    edits each module's source before it runs."""
    if name in sys.modules:
        return sys.modules[name]
    scan_ref = mamba_selective_scan_ref(float64_scan)
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = interface.selective_scan_ref = scan_ref
    stand_ins = {**_timm_stand_in(), "mamba_ssm": types.ModuleType("mamba_ssm"),
                 "mamba_ssm.ops": types.ModuleType("mamba_ssm.ops"),
                 "mamba_ssm.ops.selective_scan_interface": interface, **(extra or {})}
    saved = {key: sys.modules.get(key) for key in stand_ins}
    sys.modules.update(stand_ins)
    try:
        spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
        package = importlib.util.module_from_spec(spec)  # the folder's __init__.py is not run (VM-UNet has none)
        sys.modules[name] = package
        for sub in modules:
            sub_spec = importlib.util.spec_from_file_location(f"{name}.{sub}", root / f"{sub}.py")
            module = importlib.util.module_from_spec(sub_spec)
            sys.modules[sub_spec.name] = module
            if rewrite is None:
                sub_spec.loader.exec_module(module)
            else:
                path = root / f"{sub}.py"
                exec(compile(rewrite(path.read_text()), str(path), "exec"), module.__dict__)  # noqa: S102
            setattr(package, sub, module)
    except BaseException:
        for key in [name, *(f"{name}.{sub}" for sub in modules)]:
            sys.modules.pop(key, None)
        raise
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return package


def original_vmunet_package() -> types.ModuleType:
    """The original VM-UNet ``models/vmunet`` package: ``vmamba.VSSM``, ``vmunet.VMUNet``."""
    root = vmunet_dir("models/vmunet/vmamba.py") / "models" / "vmunet"
    return _import_package(root, "vmunet_original_models", ["vmamba", "vmunet"])


def original_vmunet_v2_package() -> types.ModuleType:
    """The original VM-UNet-V2 ``models/vmunet`` package: ``vmamba.VSSM`` (encoder features),
    ``vmunet_v2.VMUNetV2``."""
    return _import_package(vmunet_v2_dir() / "models" / "vmunet", "vmunet_v2_original_models",
                           ["vmamba", "vmunet_v2"])


def original_mamba_unet_package() -> types.ModuleType:
    """Mamba-UNet's ``code/networks`` (``mamba_sys.VSSM``, ``vision_mamba.MambaUnet``). ``fvcore``,
    imported for FLOP counting only, is a stand-in without functions."""
    fvcore_nn = types.ModuleType("fvcore.nn")
    for fn in ("FlopCountAnalysis", "flop_count_str", "flop_count", "parameter_count"):
        setattr(fvcore_nn, fn, None)
    fvcore = types.ModuleType("fvcore")
    fvcore.nn = fvcore_nn
    return _import_package(mamba_unet_dir() / "code" / "networks", "mamba_unet_original_networks",
                           ["mamba_sys", "vision_mamba"], {"fvcore": fvcore, "fvcore.nn": fvcore_nn})


def swin_umamba_file(name: str = "SwinUMamba") -> Path:
    """Swin-UMamba's model file ``swin_umamba/nnunetv2/nets/{name}.py`` (``SwinUMamba``, or
    ``SwinUMambaD``: Swin-UMamba†)."""
    marker = f"{SWIN_UMAMBA_NETS}/{name}.py"
    return _pinned(SWIN_UMAMBA_DIR, marker, "github.com/JiarunLiu/Swin-UMamba", SWIN_UMAMBA_COMMIT) / marker


def _swin_umamba_float64(name: str) -> Callable[[str], str]:
    # SS2D.forward_core casts the scan's inputs to float32 (`.float()` x7) and asserts float32
    # outputs; the float64 run keeps float64 (the only edit; both model files hold the same SS2D)
    return lambda text: replace_exactly(text, f"{SWIN_UMAMBA_NETS}/{name}.py", [
        (".float()", ".double()", 7),
        ("assert out_y.dtype == torch.float\n", "assert out_y.dtype == torch.float64\n", 1),
        ("assert y1.dtype == torch.float32", "assert y1.dtype == torch.float64", 1)])


def _swin_umamba_nets(name: str, float64: bool, extra: dict[str, types.ModuleType]) -> types.ModuleType:
    """``nnunetv2/nets/{name}.py`` imported with nnU-Net's plans classes (type hints of its
    ``get_*_from_plans``) as empty stand-ins, plus ``extra``."""
    path = swin_umamba_file(name)
    plans = types.ModuleType("nnunetv2.utilities.plans_handling.plans_handler")
    plans.ConfigurationManager = type("ConfigurationManager", (), {"__doc__": "stand-in (type hint only)"})
    plans.PlansManager = type("PlansManager", (), {"__doc__": "stand-in (type hint only)"})
    nnunet = {name: types.ModuleType(name) for name in
              ("nnunetv2", "nnunetv2.utilities", "nnunetv2.utilities.plans_handling")}
    nnunet[plans.__name__] = plans
    package = _import_package(path.parent, f"{name.lower()}_original_nets" + ("_float64" if float64 else ""),
                              [name], {**nnunet, **extra}, _swin_umamba_float64(name) if float64 else None,
                              float64_scan=float64)
    return getattr(package, name)


def swin_umamba_init_weights_he() -> type:
    """nnU-Net's ``InitWeights_He`` as Swin-UMamba ships it (its own nnU-Net copy,
    ``swin_umamba/nnunetv2/utilities/network_initialization.py``), executed from that file."""
    from torch import nn

    marker = "swin_umamba/nnunetv2/utilities/network_initialization.py"
    path = _pinned(SWIN_UMAMBA_DIR, marker, "github.com/JiarunLiu/Swin-UMamba", SWIN_UMAMBA_COMMIT) / marker
    return load_definitions(path, ["InitWeights_He"], {"nn": nn})["InitWeights_He"]


def original_swin_umamba_module(float64: bool = False) -> types.ModuleType:
    """Swin-UMamba's ``nnunetv2/nets/SwinUMamba.py`` as a module (``SwinUMamba``, ``VSSMEncoder``,
    ``load_pretrained_ckpt``); ``float64``: its float32 casts of the scan (and the scan's own)
    rewritten to float64, a separate module.

    It imports ``PlansManager``/``ConfigurationManager`` from nnU-Net for the type hints of
    ``get_swin_umamba_from_plans`` only (never called here): empty stand-in classes. MONAI's UNETR
    blocks are the installed MONAI's (the original pins 1.3.0; its ``dynunet_block.py`` and
    ``unetr_block.py`` equal 1.6.1's but for one blank line)."""
    return _swin_umamba_nets("SwinUMamba", float64, {})


def original_swin_umamba_d_module(float64: bool = False) -> types.ModuleType:
    """Swin-UMamba†'s ``nnunetv2/nets/SwinUMambaD.py`` as a module (``SwinUMambaD``,
    ``VSSMEncoder``, ``UNetResDecoder``, ``load_pretrained_ckpt``, ``get_swin_umamba_d_from_plans``);
    ``float64`` as :func:`original_swin_umamba_module`.

    Besides the plans classes it imports two initialisers, used by ``get_swin_umamba_d_from_plans``
    only: nnU-Net's ``InitWeights_He`` and dynamic_network_architectures'
    ``init_last_bn_before_add_to_0``. Their stand-ins change nothing (every test overwrites all
    tensors); ``test_original_init_rules.py`` puts the real ``InitWeights_He``
    (:func:`swin_umamba_init_weights_he`) in its place for the initialisation it compares."""
    init = types.ModuleType("nnunetv2.utilities.network_initialization")
    init.InitWeights_He = lambda neg_slope=1e-2: (lambda module: None)
    dna = {name: types.ModuleType(name) for name in
           ("dynamic_network_architectures", "dynamic_network_architectures.initialization",
            "dynamic_network_architectures.initialization.weight_init")}
    dna["dynamic_network_architectures.initialization.weight_init"].init_last_bn_before_add_to_0 = lambda module: None
    return _swin_umamba_nets("SwinUMambaD", float64, {init.__name__: init, **dna})


def ultralight_file() -> Path:
    """UltraLight VM-UNet's model file ``models/UltraLight_VM_UNet.py``."""
    return _pinned(ULTRALIGHT_DIR, ULTRALIGHT_MODEL, "github.com/wurenkai/UltraLight-VM-UNet",
                   ULTRALIGHT_COMMIT) / ULTRALIGHT_MODEL


def _mamba_simple_float64(text: str) -> str:
    # Mamba casts A_log, D and dt_proj.bias to float32 (`.float()`: the file's only 6, all in
    # class Mamba); the float64 run keeps float64
    return replace_exactly(text, MAMBA_SIMPLE_FILE, [(".float()", ".double()", 6)])


def mamba_ssm_mamba(float64: bool = False) -> type:
    """mamba-ssm's ``Mamba`` block (``mamba_simple.py``), executed from its source on the CPU.

    Its optional imports are absent as on a machine without the CUDA packages: ``causal_conv1d``
    (``causal_conv1d_fn`` None, so ``forward`` takes its slow path whatever ``use_fast_path``:
    ``nn.Conv1d`` + SiLU, ``x_proj``/``dt_proj``, ``selective_scan_fn``, ``out_proj``) and the Triton
    kernels (used by ``step`` only); ``selective_scan_fn`` is its own ``selective_scan_ref``
    (``float64``: with the float32 casts of both rewritten to float64). UltraLight VM-UNet pins
    mamba_ssm 1.0.1, whose ``Mamba`` has the same parameters and slow path; its fast path,
    ``mamba_inner_fn`` (CUDA only), computes the same function."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange, repeat
    from torch import Tensor, nn

    path = MAMBA_DIR / MAMBA_SIMPLE_FILE
    if not path.is_file():
        pytest.skip(f"mamba-ssm source not in {MAMBA_DIR} (`make third-party`: the 2.3.2.post1 sdist "
                    "unpacked there); the frozen outputs are still checked")
    ns: dict[str, Any] = {
        "math": math, "Optional": __import__("typing").Optional, "torch": torch, "nn": nn, "F": F, "Tensor": Tensor,
        "rearrange": rearrange, "repeat": repeat, "selective_scan_fn": mamba_selective_scan_ref(float64),
        "mamba_inner_fn": None, "causal_conv1d_fn": None, "causal_conv1d_update": None,
        "selective_state_update": None, "RMSNorm": None, "layer_norm_fn": None, "rms_norm_fn": None,
    }
    return load_definitions(path, ["Mamba"], ns, _mamba_simple_float64 if float64 else None)["Mamba"]


def original_ultralight_module(float64: bool = False, logits: bool = True) -> types.ModuleType:
    """UltraLight VM-UNet's ``models/UltraLight_VM_UNet.py`` as a module (``UltraLight_VM_UNet``,
    ``PVMLayer``, ``SC_Att_Bridge``, ...), its ``from mamba_ssm import Mamba`` given
    :func:`mamba_ssm_mamba` (``float64`` as there) and timm's ``trunc_normal_`` the stand-in's.
    ``logits``: its forward's last line ``return torch.sigmoid(out0)`` rewritten to ``return out0``
    (the one edit), so logits are compared; otherwise the file runs unchanged."""
    mamba = types.ModuleType("mamba_ssm")
    mamba.Mamba = mamba_ssm_mamba(float64)
    path = ultralight_file()
    name = "ultralight_original_models" + ("_float64" if float64 else "") + ("_logits" if logits else "")
    rewrite = (lambda text: replace_exactly(text, ULTRALIGHT_MODEL, [("return torch.sigmoid(out0)", "return out0", 1)])
               ) if logits else None
    package = _import_package(path.parent, name, ["UltraLight_VM_UNet"], {"mamba_ssm": mamba}, rewrite,
                              float64_scan=float64)
    return package.UltraLight_VM_UNet


def deterministic_tensors(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Weights from a closed formula (no random generator, so frozen outputs do not depend on a
    library's random stream, nor on which other keys are present): tensor ``key`` is
    ``s * sin(0.37 n + p)`` over its flat index ``n``, ``p = crc32(key) / 2**32 * 2 pi``,
    ``s`` = 2/sqrt(fan-in) for matrices and kernels (large enough that a wrong scan order moves
    the tiny model's logits by 1e-1, float32 noise being 1e-5), 0.1 for vectors; norm weights, ``Ds`` and
    BatchNorm running variances get 1 added; ``num_batches_tracked`` is 0."""
    import torch

    out = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        n = math.prod(shape)
        phase = zlib.crc32(key.encode()) / 2**32 * 2 * math.pi
        flat = torch.sin(torch.arange(n, dtype=torch.float64) * 0.37 + phase)
        scale = 2.0 / math.sqrt(n // shape[0]) if len(shape) >= 2 else 0.1
        t = (flat * scale).reshape(shape)
        if key.endswith(("norm.weight", "ln_1.weight", ".Ds", "bn.weight", "running_var")):
            t = t + 1.0
        out[key] = t.float()
    return out


def deterministic_input(shape: tuple[int, ...]):
    """An input from a closed formula: ``cos(0.11 n)`` over the flat index ``n``."""
    import torch

    return torch.cos(torch.arange(math.prod(shape), dtype=torch.float64) * 0.11).reshape(shape).float()


def write_frozen_npz(path: Path, arrays: dict[str, Any], provenance: dict[str, str]) -> None:
    """Write ``arrays`` and ``provenance`` (as the JSON string under key ``provenance``) to the
    compressed ``path`` atomically: a failed run leaves the previous frozen file."""
    import io
    import json

    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays, provenance=np.array(json.dumps(provenance)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_file = path.with_suffix(".npz.tmp")
    tmp_file.write_bytes(buffer.getvalue())
    os.replace(tmp_file, path)
