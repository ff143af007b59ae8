"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): SigLIP tower without [CLS], anyres
images, multi-image prompts and video.

Images are laid out as in LLaVA-NeXT (see `anyres`), except that a crop canvas larger than
`anyres_max_N` crops' worth of tokens is bilinearly downsampled, and images of a prompt with
several images get the base view only (s x s tokens and one newline). Vision-tower scores (mean
attention received, recomputed from q/k) go through the same downsampling as the features.

A video is one group: F frames of p x p tokens (the tower's s x s grid pooled by the model to
p = ceil(s / 2)), then one newline token, which is always kept. The budget is per video; `grid` is
(F, p, p) and `kept_indices` are flat indices into it. `SplitByArea` makes it a per-frame budget.
"""

from __future__ import annotations

import math

import torch

from tokenprune.adapters.transformers.anyres import (
    AUX,
    AnyresAdapter,
    Media,
    same_tokens,
    with_channel,
    without_attention_channel,
)


class LlavaOnevisionAdapter(AnyresAdapter):
    video_input = "pixel_values_videos"

    def _encode_images(self, module, kwargs):
        return module.get_image_features(
            pixel_values=kwargs["pixel_values"],
            image_sizes=self._image_sizes(kwargs),
            vision_aspect_ratio=kwargs.get("vision_aspect_ratio"),
            batch_num_images=kwargs.get("batch_num_images"),
        )

    def _encode_videos(self, module, kwargs):
        return module.get_video_features(kwargs[self.video_input])

    def _resized(self, kept: tuple[int, int]) -> tuple[int, int]:
        # LlavaOnevisionModel.pack_image_features: shrink to about anyres_max_N crops' worth of tokens
        max_crops = int(self.model.config.vision_aspect_ratio.removeprefix("anyres_max_"))
        ratio = math.sqrt(kept[0] * kept[1] / (max_crops * self.side**2))
        return (int(kept[0] // ratio), int(kept[1] // ratio)) if ratio > 1.1 else kept

    def _encode(self, module, kwargs) -> dict:
        ratio, configured = kwargs.get("vision_aspect_ratio"), self.model.config.vision_aspect_ratio
        if ratio is not None and ratio != configured:
            raise ValueError(
                f"tokenprune prunes with the config's vision_aspect_ratio ({configured!r}), got {ratio!r}"
            )
        return super()._encode(module, kwargs)

    def _video_media(self, module, features: torch.Tensor, capture: dict | None) -> list[Media]:
        side = math.ceil(self.side / 2)  # LlavaOnevisionModel.apply_pooling halves each side
        videos, length = features.shape[:2]
        frames, rest = divmod(length - 1, side * side)
        newline = torch.zeros(length, dtype=torch.bool, device=features.device)
        newline[-1] = True
        if rest or not bool((self._newlines(features) == newline).all()):
            raise ValueError(f"video features of length {length} do not have the layout tokenprune knows")
        aux: dict = {}
        if capture is not None:
            pooled = module.apply_pooling(capture["projected"])
            if not same_tokens(pooled.reshape(videos, frames * side * side, -1), features[:, :-1]):
                raise ValueError("the captured vision-tower run does not match the video features")
            aux = {
                name: module.apply_pooling(with_channel(capture[name]).float()).reshape(
                    videos, frames * side * side, -1
                )
                for name in AUX
                if name in capture
            }
        return [
            Media(
                self.model.config.video_token_id,
                newline,
                (frames, side, side),
                ((side, side),) * frames,
                features[v],
                without_attention_channel({name: value[v] for name, value in aux.items()}),
            )
            for v in range(videos)
        ]
