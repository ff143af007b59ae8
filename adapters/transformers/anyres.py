"""Anyres images, as LLaVA-NeXT and LLaVA-OneVision lay them out, and the adapter both families share.

An anyres image reaches the language model as one run of placeholders: the base view (the whole
image at the tower's resolution, s x s tokens, row-major), then the high-resolution crops stitched
into one canvas and unpadded to the image's aspect ratio (h x w tokens, row-major), with an
`image_newline` token after every canvas row. tokenprune prunes each image as one group:

- candidates are the base and canvas tokens; newline tokens are never dropped;
- `kept_indices` index the image's own token order, base view then canvas, newlines excluded;
  `grid` is (s, s) for an image with a base view only, else (1, N): that order as one row.
  `tokenprune.pruners.views.SplitByArea` splits the budget between the two views instead;
- vision-tower scores (VisionZip, FoPru) are computed per crop and laid out as the model laid out
  the features: the adapter finds each image's crops and canvas layout by reproducing its packed
  features from the projected crops, then lays out the scores the same way.

Images that `generate()` encodes before prefill (`mm_encoder_outputs`) are handled the same way:
the layout is read from the features, not from `image_sizes`, which generate() does not pass on.

In-tower pruning runs on the tower's batch of crops (base view and crops of every image), each crop
pruned to the same count. A hook on the projector scatters each crop's surviving tokens back to
their patches (zeros elsewhere), so the model packs, unpads and adds newlines as usual; the crops'
survivor masks are laid out like the scores above, and the pre-LLM step drops the pruned positions
(newlines are kept). Survivors the model's unpadding cuts away never reach the language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tokenprune.adapters.transformers import compat
from tokenprune.adapters.transformers.base import SelectionLog, drop_unselected, text_rows
from tokenprune.adapters.transformers.decoder import TokenGroups
from tokenprune.adapters.transformers.multimodal import MultimodalAdapter
from tokenprune.adapters.transformers.sequence import pack
from tokenprune.adapters.transformers.tower import TowerEngine
from tokenprune.adapters.transformers.vision import (
    cls_attention_hook,
    feature_layer_index,
    mean_attention_hook,
)
from tokenprune.pruners.base import VISION_NEEDS
from tokenprune.pruners.views import ViewTokens

AUX = ("attention", "keys", "pre_projection")
# per crop and in-tower step, which patches survived it: laid out like the scores
SURVIVORS = "survivors"
# feature channels compared when matching encoded crops to an image's features
LAYOUT_CHANNELS = 8


def same_tokens(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same tokens, compared on their first LAYOUT_CHANNELS channels: a wrong crop or canvas layout
    moves tokens, which changes every channel, so a few identify the layout at a fraction of the cost."""
    a, b = a[..., :LAYOUT_CHANNELS], b[..., :LAYOUT_CHANNELS]
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-5)


def scatter_patches(value: torch.Tensor, origins: torch.Tensor, patches: int) -> torch.Tensor:
    """Per-crop values of the survivors (c, K, ...) at their patch indices `origins` (c, K) among
    `patches`, zeros elsewhere: (c, patches, ...)."""
    out = value.new_zeros(value.shape[0], patches, *value.shape[2:])
    index = origins.to(value.device).view(*origins.shape, *([1] * (value.dim() - 2)))
    return out.scatter(1, index.expand_as(value), value)


def with_channel(value: torch.Tensor) -> torch.Tensor:
    """Per-token scores (c, N) as (c, N, 1), so that they are stitched and pooled like features."""
    return value[..., None] if value.dim() == 2 else value


def stitch(
    crops: torch.Tensor, crop_grid: tuple[int, int], side: int, kept: tuple[int, int], out: tuple[int, int]
):
    """Per-crop tokens (c, side*side, C) as the model lays out an anyres canvas: crops in a
    crop_grid (rows, cols), unpadded symmetrically to `kept` (h, w), resized bilinearly to `out`
    when smaller. Returns (out_h * out_w, C), row-major."""
    rows, cols = crop_grid
    channels = crops.shape[-1]
    canvas = crops.reshape(rows, cols, side, side, channels).permute(4, 0, 2, 1, 3)
    canvas = canvas.reshape(channels, rows * side, cols * side)
    top, left = (rows * side - kept[0]) // 2, (cols * side - kept[1]) // 2
    canvas = canvas[:, top : top + kept[0], left : left + kept[1]]
    if tuple(kept) != tuple(out):
        canvas = nn.functional.interpolate(canvas[None], list(out), mode="bilinear")[0]
    return canvas.flatten(1).T


