"""Vision tab: visual-token pruners side by side on one image, kept patches drawn on the image."""

from __future__ import annotations

from dataclasses import dataclass

from tokenprune.demos.app.checks import VISUAL_PRUNERS, check_budget, check_names, check_question
from tokenprune.demos.app.measurement import Measurement, measure_all, speedup_cell
from tokenprune.demos.app.models import Loaded
from tokenprune.eval import harness
from tokenprune.stats import PruneRecord

OVERLAY_SIZE = 288
COLUMNS = (
    "pruner",
    "answer",
    "image tokens kept",
    "LLM tokens per layer",
    "tokens prefilled",
    "prefill ms",
    "prefill speedup (min-max)",
    "total ms",
)


def vision_prompt(processor, question: str) -> str:
    """The checkpoint's chat template around one image and the question, or `<image> question`."""
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    return f"{processor.image_token} {question}"


def processed_view(image, processor):
    """The part of the image the model sees, as the processor frames it (CLIP-style center crop)."""
    image_processor = getattr(processor, "image_processor", None)
    if getattr(image_processor, "do_center_crop", False):
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    return image


def spatial(grid) -> bool:
    """A 2-D patch grid (LLaVA, Qwen-VL images); not a video's (t, h, w) nor a token row (anyres)."""
    return grid is not None and len(grid) == 2 and min(grid) > 1


def overlay(image, grid: tuple[int, ...], kept: tuple[int, ...], width: int = OVERLAY_SIZE):
    """The image with dropped patches darkened and the kept ones outlined, `width` pixels wide."""
    from PIL import Image, ImageDraw

    if not spatial(grid):
        raise ValueError(f"an overlay needs a 2-D patch grid, got {grid}")
    rows, cols = grid
    height = round(width * rows / cols)
    view = image.convert("RGB").resize((width, height), Image.NEAREST)
    shade = Image.new("RGBA", view.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    kept = set(kept)
    for index in range(rows * cols):
        r, c = divmod(index, cols)
        box = (
            c * width // cols,
            r * height // rows,
            (c + 1) * width // cols - 1,
            (r + 1) * height // rows - 1,
        )
        if index in kept:
            draw.rectangle(box, outline=(40, 220, 90, 255), width=2)
        else:
            draw.rectangle(box, fill=(0, 0, 0, 160))
    return Image.alpha_composite(view.convert("RGBA"), shade).convert("RGB")


def image_selections(records: list[PruneRecord]) -> list[PruneRecord]:
    """Selections of sample 0's first image, in the order they ran (the last one reached the last layer)."""
    return [
        r for r in records if r.sample == 0 and r.group == 0 and r.stage in ("in_tower", "pre_llm", "llm")
    ]


@dataclass
class VisionResult:
    rows: list[dict]
    overlays: list[tuple[object, str]]  # (PIL image, caption)
    measurements: list[Measurement]


def run_vision(
    vlm: Loaded, image, question, pruners, budget, max_new_tokens: int = 4, repeats: int = 5
) -> VisionResult:
    """Unpruned model and each pruner on one image and question."""
    from PIL import Image

    if image is None:
        raise ValueError("Upload an image or generate a scene first.")
    if not isinstance(image, Image.Image):
        raise ValueError(f"Expected an image, got {type(image).__name__}.")
    question = check_question(question)
    names = check_names(pruners, VISUAL_PRUNERS)
    budget = check_budget(budget)
    image = image.convert("RGB")
    processor = vlm.processor
    inputs = dict(processor(text=vision_prompt(processor, question), images=image, return_tensors="pt"))
    configs = [("unpruned", None)] + [
        (f"{name} @ {budget:g}", harness.visual_pruner(name, budget, vlm.depth)) for name in names
    ]
    measurements = measure_all(vlm, inputs, configs, max_new_tokens, repeats)
    base = measurements[0]
    view = processed_view(image, processor)
    rows, overlays = [], []
    for m in measurements:
        selections = image_selections(m.records)
        # kept of the image's own tokens: later stages select among what earlier ones kept
        available = selections[0].tokens_before if selections else None
        selection = selections[-1] if selections else None
        image_tokens = f"{selection.tokens_after} / {available}" if selection else "all"
        rows.append(
            {
                "pruner": m.label,
                "answer": m.answer,
                "image tokens kept": image_tokens,
                "LLM tokens per layer": " · ".join(map(str, m.layer_tokens)),
                "tokens prefilled": m.prefilled,
                "prefill ms": round(1e3 * m.prefill_s, 2),
                "prefill speedup (min-max)": speedup_cell(base.prefill_runs, m.prefill_runs),
                "total ms": round(1e3 * m.total_s, 2),
            }
        )
        if selection is not None and spatial(selection.grid):
            caption = f"{m.label}: {selection.tokens_after} of {available} patches kept"
            overlays.append((overlay(view, selection.grid, selection.kept_indices), caption))
    return VisionResult(rows, overlays, measurements)


def as_image(value):
    """A PIL image from what the Image component sends unprocessed (None, a file payload with a path or
    a data: URL, or a path), so that a file that is no image becomes a message, not a Gradio error."""
    import base64
    import io

    from PIL import Image, UnidentifiedImageError

    if value is None or isinstance(value, Image.Image):
        return value
    name, source = value, value
    if isinstance(value, dict):
        name = value.get("orig_name") or value.get("path") or "pasted image"
        url = value.get("url") or ""
        source = (
            io.BytesIO(base64.b64decode(url.split(",", 1)[1]))
            if url.startswith("data:")
            else value.get("path")
        )
    try:
        with Image.open(source) as opened:
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, TypeError, ValueError) as error:
        raise ValueError(
            f"The uploaded file {name!r} is not an image Pillow can read (PNG, JPEG, WebP, ...)."
        ) from error


def generated_scene(seed: int, index: int = 0):
    """(PIL image, question, answer) of a procedural scene the toy VLM was trained on."""
    from tokenprune.zoo import scenes

    sample = scenes.sample(int(seed), int(index))
    return scenes.to_pil(scenes.render([sample.scene])[0]), sample.question, sample.answer
