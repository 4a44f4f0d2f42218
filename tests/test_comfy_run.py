"""The scripted-run client (cli/comfy_run.py) and the shipped workflows, without a ComfyUI server.

``/object_info`` is rebuilt from the pack's own node classes plus the few core nodes the workflows
use, so a node whose widgets change in a way the saved workflows no longer match fails here, in CI,
not only in the integration test. Running the workflows for real: tests/test_pipeline_integration.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rerender_video.cli import comfy_run

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"

CORE_NODES = {
    "Canny": ({"required": {"image": ["IMAGE", {}], "low_threshold": ["FLOAT", {"default": 0.4}],
                            "high_threshold": ["FLOAT", {"default": 0.8}]}}, ["IMAGE"], ["IMAGE"], None),
    "CheckpointLoaderSimple": ({"required": {"ckpt_name": [["model.safetensors"], {}]}}, ["MODEL", "CLIP", "VAE"],
                               ["MODEL", "CLIP", "VAE"], "Load Checkpoint"),
    "CLIPTextEncode": ({"required": {"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]}},
                       ["CONDITIONING"], ["CONDITIONING"], "CLIP Text Encode (Prompt)"),
    "ControlNetLoader": ({"required": {"control_net_name": [["cn.safetensors"], {}]}}, ["CONTROL_NET"],
                         ["CONTROL_NET"], "Load ControlNet Model"),
    "ControlNetApplyAdvanced": ({"required": {"positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
                                              "control_net": ["CONTROL_NET", {}], "image": ["IMAGE", {}],
                                              "strength": ["FLOAT", {"default": 1.0}],
                                              "start_percent": ["FLOAT", {"default": 0.0}],
                                              "end_percent": ["FLOAT", {"default": 1.0}]},
                                 "optional": {"vae": ["VAE", {}]}},
                                ["CONDITIONING", "CONDITIONING"], ["positive", "negative"], "Apply ControlNet"),
    "MaskComposite": ({"required": {"destination": ["MASK", {}], "source": ["MASK", {}],
                                    "x": ["INT", {"default": 0, "min": 0}], "y": ["INT", {"default": 0, "min": 0}],
                                    "operation": [["multiply", "add", "subtract", "and", "or", "xor"], {}]}},
                      ["MASK"], ["MASK"], "MaskComposite"),
    "PreviewImage": ({"required": {"images": ["IMAGE", {}]}}, [], [], "Preview Image"),
    "SolidMask": ({"required": {"value": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}],
                                "width": ["INT", {"default": 512, "min": 1}],
                                "height": ["INT", {"default": 512, "min": 1}]}}, ["MASK"], ["MASK"], "SolidMask"),
    "SaveImage": ({"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  [], [], "Save Image"),
}


def _json(value):
    return json.loads(json.dumps(value, default=str))


@pytest.fixture(scope="module")
def object_info() -> dict:
    import rerender_video.nodes as nodes

    info = {}
    for node_id, node_class in nodes.NODE_CLASS_MAPPINGS.items():
        spec = node_class.INPUT_TYPES()
        inputs = {section: _json(spec.get(section, {})) for section in ("required", "optional")}
        info[node_id] = {"input": inputs, "input_order": {s: list(v) for s, v in inputs.items()},
                         "output": list(node_class.RETURN_TYPES),
                         "output_name": list(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)),
                         "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]}
    for node_id, (inputs, outputs, names, display) in CORE_NODES.items():
        info[node_id] = {"input": inputs, "input_order": {s: list(v) for s, v in inputs.items()}, "output": outputs,
                         "output_name": names, "display_name": display}
    return info


def load(name: str, object_info: dict) -> dict:
    return comfy_run.load_prompt(WORKFLOWS / name, object_info=object_info)


def by_title(prompt: dict, title: str) -> dict:
    return prompt[comfy_run.find_nodes(prompt, title)[0]]


class TestWorkflows:
    def test_sdxl_workflow_converts_with_its_models_and_size(self, object_info):
        prompt = load("rerender_video_sdxl.json", object_info)
        renderer = by_title(prompt, "Keyframe Renderer")["inputs"]
        assert renderer["cfattn_depth"] == 5 and renderer["rough_render"] == "early" and renderer["steps"] == 20
        checkpoint = next(n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple")["inputs"]
        controlnet = next(n for n in prompt.values() if n["class_type"] == "ControlNetLoader")["inputs"]
        assert "xl" in checkpoint["ckpt_name"] and "sdxl" in controlnet["control_net_name"]
        assert by_title(prompt, "Load Video")["inputs"]["custom_width"] == 1024

    def test_video_workflow_converts(self, object_info):
        prompt = load("rerender_video.json", object_info)
        renderer = by_title(prompt, "Keyframe Renderer")
        assert renderer["class_type"] == "RerenderKeyframeRenderer"
        ids = {node["_meta"]["title"]: node_id for node_id, node in prompt.items()}
        assert renderer["inputs"]["flow"] == [ids["Estimate Flow"], 0]
        assert renderer["inputs"]["keyframes"] == [ids["Keyframe Selection"], 0]
        assert renderer["inputs"]["control_images"] == [ids["Canny"], 0]
        assert renderer["inputs"]["positive"] == [ids["Apply ControlNet"], 0]
        assert renderer["inputs"]["first_keyframe_only"] is False and renderer["inputs"]["denoise"] == 0.75
        assert renderer["inputs"]["pixel_fusion"] is True and renderer["inputs"]["seed"] == 0
        assert by_title(prompt, "Estimate Flow")["inputs"]["pair_mode"] == "consecutive+keyframes"
        propagate = by_title(prompt, "EbSynth Propagate")["inputs"]
        assert propagate["stylized_keyframes"] == [ids["Keyframe Renderer"], 0]
        assert propagate["keyframes"] == [ids["Keyframe Renderer"], 2]
        save = by_title(prompt, "Save Video")["inputs"]
        assert save["fps"] == [ids["Load Video"], 1] and save["video_info"] == [ids["Load Video"], 4]
        assert by_title(prompt, "Load Video")["inputs"]["size_multiple"] == 8
        assert not [node for node in prompt.values() if node["class_type"] == "Note"]

    def test_long_video_workflow_holds_no_whole_clip(self, object_info):
        prompt = load("rerender_long_video.json", object_info)
        ids = {node["_meta"]["title"]: node_id for node_id, node in prompt.items()}
        selection, loader = by_title(prompt, "Keyframe Selection")["inputs"], by_title(prompt, "Load Video")
        assert selection["video_info"] == [ids["Video Info"], 0] and "frames" not in selection  # from the file
        assert loader["inputs"]["keyframes"] == [ids["Keyframe Selection"], 0]  # just the keyframes
        info_widgets = by_title(prompt, "Video Info")["inputs"]
        assert {k: v for k, v in loader["inputs"].items() if k != "keyframes"} == info_widgets  # the same load
        flow = by_title(prompt, "Estimate Flow")["inputs"]
        assert flow["pair_mode"] == "keyframes" and flow["keyframes"] == [ids["Keyframe Selection"], 0]
        renderer = by_title(prompt, "Keyframe Renderer")["inputs"]
        assert renderer["frames"] == [ids["Load Video"], 0] and renderer["flow"] == [ids["Estimate Flow"], 0]
        assert renderer["control_images"] == [ids["Canny"], 0] and by_title(prompt, "Canny")["inputs"]["image"] == [
            ids["Load Video"], 0]
        streaming = by_title(prompt, "Propagate to Video")
        assert streaming["class_type"] == "RerenderPropagateToVideo"
        assert streaming["inputs"]["stylized_keyframes"] == [ids["Keyframe Renderer"], 0]
        assert streaming["inputs"]["keyframes"] == [ids["Keyframe Renderer"], 2]
        assert streaming["inputs"]["video_info"] == [ids["Load Video"], 4]
        assert streaming["inputs"]["filename_prefix"] == "rerender/long_video" and streaming["inputs"]["direction"] == "both"
        image_users = [node["class_type"] for node in prompt.values()
                       for value in node["inputs"].values() if value == [ids["Load Video"], 0]]
        assert "RerenderEbSynthPropagate" not in image_users and "RerenderSaveVideo" not in image_users

    def test_every_widget_value_has_a_widget(self, object_info):
        # a widget inserted in the middle of a node would shift the saved values: count them
        for name in ("rerender_video.json", "rerender_first_keyframe.json", "rerender_long_video.json",
                     "rerender_video_sdxl.json"):
            workflow = json.loads((WORKFLOWS / name).read_text())
            for node in workflow["nodes"]:
                if node["type"] not in object_info:
                    continue
                widgets = [n for n, spec in comfy_run._ordered_inputs(object_info[node["type"]])
                           if comfy_run._is_widget(spec)]
                values = node["widgets_values"]
                extras = sum(1 for v in values if v in ("fixed", "image"))
                assert len(values) - extras <= len(widgets), (name, node["type"])

    def test_first_keyframe_workflow(self, object_info):
        prompt = load("rerender_first_keyframe.json", object_info)
        renderer = by_title(prompt, "Keyframe Renderer")["inputs"]
        assert renderer["first_keyframe_only"] is True and "flow" not in renderer
        assert by_title(prompt, "Save Anchor")["class_type"] == "SaveImage"

    def test_masked_workflow_carries_one_mask_into_the_propagation(self, object_info):
        prompt = load("rerender_masked.json", object_info)
        ids = {node["_meta"]["title"]: node_id for node_id, node in prompt.items()}
        carried = by_title(prompt, "Rerender Propagate Mask")
        assert carried["inputs"]["mask"] == [ids["First-frame mask"], 0]
        assert carried["inputs"]["flow"] == [ids["Rerender Estimate Flow"], 0]
        propagate = by_title(prompt, "Rerender EbSynth Propagate")["inputs"]
        assert propagate["mask"] == [ids["Rerender Propagate Mask"], 0]
        assert propagate["mask_grow"] == 8 and propagate["feather"] == 8
        box = by_title(prompt, "First-frame mask")["inputs"]
        assert (box["x"], box["y"], box["operation"]) == (55, 5, "add")

    def test_thumbnails_next_to_the_workflows(self):
        for name in ("rerender_video", "rerender_first_keyframe", "rerender_long_video", "rerender_masked",
                     "rerender_video_sdxl"):
            assert (WORKFLOWS / f"{name}.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


class TestSettingInputs:
    def test_set_by_title_and_shortcuts(self, object_info):
        prompt = load("rerender_video.json", object_info)
        comfy_run.set_input(prompt, *comfy_run.SHORTCUTS["prompt"], "a cat", object_info)
        comfy_run.set_input(prompt, "keyframe renderer", "steps", 4, object_info)
        assert by_title(prompt, "Positive Prompt")["inputs"]["text"] == "a cat"
        assert by_title(prompt, "Keyframe Renderer")["inputs"]["steps"] == 4

    def test_unknown_title_lists_the_titles(self, object_info):
        prompt = load("rerender_video.json", object_info)
        with pytest.raises(comfy_run.RunError, match="titles in this workflow: .*Keyframe Renderer"):
            comfy_run.set_input(prompt, "Sampler", "steps", 4, object_info)

    def test_unknown_input_lists_the_inputs(self, object_info):
        prompt = load("rerender_video.json", object_info)
        with pytest.raises(comfy_run.RunError, match="no input 'step'.*steps"):
            comfy_run.set_input(prompt, "Keyframe Renderer", "step", 4, object_info)

    def test_parse_assignment(self):
        assert comfy_run.parse_assignment("Load Video.frame_load_cap=12") == ("Load Video", "frame_load_cap", 12)
        assert comfy_run.parse_assignment("A.b.c=true") == ("A.b", "c", True)
        with pytest.raises(comfy_run.RunError, match="TITLE.INPUT=VALUE"):
            comfy_run.parse_assignment("steps=4")

    def test_unknown_node_type(self, object_info):
        workflow = {"nodes": [{"id": 1, "type": "SomePackNode", "mode": 0}], "links": []}
        with pytest.raises(comfy_run.RunError, match="unknown node type 'SomePackNode'"):
            comfy_run.ui_to_api(workflow, object_info)

    def test_server_not_reachable(self, tmp_path):
        from types import SimpleNamespace

        args = SimpleNamespace(server="127.0.0.1:1", workflow=WORKFLOWS / "rerender_video.json", video=[],
                               prompt=None, negative=None, checkpoint=None, controlnet=None, seed=None, set=[],
                               output_dir=None, export_api=None, dry_run=True, timeout=5)
        assert comfy_run.run(args) == comfy_run.EXIT_SERVER
