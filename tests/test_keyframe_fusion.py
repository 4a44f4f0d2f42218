"""Soft occlusion masks, shape- and pixel-aware latent fusion, and AdaIN (keyframe/fusion.py, adain.py).

Real content: a Megamind frame and latents made from it (colour + luma at 1/8 size); flows are exact
integer shifts so the warped results are known.
"""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rerender_video.common.errors import InputError
from rerender_video.keyframe.adain import adain, channel_stats
from rerender_video.keyframe.fusion import (check_latent_size, flat_region, fused_reference_image, gaussian_kernel,
                                            inpainting_validity, latent_flow, latent_validity, noise_rescale,
                                            pixel_fusion_step, shape_fusion, soft_occlusion, step_noise,
                                            warp_latent)


@pytest.fixture(scope="module")
def frame(megamind_path):
    """Megamind frame 40, centre 512×512 crop resized to 128×128, IMAGE [1,128,128,3]."""
    container = av.open(str(megamind_path))
    for index, decoded in enumerate(container.decode(video=0)):
        if index == 40:
            image = decoded.to_ndarray(format="rgb24")
            break
    container.close()
    image = cv2.resize(image[8:520, 104:616], (128, 128), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(image).float()[None] / 255


@pytest.fixture(scope="module")
def latent(frame):
    """A latent-like tensor [1,4,16,16] from the frame: RGB and luma at 1/8 size, centred."""
    small = F.avg_pool2d(frame.permute(0, 3, 1, 2), 8)
    return torch.cat([small, small.mean(1, keepdim=True)], 1) * 2 - 1


def shift_flow(height, width, dx, dy):
    flow = torch.zeros(1, height, width, 2)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


class TestSoftOcclusion:
    def test_matches_opencv_dilate_and_blur(self, frame):
        hard = (frame[0].mean(-1) > 0.6).float()  # a real, irregular mask (bright regions)
        assert 0.01 < hard.mean() < 0.5
        dilated = cv2.dilate(hard.numpy(), np.ones((9, 9), np.uint8))
        blurred = cv2.GaussianBlur(dilated, (9, 9), 18, borderType=cv2.BORDER_REFLECT_101)
        expected = np.clip(blurred + hard.numpy(), 0, 1)
        np.testing.assert_allclose(soft_occlusion(hard)[0, 0].numpy(), expected, atol=1e-5)

    def test_keeps_occluded_pixels_and_fades_over_8_pixels(self):
        hard = torch.zeros(64, 64)
        hard[:, :20] = 1
        soft = soft_occlusion(hard)[0, 0, 32]
        assert torch.all(soft[:20] == 1)
        assert torch.all(soft[20:28] > 0) and torch.all(soft[20:28].diff() <= 0)
        assert torch.all(soft[29:] == 0)

    def test_kernel_is_torchvisions(self):
        kernel = gaussian_kernel(9, 18.0)
        assert kernel.sum().item() == pytest.approx(1.0) and kernel.min().item() == pytest.approx(0.1095, abs=1e-4)


class TestLatentResolution:
    def test_flow_divided_and_point_sampled(self):
        ramp = torch.arange(32.0).view(1, 32).expand(32, 32)
        flow = torch.stack([ramp, torch.zeros(32, 32)], -1)
        small = latent_flow(flow)
        # bilinear ×1/8 without antialias samples between pixels 3 and 4 of each block: x = 3.5 + 8j
        assert small.shape == (1, 4, 4, 2)
        assert torch.allclose(small[0, 0, :, 0], (torch.arange(4) * 8 + 3.5) / 8)

    def test_validity_is_one_minus_maxpool(self):
        soft = torch.zeros(16, 24)
        soft[3, 3] = 0.7
        soft[9, 20] = 1.0
        valid = latent_validity(soft)[0, 0]
        assert valid.tolist() == [[0.30000001192092896, 1.0, 1.0], [1.0, 1.0, 0.0]]

    def test_sizes_not_multiple_of_8(self):
        with pytest.raises(InputError, match=r"frames: Expected a width and height that are multiples of 8.*"
                                             r"Got: 250×100"):
            check_latent_size(100, 250)
        with pytest.raises(InputError, match="flow"):
            latent_flow(torch.zeros(12, 16, 2))


class TestShapeFusion:
    def test_full_validity_returns_the_warped_anchor(self, latent):
        anchor = latent
        own = torch.flip(latent, [-1])  # this frame's x̂0: different content
        flow = latent_flow(shift_flow(128, 128, 16.0, 8.0))  # +2 cells right, +1 down
        warped = warp_latent(anchor, flow)
        assert torch.equal(warped[..., :-1, :-2], anchor[..., 1:, 2:])   # exact nearest warp
        assert torch.all(warped[..., -1:, :] == 0) and torch.all(warped[..., :, -2:] == 0)  # zero padding
        fused = shape_fusion(own, warped, torch.ones(1, 1, 16, 16))
        assert torch.equal(fused, warped)

    def test_zero_validity_is_the_identity(self, latent):
        warped = warp_latent(latent, latent_flow(shift_flow(128, 128, 8.0, 0.0)))
        assert torch.equal(shape_fusion(latent, warped, torch.zeros(1, 1, 16, 16)), latent)

    def test_occlusion_keeps_the_frame_where_unreliable(self, latent):
        occlusion = torch.zeros(128, 128)
        occlusion[:, 64:] = 1
        validity = latent_validity(soft_occlusion(occlusion))
        own = torch.flip(latent, [-1])
        fused = shape_fusion(own, latent, validity)
        assert torch.equal(fused[..., :7], latent[..., :7])   # far from the mask: the anchor
        assert torch.equal(fused[..., 8:], own[..., 8:])      # occluded cells: this frame's own x̂0
        assert 0 < validity[0, 0, 0, 7] < 0.2                 # the softened band: mostly own x̂0


class TestPixelFusion:
    def setup_method(self):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(1, 4, 16, 16, generator=generator)
        self.eps = torch.randn(1, 4, 16, 16, generator=generator)
        self.noise = torch.randn(1, 4, 16, 16, generator=generator)

    def test_outside_the_mask_noised_reference_inside_untouched(self, latent):
        occluded = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
        occluded[..., 4:10, 4:10] = True
        weight = (~occluded).float()  # mask_strength 1: w = V_p
        out = pixel_fusion_step(self.x, self.eps, 1.3, latent, weight, torch.ones_like(weight), 0.9, self.noise)
        noised = latent + 1.3 * self.noise
        torch.testing.assert_close(out[~occluded.expand_as(out)], noised[~occluded.expand_as(out)])
        torch.testing.assert_close(out[occluded.expand_as(out)], self.x[occluded.expand_as(out)])

    def test_soft_weight_formula(self, latent):
        weight = torch.full((1, 1, 16, 16), 0.5)
        boundary = torch.ones_like(weight)
        boundary[..., :8] = 0
        out = pixel_fusion_step(self.x, self.eps, 2.0, latent, weight, boundary, 0.9, self.noise)
        direction = 2.0 * self.eps
        flat_r = max(0.5, (1 - 0.25) ** 0.5 * 0.9)
        expected_flat = 0.5 * (latent + 2.0 * self.noise) + 0.5 * (self.x - direction) + flat_r * direction
        expected_edge = 0.5 * (latent + 2.0 * self.noise) + 0.5 * (self.x - direction) + 0.5 * direction
        torch.testing.assert_close(out[..., 8:], expected_flat[..., 8:])
        torch.testing.assert_close(out[..., :8], expected_edge[..., :8])

    def test_noise_rescale_values(self):
        assert noise_rescale(torch.tensor(0.5), torch.tensor(1.0), 0.9).item() == pytest.approx(0.7794, abs=1e-4)
        assert noise_rescale(torch.tensor(0.5), torch.tensor(0.0), 0.9).item() == pytest.approx(0.5)

    def test_step_noise_is_seeded_per_step(self):
        assert torch.equal(step_noise(3, 12, (1, 4, 8, 8)), step_noise(3, 12, (1, 4, 8, 8)))
        assert not torch.equal(step_noise(3, 12, (1, 4, 8, 8)), step_noise(3, 13, (1, 4, 8, 8)))


class TestFusedImage:
    def test_priorities_anchor_previous_rough(self, frame):
        rough = torch.zeros_like(frame)
        anchor, previous = frame, 1 - frame
        occ_anchor = torch.zeros(1, 1, 128, 128)
        occ_previous = torch.zeros(1, 1, 128, 128)
        occ_anchor[..., :64] = 1            # anchor unreliable on the left half
        occ_previous[..., :32] = 1          # previous unreliable on the left quarter
        fused = fused_reference_image(rough, anchor, occ_anchor, previous, occ_previous)
        assert torch.equal(fused[:, :, 64:], anchor[:, :, 64:])
        assert torch.equal(fused[:, :, 32:64], previous[:, :, 32:64])
        assert torch.equal(fused[:, :, :32], rough[:, :, :32])

    def test_inpainting_validity_needs_both_occluded(self):
        occ_anchor = torch.zeros(64, 64)
        occ_previous = torch.zeros(64, 64)
        occ_anchor[:, :40] = 1
        occ_previous[:, 24:] = 1
        pixel, latent_valid = inpainting_validity(occ_anchor, occ_previous)  # both occluded: columns 24–39
        assert pixel.shape == (1, 1, 64, 64) and latent_valid.shape == (1, 1, 8, 8)
        assert torch.all(pixel[..., 24:40] == 0) and torch.all(pixel[..., :15] == 1) and torch.all(pixel[..., 49:] == 1)
        row = latent_valid[0, 0, 0]
        assert row[[0, 1, 6, 7]].tolist() == [1.0] * 4 and row[[3, 4]].tolist() == [0.0, 0.0]
        assert torch.all((row[[2, 5]] > 0) & (row[[2, 5]] < 0.2))  # min-pool over the soft edge

    def test_flat_region_marks_mask_boundaries(self):
        valid = torch.ones(1, 1, 8, 8)
        valid[..., 3:5, 3:5] = 0
        rho = flat_region(valid)[0, 0]
        assert rho[0, 0] == 1 and rho[3, 3] == 0 and rho[2, 2] == 0 and rho[6, 6] == 1


class TestAdaIN:
    def test_matches_the_target_statistics_per_channel(self, latent):
        target = torch.roll(latent, 5, -1) * torch.tensor([1.5, 0.5, 2.0, 1.0]).view(1, 4, 1, 1) + 0.3
        mean, std = channel_stats(target)
        out = adain(latent, mean, std)
        out_mean = out.flatten(2).mean(-1)
        out_std = out.flatten(2).std(-1, unbiased=True)
        torch.testing.assert_close(out_mean, mean.flatten(1), atol=1e-5, rtol=0)
        torch.testing.assert_close(out_std, std.flatten(1), atol=2e-3, rtol=0)  # biased IN vs unbiased target
        # per-channel structure is kept: correlation with the input stays 1
        for c in range(4):
            assert np.corrcoef(out[0, c].flatten(), latent[0, c].flatten())[0, 1] > 0.9999

    def test_scale_space_invariance(self, latent):
        target = latent.flip(-1) + 0.2
        raw = adain(latent, *channel_stats(target))
        scaled = adain(latent * 0.18215, *channel_stats(target * 0.18215))
        torch.testing.assert_close(scaled, raw * 0.18215, atol=1e-5, rtol=1e-5)
