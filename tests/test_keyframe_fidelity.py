"""Fidelity-oriented encoding E* (keyframe/fidelity.py, paper Eqs. 8–9) on a real lossy autoencoder.

The autoencoder (8× down-sampling to 4 channels, like SD's VAE) is trained in a fixture on crops of
real frames (Megamind and the basketball pair) for 600 steps on one CPU thread (about 10 s), then
E* is compared with plain encoding over repeated encode–decode rounds on held-out frames.
"""

from __future__ import annotations

import av
import cv2
import pytest
import torch
import torch.nn as nn

from rerender_video.common.errors import InputError
from rerender_video.keyframe.fidelity import compensation_mask, fidelity_encode

TRAIN_FRAMES = (12, 20, 28, 36, 44, 52, 60, 68, 76, 84, 90)
TEST_FRAMES = (48, 80)
ROUNDS = 5


def _half(image):
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _tensor(image):
    return torch.from_numpy(image).float().permute(2, 0, 1) / 255


@pytest.fixture(scope="module")
def images(megamind_path):
    wanted = set(TRAIN_FRAMES) | set(TEST_FRAMES)
    frames = {}
    container = av.open(str(megamind_path))
    for index, frame in enumerate(container.decode(video=0)):
        if index in wanted:
            frames[index] = frame.to_ndarray(format="rgb24")
        if index >= max(wanted):
            break
    container.close()
    data = megamind_path.parent
    basketball = [cv2.cvtColor(cv2.imread(str(data / f"basketball{k}.png")), cv2.COLOR_BGR2RGB) for k in (1, 2)]
    train = [_tensor(_half(frames[i])) for i in TRAIN_FRAMES] + [_tensor(_half(basketball[0]))]
    held_out = [_tensor(_half(frames[i])) for i in TEST_FRAMES] + [_tensor(_half(basketball[1]))]
    test = torch.stack([image[:, 40:168, 60:188] for image in held_out]).permute(0, 2, 3, 1).contiguous()
    return train, test


class TinyAutoencoder(nn.Module):
    """Three stride-2 convolutions to a 4-channel latent at 1/8 size, and back."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = channels
        self.enc = nn.Sequential(nn.Conv2d(3, c, 4, 2, 1), nn.SiLU(), nn.Conv2d(c, c, 4, 2, 1), nn.SiLU(),
                                 nn.Conv2d(c, c, 4, 2, 1), nn.SiLU(), nn.Conv2d(c, 4, 1))
        up = []
        for _ in range(3):
            up += [nn.Conv2d(c, c, 3, 1, 1), nn.SiLU(), nn.Upsample(scale_factor=2)]
        self.dec = nn.Sequential(nn.Conv2d(4, c, 3, 1, 1), nn.SiLU(), *up, nn.Conv2d(c, 3, 3, 1, 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.enc(images.permute(0, 3, 1, 2) * 2 - 1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return ((self.dec(latent) + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def autoencoder(images):
    train, _ = images
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and, on a shared 2-core machine, faster than 2 threads
    try:
        torch.manual_seed(0)
        model = TinyAutoencoder()
        optimizer = torch.optim.Adam(model.parameters(), 2e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(600):
            crops = []
            for _ in range(8):
                image = train[int(torch.randint(len(train), (1,), generator=generator))]
                y = int(torch.randint(image.shape[1] - 32, (1,), generator=generator))
                x = int(torch.randint(image.shape[2] - 32, (1,), generator=generator))
                crops.append(image[:, y:y + 32, x:x + 32])
            batch = torch.stack(crops) * 2 - 1
            loss = (model.dec(model.enc(batch)) - batch).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _rounds(images, step):
    current, errors = images, []
    for _ in range(ROUNDS):
        current = step(current)
        errors.append((current - images).abs().mean().item())
    return errors


class TestOnARealAutoencoder:
    def test_estar_drifts_less_than_plain_encoding(self, autoencoder, images):
        _, test = images
        with torch.no_grad():
            plain = _rounds(test, lambda im: autoencoder.decode(autoencoder.encode(im)))
            estar = _rounds(test, lambda im: autoencoder.decode(
                fidelity_encode(im, autoencoder.encode, autoencoder.decode).latent))
        print(f"\nmean |I_k - I_0| over {ROUNDS} encode-decode rounds (IMAGE units), held-out frames:")
        print("  plain E: " + ", ".join(f"{e:.4f}" for e in plain))
        print("  E*     : " + ", ".join(f"{e:.4f}" for e in estar))
        assert estar[-1] < plain[-1]
        assert estar[0] < plain[0]  # already after one round

    def test_strength_zero_is_plain_encoding(self, autoencoder, images):
        _, test = images
        with torch.no_grad():
            result = fidelity_encode(test, autoencoder.encode, autoencoder.decode, strength=0.0)
            assert torch.equal(result.latent, autoencoder.encode(test))

    def test_mask_keeps_compensation_only_where_it_decodes_cleanly(self, autoencoder, images):
        _, test = images
        with torch.no_grad():
            result = fidelity_encode(test, autoencoder.encode, autoencoder.decode)
            strict = fidelity_encode(test, autoencoder.encode, autoencoder.decode, threshold=0.02)
        assert result.latent.shape == result.plain.shape == (3, 4, 16, 16)
        assert result.keep.shape == (3, 1, 16, 16) and result.keep_pixels().shape == (3, 128, 128)
        assert 0.5 < result.keep.mean() <= 1.0
        assert strict.keep.mean() < result.keep.mean()  # a lower threshold refuses more cells
        dropped = result.keep == 0
        assert torch.equal(result.latent[dropped.expand_as(result.latent)],
                           result.plain[dropped.expand_as(result.plain)])


class TestMask:
    def test_artefact_cells_and_their_neighbours_fall_back(self):
        clean = torch.full((1, 64, 64, 3), 0.5)
        decoded = clean.clone()
        decoded[:, 27:29, 43:45] = 0.7   # mean error 0.2 in IMAGE units = 0.4 in [-1,1] > 0.25
        keep, error = compensation_mask(decoded, clean)
        assert error.max().item() == pytest.approx(0.4, abs=1e-6)
        dropped = (keep[0, 0] == 0).nonzero().tolist()
        assert dropped == [[r, c] for r in (2, 3, 4) for c in (4, 5, 6)]  # cell (3, 5) dilated 3×3

    def test_small_errors_keep_everything(self):
        clean = torch.full((1, 16, 16, 3), 0.5)
        keep, _ = compensation_mask(clean + 0.06, clean)  # 0.12 in [-1,1] units < 0.25
        assert torch.all(keep == 1)

    def test_bad_inputs(self):
        encode = decode = lambda x: x  # noqa: E731
        with pytest.raises(InputError, match="images: Expected a width and height that are multiples of 8"):
            fidelity_encode(torch.zeros(1, 20, 16, 3), encode, decode)
        with pytest.raises(InputError, match="strength"):
            fidelity_encode(torch.zeros(1, 16, 16, 3), encode, decode, strength=-1)
