"""The pack as ComfyUI sees it: registration, node conventions, and a side-effect-free import."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Import the pack the way ComfyUI's nodes.load_custom_node does, in a fresh interpreter, and
# report what the import did.
IMPORT_PROBE = r"""
import importlib.util, json, sys, os
spec = importlib.util.spec_from_file_location("rerender_pack_probe", os.path.join(sys.argv[1], "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules["rerender_pack_probe"] = module
spec.loader.exec_module(module)
import torch
print(json.dumps({
    "nodes": sorted(module.NODE_CLASS_MAPPINGS),
    "display": module.NODE_DISPLAY_NAME_MAPPINGS,
    "cupy_imported": "cupy" in sys.modules,
    "cuda_initialized": torch.cuda.is_initialized(),
    "cache_dir_created": os.path.exists(os.environ["RERENDER_CACHE_DIR"]),
}))
"""


@pytest.fixture(scope="module")
def import_report(tmp_path_factory):
    cache = tmp_path_factory.mktemp("probe") / "cache-not-created"
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(ROOT)], capture_output=True, text=True,
                            env={**__import__("os").environ, "RERENDER_CACHE_DIR": str(cache)}, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def node_classes():
    import rerender_video.nodes as nodes

    return nodes.NODE_CLASS_MAPPINGS


def _inputs(node_class):
    spec = node_class.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, declaration in spec.get(section, {}).items():
            yield name, declaration


class TestImport:
    def test_registers_nodes(self, import_report):
        assert len(import_report["nodes"]) >= 3

    def test_import_has_no_side_effects(self, import_report):
        assert not import_report["cupy_imported"], "importing the pack must not import CuPy"
        assert not import_report["cuda_initialized"], "importing the pack must not touch the GPU"
        assert not import_report["cache_dir_created"], "importing the pack must not write to disk"

    def test_every_node_has_a_display_name(self, import_report):
        assert set(import_report["display"]) == set(import_report["nodes"])
        assert all(name.startswith("Rerender ") for name in import_report["display"].values())


class TestNodeConventions:
    def test_ids_carry_the_prefix(self, node_classes):
        # ComfyUI silently drops a pack node whose id equals a core one (e.g. LoadVideo).
        assert all(node_id.startswith("Rerender") for node_id in node_classes)

    def test_category_description_function(self, node_classes):
        for node_id, node_class in node_classes.items():
            assert node_class.CATEGORY.startswith("Rerender/"), node_id
            assert len(getattr(node_class, "DESCRIPTION", "")) > 40, node_id
            assert callable(getattr(node_class, node_class.FUNCTION)), node_id
            assert isinstance(node_class.RETURN_TYPES, tuple), node_id

    def test_every_input_has_a_tooltip(self, node_classes):
        missing = [f"{node_id}.{name}" for node_id, node_class in node_classes.items()
                   for name, declaration in _inputs(node_class)
                   if len(declaration) < 2 or not declaration[1].get("tooltip")]
        assert not missing, f"inputs without tooltip: {missing}"

    def test_output_names_match_types(self, node_classes):
        for node_id, node_class in node_classes.items():
            names = getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)
            assert len(names) == len(node_class.RETURN_TYPES), node_id
            tooltips = getattr(node_class, "OUTPUT_TOOLTIPS", None)
            assert tooltips is not None and len(tooltips) == len(node_class.RETURN_TYPES), node_id


class TestRegistryMetadata:
    def test_pyproject_comfy_table(self):
        config = tomllib.loads((ROOT / "pyproject.toml").read_text())
        comfy = config["tool"]["comfy"]
        for key in ("PublisherId", "DisplayName", "Icon", "requires-comfyui"):
            assert key in comfy, key
        assert "torch" not in " ".join(config["project"]["dependencies"])

    def test_requirements_do_not_pin_torch(self):
        lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
        assert not any(line.startswith("torch") for line in lines if line)


SYNTHESIS_PROBE = r"""
import importlib, importlib.util, os, sys, torch
spec = importlib.util.spec_from_file_location("custom_nodes_probe", os.path.join(sys.argv[1], "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules["custom_nodes_probe"] = module
spec.loader.exec_module(module)
synthesis = importlib.import_module("custom_nodes_probe.propagation.synthesis")
frame = torch.rand(24, 24, 3, generator=torch.Generator().manual_seed(0))
result = synthesis.synthesize(frame, [synthesis.Guide(frame, frame, 1.0)], backend="cpu")
print(tuple(result.image.shape))
"""


def test_numba_cache_survives_another_import_name():
    """numba's disk cache written under the test import name must load under ComfyUI's import name."""
    from rerender_video.propagation.synthesis import Guide, synthesize

    frame = __import__("torch").rand(24, 24, 3)
    synthesize(frame, [Guide(frame, frame, 1.0)], backend="cpu")  # writes the cache as "rerender_video"
    result = subprocess.run([sys.executable, "-c", SYNTHESIS_PROBE, str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(24, 24, 3)" in result.stdout
