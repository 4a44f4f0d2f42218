"""Settings declared once (common/settings.py): node widgets and CLI options agree with the algorithm's
defaults, the generated options behave like the widgets, and saved workflows keep their widget order."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest

from rerender_video.cli import build_parser
from rerender_video.cli._options import add_options
from rerender_video.cli.comfy_run import _is_widget, _ordered_inputs, ui_to_api
from rerender_video.common.errors import InputError
from rerender_video.common.settings import declare, field_values, settings_of
from rerender_video.flow import settings as flow_settings
from rerender_video.keyframe.settings import ConstraintSettings
from rerender_video.propagation import settings as propagation_settings
from rerender_video.propagation.guides import GuideWeights
from rerender_video.propagation.params import SynthesisParams

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


@pytest.fixture(scope="module")
def nodes():
    import rerender_video.nodes as nodes

    return nodes.NODE_CLASS_MAPPINGS


def widgets_of(node_class) -> dict:
    spec = node_class.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}


def dataclass_defaults(cls) -> dict:
    """Input name → default, read from the dataclass itself (windows: their two ends)."""
    instance = cls()
    found = {}
    for name, one in settings_of(cls).items():
        if one.field is not None:
            found[name] = getattr(instance, one.field)
    for item in fields(cls):
        value = getattr(instance, item.name)
        if item.name.endswith("_period"):
            stem = item.name[: -len("_period")]
            found[f"{stem}_start"], found[f"{stem}_end"] = value.start, value.end
    return found


class TestNodeWidgets:
    @pytest.mark.parametrize("node_id, classes", [
        ("RerenderEbSynthPropagate", (SynthesisParams, GuideWeights)),
        ("RerenderCrossFrameSampler", (ConstraintSettings,)),
        ("RerenderKeyframeRenderer", (ConstraintSettings,)),
    ])
    def test_widget_defaults_are_the_dataclass_defaults(self, nodes, node_id, classes):
        shown = widgets_of(nodes[node_id])
        expected = {name: value for cls in classes for name, value in dataclass_defaults(cls).items()}
        assert {name: shown[name][1]["default"] for name in expected} == expected

    def test_widget_ranges_and_tooltips_are_the_declarations(self, nodes):
        declared = {**settings_of(SynthesisParams), **settings_of(GuideWeights), **settings_of(ConstraintSettings)}
        for node_id in ("RerenderEbSynthPropagate", "RerenderCrossFrameSampler", "RerenderKeyframeRenderer"):
            for name, (kind, options) in widgets_of(nodes[node_id]).items():
                if name in declared:
                    one = declared[name]
                    assert options["tooltip"] == one.tooltip, (node_id, name)
                    assert (options.get("min"), options.get("max"), options.get("step")) == (one.min, one.max,
                                                                                             one.step), name
                    assert kind == (list(one.choices) if one.choices else one.kind), name

    def test_both_keyframe_nodes_show_the_same_constraint_and_sampling_widgets(self, nodes):
        sampler = widgets_of(nodes["RerenderCrossFrameSampler"])
        renderer = widgets_of(nodes["RerenderKeyframeRenderer"])
        names = [*settings_of(ConstraintSettings), "steps", "cfg", "sampler_name", "scheduler", "denoise"]
        assert {name: sampler[name] for name in names} == {name: renderer[name] for name in names}

    def test_widget_defaults_build_the_default_settings(self, nodes):
        shown = widgets_of(nodes["RerenderKeyframeRenderer"])
        values = {name: options.get("default") for name, (_, options) in shown.items()}
        assert ConstraintSettings.from_inputs(values) == ConstraintSettings()
        propagate = {name: options.get("default") for name, (_, options) in
                     widgets_of(nodes["RerenderEbSynthPropagate"]).items()}
        assert SynthesisParams(**field_values(SynthesisParams, propagate)) == SynthesisParams()
        assert GuideWeights(**field_values(GuideWeights, propagate)) == GuideWeights()

    def test_flow_and_blend_widgets_are_the_declarations(self, nodes):
        flow = widgets_of(nodes["RerenderEstimateFlow"])
        for one in (flow_settings.BACKEND, flow_settings.DIS_PRESET, flow_settings.PAIR_MODE,
                    flow_settings.OCCLUSION_ALPHA, flow_settings.OCCLUSION_BETA):
            assert flow[one.name][1]["default"] == one.default and flow[one.name][1]["tooltip"] == one.tooltip
        blend = widgets_of(nodes["RerenderTemporalBlend"])
        assert [blend[one.name][1]["default"] for one in propagation_settings.BLEND] == [True, False, 2.5, 0.5]


class TestCommandLine:
    def parse(self, *argv):
        return build_parser().parse_args(list(argv))

    def test_propagate_defaults_are_the_dataclass_defaults(self):
        args = vars(self.parse("propagate", "video.mp4", "keys"))
        assert SynthesisParams(**field_values(SynthesisParams, args)) == SynthesisParams()
        assert GuideWeights(**field_values(GuideWeights, args)) == GuideWeights()
        for one in (*propagation_settings.PROPAGATE, *propagation_settings.BLEND,
                    propagation_settings.KEYFRAME_FILE_INTERVAL):
            assert args[one.name] == one.default, one.name
        assert args["dis_preset"] == flow_settings.DIS_PRESET.default

    def test_propagate_keeps_its_option_strings(self):
        args = self.parse("propagate", "v.mp4", "keys", "--seed", "3", "--no-temporal-nnf-init", "--no-histogram",
                          "--poisson", "--interval", "5", "--flow-preset", "fast", "--extra-pass-3x3",
                          "--colour-weight", "4", "--poisson-luma-weight", "1.5")
        assert (args.patchmatch_seed, args.temporal_nnf_init, args.histogram_blend, args.poisson_blend) == \
            (3, False, False, True)
        assert (args.keyframe_interval, args.dis_preset, args.extra_pass_3x3) == (5, "fast", True)
        assert GuideWeights(**field_values(GuideWeights, vars(args))).colour == 4.0
        assert args.poisson_luma_weight == 1.5

    def test_flow_defaults_are_the_declarations(self):
        args = vars(self.parse("flow", "video.mp4"))
        for one in (flow_settings.BACKEND, flow_settings.DIS_PRESET, flow_settings.PAIR_MODE,
                    flow_settings.OCCLUSION_ALPHA, flow_settings.OCCLUSION_BETA):
            assert args[one.name] == one.default, one.name
        assert self.parse("flow", "v.mp4", "--alpha", "0.05", "--preset", "fast").occlusion_alpha == 0.05

    def test_out_of_range_is_refused_naming_the_option(self, capsys):
        with pytest.raises(SystemExit):
            self.parse("propagate", "v.mp4", "keys", "--patch-size", "17")
        assert "argument --patch-size: expected a value in [3, 15], got 17" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            self.parse("propagate", "v.mp4", "keys", "--uniformity", "lots")
        assert "argument --uniformity: expected a number, got 'lots'" in capsys.readouterr().err

    def test_every_generated_option_has_the_setting_name_as_dest(self):
        parser = argparse.ArgumentParser()
        add_options(parser, [declare("temporal_nnf_init", True, "On."), declare("extra", False, "Off."),
                             declare("mode", "a", "Which.", choices=("a", "b"))])
        dests = {action.option_strings[0]: action.dest for action in parser._actions if action.option_strings}
        assert dests == {"-h": "help", "--no-temporal-nnf-init": "temporal_nnf_init", "--extra": "extra",
                         "--mode": "mode"}


class TestValidation:
    def test_constraint_values_are_checked_against_their_declarations(self):
        with pytest.raises(InputError, match=r"inner_strength: Expected a value in \[0.5, 1\], Got: 0.2"):
            ConstraintSettings(inner_strength=0.2)
        with pytest.raises(InputError, match="mask_end: Expected a fraction"):
            ConstraintSettings.from_inputs({"mask_start": 0.5, "mask_end": 1.5})

    def test_a_combo_default_must_be_a_choice(self):
        with pytest.raises(ValueError, match="default 'c' is not one of"):
            declare("mode", "c", "Which.", choices=("a", "b"))


# --------------------------------------------------------------------------- saved workflows
#: Widget names of each pack node in saved-workflow order, as the shipped workflows store them. A widget
#: may be appended; any other change shifts the values of every workflow saved before it.
SAVED_WIDGET_ORDER = {
    "RerenderEbSynthPropagate": [
        "keyframe_interval", "keyframe_indices", "direction", "patch_size", "search_vote_iters", "patchmatch_iters",
        "uniformity", "pyramid_levels", "extra_pass_3x3", "patchmatch_seed", "colour_weight", "edge_weight",
        "positional_weight", "temporal_weight", "temporal_nnf_init", "backend"],
    "RerenderKeyframeRenderer": [
        "keyframe_interval", "keyframe_indices", "first_keyframe_only", "seed", "steps", "cfg", "sampler_name",
        "scheduler", "denoise", "free_model_after", "use_cache", "cross_start", "cross_end", "warp_start",
        "warp_end", "mask_start", "mask_end", "ada_start", "ada_end", "mask_strength", "inner_strength",
        "smooth_boundary", "loose_cfattn", "style_update_freq", "pixel_fusion", "rough_render"],
    "RerenderCrossFrameSampler": [
        "frame_index", "seed", "steps", "cfg", "sampler_name", "scheduler", "denoise", "cross_start", "cross_end",
        "warp_start", "warp_end", "mask_start", "mask_end", "ada_start", "ada_end", "mask_strength",
        "inner_strength", "smooth_boundary", "loose_cfattn", "style_update_freq", "pixel_fusion", "anchor_index",
        "previous_index", "resume_pass2", "rough_render"],
    "RerenderEstimateFlow": ["backend", "dis_preset", "raft_model", "pair_mode", "keyframe_interval",
                             "keyframe_indices", "occlusion_alpha", "occlusion_beta"],
    "RerenderTemporalBlend": ["histogram_blend", "poisson_blend", "poisson_luma_weight", "poisson_chroma_weight"],
    "RerenderLoadKeyframes": ["folder", "keyframe_interval"],
    "RerenderKeyframeSelection": ["mode", "keyframe_interval", "keyframe_indices", "cut_threshold"],
    "RerenderFidelityEncode": ["strength", "threshold"],
}


@pytest.fixture(scope="module")
def object_info(nodes):
    info = {}
    for node_id, node_class in nodes.items():
        spec = json.loads(json.dumps(node_class.INPUT_TYPES(), default=str))
        info[node_id] = {"input": spec, "input_order": {section: list(spec.get(section, {}))
                                                        for section in ("required", "optional")}}
    return info


def _valid(value, spec) -> bool:
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list):
        return value in kind or options.get("default") is None  # a model-file combo lists this machine's files
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
        return False
    return options.get("min", value) <= value <= options.get("max", value)


class TestSavedWorkflows:
    def test_widget_order_is_unchanged(self, object_info):
        for node_id, saved in SAVED_WIDGET_ORDER.items():
            current = [name for name, spec in _ordered_inputs(object_info[node_id]) if _is_widget(spec)]
            assert current[:len(saved)] == saved, node_id

    @pytest.mark.parametrize("name", sorted(path.name for path in WORKFLOWS.glob("*.json")))
    def test_saved_values_land_on_widgets_that_accept_them(self, object_info, name):
        workflow = json.loads((WORKFLOWS / name).read_text())
        known = {node_id: info for node_id, info in object_info.items()}
        pack_nodes = [node for node in workflow["nodes"] if node["type"] in known]
        assert pack_nodes
        subset = {"nodes": pack_nodes, "links": []}
        prompt = ui_to_api(subset, known)
        for node in pack_nodes:
            inputs = prompt[str(node["id"])]["inputs"]
            specs = dict(_ordered_inputs(known[node["type"]]))
            stored = [value for value in node["widgets_values"] if value not in ("fixed", "image")]
            assert len([n for n in inputs if _is_widget(specs[n])]) >= len(stored), node["type"]
            for widget_name, value in inputs.items():
                if _is_widget(specs[widget_name]):
                    assert _valid(value, specs[widget_name]), (name, node["type"], widget_name, value)
