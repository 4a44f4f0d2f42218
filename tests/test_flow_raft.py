"""RAFT backend: weight lookup and errors (always), the network itself (only where torchvision imports).

The CPU test venv has no torchvision, so the network tests skip there; run them with the Python of
ComfyUI's venv: ``/path/to/comfy-venv/bin/python -m pytest tests/test_flow_raft.py``. They use random
weights (shapes, padding, file formats, caching), never downloaded ones. The node test runs as outside
ComfyUI (``models/optical_flow`` under the working folder) even after an integration test imported
ComfyUI in the same process (conftest ``_outside_comfyui``).
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from rerender_video.common.errors import InputError, MissingWeightsError
from rerender_video.flow.estimate import estimate_flow
from rerender_video.flow.raft import (
    TORCHVISION_FILES,
    RaftFlow,
    architecture_of,
    find_weights,
    import_torchvision_raft,
    list_weight_files,
)

needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision is not installed (run with ComfyUI's venv)")


class TestWeightLookup:
    def test_missing_weights_name_folders_and_files(self, tmp_path):
        first, second = tmp_path / "models" / "optical_flow", tmp_path / "extra"
        with pytest.raises(MissingWeightsError) as error:
            find_weights("raft_small", [first, second])
        message = str(error.value)
        assert str(first) in message and str(second) in message
        assert TORCHVISION_FILES["raft_small"] in message and "contains raft_small" in message
        assert "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth" in message
        with pytest.raises(MissingWeightsError, match="the file mine.pth"):
            find_weights("raft_large", [first], "mine.pth")

    def test_torchvision_name_first_then_any_name_containing_the_model(self, tmp_path):
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "my_raft_small_finetuned.safetensors").write_bytes(b"")
        assert find_weights("raft_small", [tmp_path]).name == "my_raft_small_finetuned.safetensors"
        (tmp_path / TORCHVISION_FILES["raft_small"]).write_bytes(b"")
        assert find_weights("raft_small", [tmp_path]).name == TORCHVISION_FILES["raft_small"]
        with pytest.raises(MissingWeightsError):
            find_weights("raft_large", [tmp_path])
        assert list_weight_files([tmp_path]) == ["a/my_raft_small_finetuned.safetensors",
                                                 TORCHVISION_FILES["raft_small"]]

    def test_bad_files(self, tmp_path):
        with pytest.raises(MissingWeightsError):
            RaftFlow(tmp_path / "absent.pth")
        broken = tmp_path / "raft_small_broken.pth"
        broken.write_bytes(b"not a checkpoint")
        with pytest.raises(InputError, match="raft_model: .*could not be read"):
            RaftFlow(broken)
        other = tmp_path / "other.pth"
        torch.save({"conv.weight": torch.zeros(3, 3)}, other)
        with pytest.raises(InputError, match="RAFT's feature_encoder"):
            RaftFlow(other)

    def test_unknown_model(self, tmp_path):
        with pytest.raises(InputError, match="backend"):
            find_weights("raft_huge", [tmp_path])

    def test_torchvision_missing_is_a_clear_error(self, monkeypatch):
        monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
        monkeypatch.delitem(sys.modules, "torchvision.models", raising=False)
        with pytest.raises(InputError, match="torchvision .*backend dis"):
            import_torchvision_raft()


@pytest.fixture(scope="module")
def random_raft_small(tmp_path_factory):
    """A raft_small state dict with random weights, saved as .pth and .safetensors."""
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    state = raft_small(weights=None, progress=False).state_dict()
    folder = tmp_path_factory.mktemp("optical_flow")
    torch.save(state, folder / TORCHVISION_FILES["raft_small"])
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "raft_small_random.safetensors")
    return folder


@pytest.fixture(scope="module")
def frame_pair(megamind_path):
    from rerender_video.videoio.reader import load_frames

    return load_frames(megamind_path, skip_first_frames=6, frame_load_cap=2, custom_width=150,
                       custom_height=110, size_multiple=2).images


@needs_torchvision
class TestRaftNetwork:
    def test_architecture_from_file(self, random_raft_small):
        from torchvision.models.optical_flow import raft_large

        assert architecture_of(raft_large(weights=None, progress=False).state_dict()) == "raft_large"
        assert RaftFlow(random_raft_small / TORCHVISION_FILES["raft_small"]).name == "raft_small"

    @pytest.mark.parametrize("filename", [TORCHVISION_FILES["raft_small"], "raft_small_random.safetensors"])
    def test_flow_shapes_with_padding(self, random_raft_small, frame_pair, filename):
        # 150×110 is neither a multiple of 8 nor 128 pixels tall: padded for the network, cropped back
        backend = RaftFlow(random_raft_small / filename, model="raft_small", iterations=2)
        assert frame_pair.shape[1:3] == (110, 150)
        flows = estimate_flow(frame_pair, [(0, 1)], backend)
        assert flows.forward.shape == (1, 110, 150, 2) and flows.backward.shape == (1, 110, 150, 2)
        assert torch.isfinite(torch.from_numpy(flows.forward[:].copy())).all()
        assert flows.method == {"backend": "raft_small", "weights": filename, "iterations": 2,
                                "occlusion": flows.method["occlusion"], "alpha": 0.01, "beta": 0.5}

    def test_same_weights_in_both_formats_give_the_same_flow(self, random_raft_small, frame_pair):
        pth = RaftFlow(random_raft_small / TORCHVISION_FILES["raft_small"], iterations=2)
        safetensors = RaftFlow(random_raft_small / "raft_small_random.safetensors", iterations=2)
        flow_pth = pth.flows(frame_pair[0], frame_pair[1])
        flow_safetensors = safetensors.flows(frame_pair[0], frame_pair[1])
        assert torch.allclose(flow_pth[0], flow_safetensors[0]) and torch.allclose(flow_pth[1], flow_safetensors[1])

    def test_file_of_the_other_architecture(self, random_raft_small):
        with pytest.raises(InputError, match="holds raft_small weights"):
            RaftFlow(random_raft_small / TORCHVISION_FILES["raft_small"], model="raft_large")

    def test_node_runs_raft_from_models_folder(self, random_raft_small, frame_pair, tmp_path, monkeypatch):
        from rerender_video.nodes import flow as flow_node

        folder = tmp_path / "models" / "optical_flow"
        folder.mkdir(parents=True)
        (folder / TORCHVISION_FILES["raft_small"]).write_bytes(
            (random_raft_small / TORCHVISION_FILES["raft_small"]).read_bytes())
        monkeypatch.chdir(tmp_path)
        flows, preview, masks = flow_node.RerenderEstimateFlow().estimate(
            frame_pair, backend="raft_small", dis_preset="medium", raft_model="auto", pair_mode="consecutive",
            keyframe_interval=10, keyframe_indices="", occlusion_alpha=0.01, occlusion_beta=0.5)
        assert flows.method["backend"] == "raft_small" and flows.method["iterations"] == 12
        assert preview.shape == (1, 110, 150, 3) and masks.shape == (1, 110, 150)
