"""Tiny LLaVA and Qwen2.5-VL checkpoints written to a directory, loadable by vLLM offline.

Each holds a config, random weights (safetensors, seeded, so every engine built from the same
directory computes the same function), a local word-level tokenizer with a chat template, and the
image processor and processor configs vLLM reads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tokenprune.zoo import builders

WORDS = [f"w{i}" for i in range(40)]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] in ['image', 'image_url'] %}{{ image_token }} {% else %}{{ part['text'] }} {% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}assistant:"
)


def _tokenizer(specials: list[str], image_markup: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials + WORDS + ["user:", "assistant:", "\n"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE.replace("{{ image_token }}", image_markup),
    )


def _save_weights(model, directory: Path, rename: tuple[str, str] | None = None) -> None:
    """Config plus the state dict under its in-memory names (`rename`: one prefix replaced), which
    vLLM's weight mappers know; `save_pretrained` rewrites them to a layout vLLM 0.32 does not map."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]  # what vLLM resolves the in-tree model from
    model.config.save_pretrained(directory)
    state = {}
    for name, tensor in model.state_dict().items():
        if rename and name.startswith(rename[0]):
            name = rename[1] + name[len(rename[0]) :]
        state[name] = tensor.contiguous()
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})


def _text_sizes(vocab: int, hidden: int, layers: int) -> dict:
    """The language model of every test checkpoint: heads of size 32, the tokenizer's special ids."""
    return dict(
        vocab=vocab,
        hidden=hidden,
        ffn=2 * hidden,
        layers=layers,
        heads=hidden // 32,
        max_positions=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )


def llava_checkpoint(
    directory: Path,
    *,
    image_size: int = 56,
    patch_size: int = 14,
    text_hidden: int = 64,
    text_layers: int = 2,
    seed: int = 0,
) -> Path:
    """LLaVA-1.5 geometry in miniature: CLIP (CLS + (image_size/patch_size)^2 patches), layer -2."""
    from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    directory = Path(directory)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    tokenizer = _tokenizer(specials, "<image>")
    vocab_size = 64 if len(tokenizer) <= 64 else len(tokenizer)
    config = builders.llava_config(
        vision=dict(
            hidden=64,
            ffn=128,
            layers=3,
            heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=64,
        ),
        text=_text_sizes(vocab_size, text_hidden, text_layers),
        image_token=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    # vLLM's CLIP tower keeps the original `vision_model` level, which transformers 5 dropped
    _save_weights(
        LlavaForConditionalGeneration(config).eval(),
        directory,
        rename=("model.vision_tower.", "model.vision_tower.vision_model."),
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


QWEN_SPECIALS = [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_IMAGE_MARKUP = "<|vision_start|><|image_pad|><|vision_end|>"


def _qwen_checkpoint(
    directory: Path, family: str, vision: dict, max_pixels: int, seed: int, text_hidden: int, text_layers: int
) -> Path:
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    prefix = {"qwen2_vl": "Qwen2VL", "qwen2_5_vl": "Qwen2_5_VL"}[family]
    directory = Path(directory)
    tokenizer = _tokenizer(QWEN_SPECIALS, QWEN_IMAGE_MARKUP)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    config = builders.qwen_vl_config(
        family,
        vision=vision,
        # head size 32: the M-RoPE sections cover its 16 rotary pairs
        text=_text_sizes(64, text_hidden, text_layers),
        image_token=ids["<|image_pad|>"],
        video_token=ids["<|video_pad|>"],
        vision_start=ids["<|vision_start|>"],
        vision_end=ids["<|vision_end|>"],
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(seed)
    _save_weights(getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval(), directory)
    sizes = dict(min_pixels=56 * 56, max_pixels=max_pixels, patch_size=14, merge_size=2)
    processor = getattr(transformers, f"{prefix}Processor")(
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def qwen2_5_vl_checkpoint(
    directory: Path,
    *,
    max_pixels: int = 112 * 112,
    seed: int = 0,
    text_hidden: int = 64,
    text_layers: int = 2,
) -> Path:
    """Qwen2.5-VL in miniature: a 112x112 image is an 8x8 patch grid, 16 merged tokens, in 2x2-token
    attention windows except in the last (full-attention) block."""
    vision = dict(
        hidden=32,
        ffn=64,
        layers=2,
        heads=2,
        out=text_hidden,  # the merger feeds the language model
        patch_size=14,
        temporal_patch_size=2,
        merge=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    return _qwen_checkpoint(directory, "qwen2_5_vl", vision, max_pixels, seed, text_hidden, text_layers)


def qwen2_vl_checkpoint(directory: Path, *, max_pixels: int = 112 * 112, seed: int = 0) -> Path:
    """Qwen2-VL in miniature (every vision block attends over the whole image)."""
    vision = dict(hidden=32, ffn=64, layers=2, heads=2, out=64, patch_size=14, temporal_patch_size=2, merge=2)
    return _qwen_checkpoint(directory, "qwen2_vl", vision, max_pixels, seed, 64, 2)