@dataclass
class Media:
    """One image or video as placed in the prompt. newline: (L,) which of its L placeholders are
    newline tokens; features: (L, D) what the model puts there; aux: per candidate token (newlines
    removed) vision-tower "attention" (N,), "keys" (N, d), "pre_projection" (N, D_vision). tower:
    per in-tower step, (tower block, (N,) which tokens survived it, seconds)."""

    token_id: int
    newline: torch.Tensor
    grid: tuple[int, ...]
    views: tuple[tuple[int, ...], ...]
    features: torch.Tensor
    aux: dict
    tower: tuple[tuple[int, torch.Tensor, float], ...] = ()

    @property
    def count(self) -> int:
        return int((~self.newline).sum())


def without_attention_channel(aux: dict) -> dict:
    """Undoes `with_channel` on the "attention" scores once they are laid out."""
    return {name: value[:, 0] if name == "attention" else value for name, value in aux.items()}


class AnyresAdapter(MultimodalAdapter):
    """Shared by LLaVA-NeXT and LLaVA-OneVision: encoding and selection in a forward pre-hook on the
    multimodal model (which then receives `inputs_embeds`, or the encodings as `mm_encoder_outputs`),
    in-LLM selection through the LayerPruningEngine on the text model."""

    supported_stages = ("in_tower", "pre_llm", "llm")
    video_input: str | None = None  # the video pixel input, for families that take video

    def __init__(self, model, pruner, stats) -> None:
        super().__init__(model, pruner, stats)
        config = model.config
        strategy = config.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ValueError(f"unsupported vision_feature_select_strategy {strategy!r}")
        # "default" drops the tower's [CLS] token (CLIP): score by [CLS] attention; "full" keeps every
        # token (SigLIP has no [CLS]): score by mean attention received.
        self.has_cls = strategy == "default"
        self.side = config.vision_config.image_size // config.vision_config.patch_size
        self._captures: list[dict] = []
        self.tower = self._tower_engine(pruner.at("in_tower"))

    def _tower_engine(self, pruner) -> TowerEngine | None:
        if pruner is None:
            return None
        tower = self.vlm.vision_tower
        vision_model = getattr(tower, "vision_model", tower)
        blocks = vision_model.encoder.layers
        depth = feature_layer_index(self.model.config.vision_feature_layer, len(blocks)) + 1
        protected = int(hasattr(vision_model.embeddings, "class_embedding"))
        return TowerEngine(pruner, blocks, depth, self.side * self.side, protected)

    def _scores_tower(self) -> bool:
        return self.pre is not None and bool(self.pre.needs & VISION_NEEDS)

    def install(self) -> None:
        # first, so that hooks capturing tower internals for a pre-LLM stage see the pruned tokens
        if self.tower is not None:
            self.tower.install(self)
        super().install()
        if self.tower is not None and not self._scores_tower():
            self._install_vision_capture()

    def _install_vision_capture(self) -> None:
        """Each run of the tower (here, or in generate()'s encoding before prefill) records the
        scores of the feature layer and the projector's input and output; a prefill consumes them."""
        self.hook_before(self.vlm.vision_tower, lambda module, args, kwargs: self._captures.append({}))
        if self.pre is not None and self.pre.needs & {"attention", "keys"}:
            tower = self.vlm.vision_tower
            layers = getattr(tower, "vision_model", tower).encoder.layers
            layer = layers[feature_layer_index(self.model.config.vision_feature_layer, len(layers))]
            make_hook = cls_attention_hook if self.has_cls else mean_attention_hook
            self.hook_before(
                layer, lambda module, args, kwargs: make_hook(self._captures[-1])(module, args, kwargs)
            )
        self.hook_after(self.vlm.multi_modal_projector, self._capture_projection)

    def _capture_projection(self, module, args, kwargs, output):
        if not self._captures:
            return None
        capture = self._captures[-1]
        capture.update(pre_projection=args[0], projected=output)
        if self.tower is None:
            return None
        # the crops' survivors back at their patches, so that the model packs full crop grids
        run = self.tower.take_run(len(output))
        patches = self.side * self.side
        for name in (*AUX, "projected"):
            if name in capture:
                capture[name] = scatter_patches(capture[name], run.origins, patches)
        survived = torch.zeros(len(output), patches, len(run.steps), device=output.device)
        for s, (_, _, kept, _) in enumerate(run.steps):
            survived[..., s].scatter_(1, kept.to(output.device), 1.0)
        capture[SURVIVORS] = survived
        capture["tower_steps"] = [(layer, seconds) for layer, _, _, seconds in run.steps]
        return capture["projected"]

    # -- family specifics ------------------------------------------------------------------------
    def _encode_images(self, module, kwargs):
        raise NotImplementedError

    @staticmethod
    def _image_sizes(kwargs) -> torch.Tensor:
        if kwargs.get("image_sizes") is None:
            raise ValueError("pixel_values need image_sizes (the processor returns both)")
        return kwargs["image_sizes"]

    def _encode_videos(self, module, kwargs):
        raise NotImplementedError

    def _video_media(self, module, features: torch.Tensor, capture: dict | None) -> list[Media]:
        raise NotImplementedError

    def _resized(self, kept: tuple[int, int]) -> tuple[int, int]:
        """The canvas size the model resizes an unpadded canvas of size `kept` to."""
        return kept

    # -- hooks ---------------------------------------------------------------------------------------
    def _before_prefill(self, module, args, kwargs, input_ids):
        encoded = self._encode(module, kwargs)
        captures, self._captures = self._captures, []
        if not encoded:
            return None
        if input_ids is None:
            raise ValueError("tokenprune needs input_ids (not inputs_embeds) to find the image tokens")
        media = self._media(module, encoded, captures)
        placed = self._place(input_ids, media)
        cleared = {"pixel_values": None, **({self.video_input: None} if self.video_input else {})}
        if self.pre is None and self.tower is None:
            self._groups = TokenGroups.whole(
                [[positions[~media[i].newline] for i, positions in per] for per in placed],
                [[media[i].grid for i, _ in per] for per in placed],
            )
            if compat.takes_encoder_outputs(module):
                return args, {**kwargs, **cleared, "mm_encoder_outputs": encoded}
            # the model would encode the pixels again: it gets what it would build from them
            embeds = self._embeds(module, input_ids, media)
            return (), {**kwargs, **cleared, "input_ids": None, "inputs_embeds": embeds}
        return self._prune_before_llm(module, kwargs, input_ids, media, placed, cleared)

    # -- encoding and layout -----------------------------------------------------------------------
    def _encode(self, module, kwargs) -> dict:
        """Encoder outputs by modality: computed here from pixels, or as generate() passed them."""
        config = self.model.config
        for name, configured in (
            ("vision_feature_layer", config.vision_feature_layer),
            ("vision_feature_select_strategy", config.vision_feature_select_strategy),
        ):
            if kwargs.get(name) is not None and kwargs[name] != configured:
                raise ValueError(
                    f"tokenprune prunes with the config's {name} ({configured!r}), got {kwargs[name]!r}"
                )
        encoded = dict(kwargs.get("mm_encoder_outputs") or {})
        pixels = kwargs.get("pixel_values")
        if pixels is not None and pixels.shape[0] > 0:
            encoded["image"] = self._encode_images(module, kwargs)
        if self.video_input is not None and kwargs.get(self.video_input) is not None:
            encoded["video"] = self._encode_videos(module, kwargs)
        return {kind: output for kind, output in encoded.items() if output is not None}

    def _media(self, module, encoded: dict, captures: list[dict]) -> list[Media]:
        needs_capture = self._scores_tower() or self.tower is not None
        if needs_capture and len(captures) < len(encoded):
            name = (self.tower.pruner if self.tower is not None else self.pre).name
            raise ValueError(
                f"{name} needs vision-tower internals captured while the images were encoded; "
                "encode them while the pruner is applied (pass pixel values)"
            )
        if self.tower is not None and "video" in encoded:
            raise ValueError(
                "in-tower pruning on LLaVA-OneVision supports images: the model pools each video "
                "frame's whole patch grid, which a pruned frame no longer has"
            )
        captures = captures[-len(encoded) :] if needs_capture else [None] * len(encoded)
        media: list[Media] = []
        if "image" in encoded:  # images are encoded before videos, here and in generate()
            media += self._image_media(list(encoded["image"].pooler_output), captures[0])
        if "video" in encoded:
            features = compat.video_features_with_newline(module, encoded["video"])
            media += self._video_media(module, features, captures[-1])
        return media

    def _newlines(self, features: torch.Tensor) -> torch.Tensor:
        return (features == self.vlm.image_newline.to(features.dtype)).all(dim=-1)

    def _image_media(self, features: list[torch.Tensor], capture: dict | None) -> list[Media]:
        base = self.side * self.side
        first_crops = self._base_crops(features, capture) if capture is not None else None
        media = []
        for i, f in enumerate(features):
            newline = self._newlines(f)
            rows = int(newline.sum())
            count = len(f) - rows
            views: tuple[tuple[int, ...], ...] = ((self.side, self.side),)
            expected = torch.zeros_like(newline)
            if count == base:
                expected[-1] = True
            else:
                width = (count - base) // max(rows, 1)
                views += ((rows, width),)
                expected[base + width :: width + 1] = True
            if rows == 0 or not bool((newline == expected).all()):
                raise ValueError(
                    f"image {i}: its {len(f)} features do not have the anyres layout tokenprune knows"
                )
            aux: dict = {}
            tower: tuple = ()
            if capture is not None:
                start = first_crops[i]
                crops = capture["projected"].shape[0]
                end = first_crops[i + 1] if i + 1 < len(features) else crops
                aux.update(self._image_aux(f[~newline], views, capture, start, end))
                if SURVIVORS in aux:
                    survived = aux.pop(SURVIVORS) > 0.5
                    share = (end - start) / crops  # the step's time split by crops
                    tower = tuple(
                        (layer, survived[:, s], seconds * share)
                        for s, (layer, seconds) in enumerate(capture["tower_steps"])
                    )
            grid = views[0] if len(views) == 1 else (1, count)
            media.append(Media(self.model.config.image_token_id, newline, grid, views, f, aux, tower))
        return media

    def _base_crops(self, features: list[torch.Tensor], capture: dict) -> list[int]:
        """Index of each image's base crop among the encoded crops: its base view's features equal
        that crop's projected tokens. Crops of image i run up to the next image's base crop."""
        projected = capture["projected"]
        base = self.side * self.side
        found, start = [], 0
        for f in features:
            for k in range(start, projected.shape[0]):
                if same_tokens(projected[k], f[:base]):
                    found.append(k)
                    start = k + 1
                    break
            else:
                raise ValueError("the captured vision-tower run does not match the image features")
        return found

    def _image_aux(self, tokens, views, capture, start: int, end: int) -> dict:
        aux = {name: with_channel(capture[name][start:end]) for name in (*AUX, SURVIVORS) if name in capture}
        base = self.side * self.side
        if len(views) == 1:
            return without_attention_channel({name: value[0] for name, value in aux.items()})
        layout = self._canvas_layout(capture["projected"][start + 1 : end], views[1], tokens[base:])
        if SURVIVORS in aux and layout[2] != layout[3]:
            raise ValueError(
                f"in-tower pruning cannot follow this image: the model resizes its {layout[2]} crop "
                f"canvas to {layout[3]} (vision_aspect_ratio {self.model.config.vision_aspect_ratio!r}), "
                "which blends pruned patches into kept ones; prune before the LLM instead"
            )
        return without_attention_channel(
            {name: torch.cat([value[0], stitch(value[1:], *layout)]) for name, value in aux.items()}
        )

    def _canvas_layout(self, crops: torch.Tensor, canvas: tuple[int, int], target: torch.Tensor):
        """(crop grid, side, unpadded size, output size) under which the crops' projected tokens
        reproduce the image's canvas features exactly."""
        crop_pixels = self.model.config.vision_config.image_size
        side = self.side
        grids = {
            (h // crop_pixels, w // crop_pixels)
            for h, w in self.model.config.image_grid_pinpoints
            if (h // crop_pixels) * (w // crop_pixels) == crops.shape[0]
        }
        for rows, cols in sorted(grids):
            full = (rows * side, cols * side)
            kept_sizes = [full]
            kept_sizes += [(full[0] - 2 * p, full[1]) for p in range(1, (full[0] + 1) // 2)]
            kept_sizes += [(full[0], full[1] - 2 * p) for p in range(1, (full[1] + 1) // 2)]
            for kept in kept_sizes:
                if self._resized(kept) != canvas:
                    continue
                layout = ((rows, cols), side, kept, canvas)
                if same_tokens(stitch(crops[..., :LAYOUT_CHANNELS], *layout), target):
                    return layout
        raise ValueError(f"could not match {crops.shape[0]} encoded crops to the image's {canvas} canvas")

    def _place(self, input_ids: torch.Tensor, media: list[Media]) -> list[list[tuple[int, torch.Tensor]]]:
        """Per sample, (media index, placeholder positions) in prompt order. The model fills the
        placeholders of one token id with its media in order, sample by sample."""
        placed: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(len(input_ids))]
        for token_id in dict.fromkeys(m.token_id for m in media):
            indices = [i for i, m in enumerate(media) if m.token_id == token_id]
            lengths = [len(media[i].newline) for i in indices]
            where = (input_ids == token_id).nonzero()
            if len(where) != sum(lengths):
                raise ValueError(
                    f"the prompt has {len(where)} placeholder tokens (id {token_id}) but its "
                    f"{len(indices)} images/videos take {sum(lengths)} ({', '.join(map(str, lengths))})"
                )
            for i, chunk in zip(indices, where.split(lengths)):
                if bool((chunk[:, 0] != chunk[0, 0]).any()) or bool(
                    (chunk[1:, 1] - chunk[:-1, 1] != 1).any()
                ):
                    raise ValueError(
                        "each image's (or video's) placeholder tokens must be one contiguous run"
                    )
                placed[int(chunk[0, 0])].append((i, chunk[:, 1]))
        for per in placed:
            per.sort(key=lambda entry: int(entry[1][0]))
        return placed

    # -- pre-LLM selection -------------------------------------------------------------------------
    def _tower_survivors(self, item: Media, sample: int, group: int) -> torch.Tensor | None:
        """The indices (in the image's own order) of its tokens that left the tower, after recording
        each in-tower step; None without an in-tower stage."""
        if not item.tower:
            return None
        before = item.count
        for layer, survived, seconds in item.tower:
            kept = survived.nonzero().squeeze(1)
            log = SelectionLog(self.stats, "in_tower", self.tower.pruner.name, layer)
            log.add(sample, group, before, kept, item.grid, seconds)
            before = len(kept)
        return kept

    @staticmethod
    def _embeds(module, input_ids: torch.Tensor, media: list[Media]) -> torch.Tensor:
        """The prompt's input embeddings with the media features at their placeholders."""
        embeds = module.get_input_embeddings()(input_ids)
        for token_id in dict.fromkeys(m.token_id for m in media):
            features = torch.cat([m.features for m in media if m.token_id == token_id])
            is_media = (input_ids == token_id)[..., None]
            embeds = embeds.masked_scatter(is_media, features.to(embeds.device, embeds.dtype))
        return embeds

    def _prune_before_llm(self, module, kwargs, input_ids, media: list[Media], placed, cleared):
        embeds = self._embeds(module, input_ids, media)
        mask = kwargs.get("attention_mask")
        # old padding goes too: pack() re-pads to the longest kept row
        keep = mask.bool() if mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        text_mask = text_rows(input_ids, {m.token_id for m in media}, mask)
        kept_positions: list[list[torch.Tensor]] = []
        kept_origins: list[list[torch.Tensor]] = []
        for b, per in enumerate(placed):
            sample_positions, sample_origins = [], []
            for g, (i, positions) in enumerate(per):
                item = media[i]
                candidates = positions[~item.newline]
                features, aux, views = item.features[~item.newline], item.aux, item.views
                survivors = self._tower_survivors(item, b, g)
                if survivors is not None:
                    drop_unselected(keep, b, candidates, survivors)
                    candidates, features = candidates[survivors], features[survivors]
                    aux = {name: value[survivors] for name, value in aux.items()}
                    # each view's survivors, in order, as one row
                    bounds = torch.tensor([math.prod(v) for v in views], device=survivors.device).cumsum(0)
                    counts = torch.bucketize(survivors, bounds, right=True).bincount(minlength=len(views))
                    views = tuple((int(n),) for n in counts if n)
                if self.pre is None:
                    kept = torch.arange(len(candidates), device=candidates.device)
                else:
                    tokens = ViewTokens(
                        features=features,
                        grid=item.grid if survivors is None else (len(features),),
                        attention=aux.get("attention"),
                        keys=aux.get("keys"),
                        pre_projection=aux.get("pre_projection"),
                        project=module.multi_modal_projector,
                        views=views,
                    )
                    kept = self.select_visual(
                        tokens, candidates, keep, embeds, b, g, item.grid, text_mask, origins=survivors
                    )
                sample_positions.append(candidates[kept])
                sample_origins.append(kept if survivors is None else survivors[kept])
            kept_positions.append(sample_positions)
            kept_origins.append(sample_origins)
        packed = pack(embeds, keep, kwargs.get("attention_mask"), kwargs.get("position_ids"), self.reindex)
        length = input_ids.shape[1]
        grids = [[media[i].grid for i, _ in per] for per in placed]
        self._set_engine_groups(packed, length, kept_positions, kept_origins, grids)
        return self._packed_forward(kwargs, packed, packed.prefill_state(length, self.reindex), cleared)
