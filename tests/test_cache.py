"""Cache keys (common.cache.content_key): content, not text, decides the key — also inside dicts."""

from __future__ import annotations

import hashlib
import json

import torch

from rerender_video.common.cache import content_key


def test_tensors_inside_a_dict_are_hashed_by_content():
    # torch abbreviates the text of large tensors: these two print the same but differ in the middle
    first = torch.zeros(2000)
    second = first.clone()
    second[1000] = 1.0
    assert str(first) == str(second)
    assert content_key({"hint": first}) != content_key({"hint": second})
    assert content_key({"hint": first, "strength": 0.7}) == content_key({"strength": 0.7, "hint": first.clone()})
    assert content_key({"nested": [{"hint": first}]}) != content_key({"nested": [{"hint": second}]})


def test_plain_dicts_keep_their_json_key():
    # entries written before dicts could hold tensors keep their keys
    settings = {"preset": "medium", "alpha": 0.01}
    expected = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).hexdigest()
    assert content_key(settings) == expected
