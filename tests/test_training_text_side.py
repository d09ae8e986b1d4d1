"""The text side of training: multi-positive loss, positive groups, caption rewordings, extra
positive texts; and the image tower cut into a cached front and a tail that learns."""

from __future__ import annotations

import numpy as np
import torch

from radsearch.training.captions import caption_variants, positive_groups
from radsearch.training.data import PairData
from radsearch.training.manifest import Pair
from radsearch.training.model import contrastive_loss


def _pair(text: str, group: str | None, source: str = "m") -> Pair:
    return Pair(image=None, text=text, split="train", group=group, source=source)


def test_multi_positive_loss_spreads_the_target_over_positives():
    images = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0]]), dim=1)
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.95, 0.15], [0.1, 1.0]]), dim=1)
    scale = torch.tensor(10.0)
    # The diagonal alone is plain InfoNCE.
    assert torch.allclose(contrastive_loss(images, texts, scale, torch.eye(3, dtype=torch.bool)),
                          contrastive_loss(images, texts, scale))
    positives = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    logits = scale * images @ texts.T
    targets = positives.float() / positives.float().sum(1, keepdim=True)
    expected = (-(targets * logits.log_softmax(1)).sum(1).mean()
                - (targets.T * logits.T.log_softmax(1)).sum(1).mean()) / 2
    assert torch.allclose(contrastive_loss(images, texts, scale, positives), expected)
    # Two pairs of one case: plain InfoNCE prefers them apart, multi-positive together.
    apart = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), dim=1)
    together = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scale = torch.tensor(20.0)
    assert contrastive_loss(apart, apart, scale) < contrastive_loss(together, together, scale)
    assert (contrastive_loss(together, together, scale, positives)
            < contrastive_loss(apart, apart, scale, positives))


def test_positive_groups_join_one_case_s_near_identical_captions_and_equal_texts():
    pairs = [
        _pair("Large left pleural effusion with compressive atelectasis.", "case1"),
        _pair("Large left pleural effusion with compressive atelectasis (arrow).", "case1"),
        _pair("Axial CT of the liver.", "case1"),  # same case, another caption
        _pair("large LEFT pleural effusion, with compressive atelectasis", "case2"),  # same words
        _pair("Large left pleural effusion with compressive atelectasis (arrow).", "case3", "other"),
        _pair("Ring-enhancing lesion.", None),
    ]
    groups = positive_groups(pairs)
    assert groups[0] == groups[1] == groups[3] == groups[4]
    assert len({groups[0], groups[2], groups[5]}) == 3


def test_caption_variants_reword_without_changing_a_sentence():
    assert caption_variants("One sentence only, no effusion.") == []
    text = "There is no pleural effusion. A mass in the right upper lobe. Heart size normal."
    variants = caption_variants(text)
    assert "There is no pleural effusion." in variants  # a negation stays whole
    assert "A mass in the right upper lobe." in variants
    assert "There is no pleural effusion. Heart size normal." in variants or len(variants) == 4
    assert text not in variants and len(variants) <= 4
    assert all(v in text or all(s in text for s in v.split(". ")) for v in variants)


def test_text_options_are_drawn_in_training_and_captions_kept_in_evaluation():
    data = PairData(
        texts=["a", "b", "c"],
        image_features=np.zeros((1, 3, 2), dtype=np.float32),
        text_features=np.array([[1, 0], [2, 0], [3, 0]], dtype=np.float32),
        options=[["a1", "a2"], [], ["c1"]],
        option_features=[np.array([[11, 0], [12, 0]], np.float32), np.zeros((0, 2), np.float32),
                         np.array([[31, 0]], np.float32)],
        positive_groups=np.array([0, 0, 1]),
    )
    indices = np.array([0, 1, 2])
    features, strings = data.text_inputs(indices, "cpu")
    assert strings == ["a", "b", "c"] and features[:, 0].tolist() == [1, 2, 3]
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        features, strings = data.text_inputs(indices, "cpu", generator)
        # Features always follow the strings shown.
        lookup = {"a": 1, "a1": 11, "a2": 12, "b": 2, "c": 3, "c1": 31}
        assert features[:, 0].tolist() == [lookup[s] for s in strings]
        assert strings[1] == "b"  # no options: always its caption
        seen.update(strings)
    assert {"a", "a1", "a2", "c", "c1"} <= seen
    positives = data.positives(indices, ["a1", "b", "a1"])
    # Pairs 0 and 1 share a group; pairs 0 and 2 show the same text.
    assert positives.tolist() == [[True, True, True], [True, True, False], [True, False, True]]


def test_image_trunk_and_tail_give_the_whole_tower():
    from radsearch.training.towers import build_image_tower

    tower = build_image_tower("cpu", 1)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 224, 224), dtype=np.uint8))
    with torch.inference_mode():
        whole = tower(pixels)
        trunk = tower.trunk(1)
        activations = trunk(pixels)
        assert activations.shape == (2, 192, 7, 7)
        assert torch.allclose(tower(activations), whole, atol=1e-5)
    # Only the last stage and the head learn; the trunk holds none of them.
    learning = {name for name, p in tower.named_parameters() if p.requires_grad}
    assert learning and all(n.split(".")[1] in ("blocks", "conv_head", "bn2") for n in learning)
    assert not any(p.requires_grad for p in trunk.parameters())
