"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`): CLIP tower with [CLS], anyres images laid out
and pruned as `anyres` describes."""

from __future__ import annotations

from tokenprune.adapters.transformers.anyres import AnyresAdapter


class LlavaNextAdapter(AnyresAdapter):
    def _encode_images(self, module, kwargs):
        return module.get_image_features(
            pixel_values=kwargs["pixel_values"], image_sizes=self._image_sizes(kwargs)
        )
