"""Tokenizers, processors and model configurations of the reference models."""

from __future__ import annotations

from tokenprune.zoo import builders, retrieval, scenes, scenes2

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
IMAGE_TOKEN = "<image>"
PATCH_SIZE = scenes.PATCH


def word_tokenizer(words: tuple[str, ...], extra_special: tuple[str, ...] = ()):
    """A whitespace word-level `PreTrainedTokenizerFast` over `words` that prepends `<s>`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + extra_special + words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    kwargs = {"extra_special_tokens": {"image_token": IMAGE_TOKEN}} if IMAGE_TOKEN in extra_special else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(extra_special) or None,
        **kwargs,
    )


def vlm_tokenizer():
    return word_tokenizer(scenes.WORDS, extra_special=(IMAGE_TOKEN,))


def vlm2_tokenizer():
    return word_tokenizer(scenes2.WORDS, extra_special=(IMAGE_TOKEN,))


def lm_tokenizer():
    return word_tokenizer(retrieval.WORDS)


def vlm_processor(tokenizer=None, size: int = scenes.IMAGE_SIZE):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer or vlm_tokenizer(),
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def build_vlm(tokenizer, image_size: int = scenes.IMAGE_SIZE, max_positions: int = 256):
    """A LLaVA-1.5-shaped model: CLIP tower (`image_size` px images in 12 px patches + CLS; 96 px = 8x8
    patches), MLP projector, 4-layer Llama."""
    from transformers import LlavaForConditionalGeneration

    config = builders.llava_config(
        vision=dict(
            hidden=64,
            ffn=256,
            layers=2,
            heads=4,
            image_size=image_size,
            patch_size=PATCH_SIZE,
            projection_dim=64,
        ),
        text=text_sizes(tokenizer, hidden=96, heads=4, layers=4, max_positions=max_positions),
        image_token=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaForConditionalGeneration(config)


def vlm2_processor(tokenizer=None):
    return vlm_processor(tokenizer or vlm2_tokenizer(), scenes2.IMAGE_SIZE)


def build_vlm2(tokenizer):
    """toy-vlm-2: toy-vlm's architecture over 192 px images (16x16 = 256 patch tokens + CLS) and
    prompts of up to 512 tokens."""
    return build_vlm(tokenizer, image_size=scenes2.IMAGE_SIZE, max_positions=512)


def build_lm(tokenizer):
    """A 6-layer Llama for contexts up to 2,048 tokens. Six layers let the retrieval circuit (a
    previous-token head, then an induction head) finish before the first depth-relative pruning layer,
    as it does in deep models; rope_theta 500,000 (Llama 3's) leaves more slowly rotating dimensions
    for matching keys hundreds of tokens apart."""
    from transformers import LlamaForCausalLM

    sizes = text_sizes(tokenizer, hidden=128, heads=4, layers=6, max_positions=2048, rope_theta=500000.0)
    return LlamaForCausalLM(builders.llama_config(**sizes))


def text_sizes(
    tokenizer, hidden: int, heads: int, layers: int, max_positions: int, rope_theta: float = 10000.0
) -> dict:
    """A reference model's Llama sizes over `tokenizer`'s vocabulary and special tokens."""
    return dict(
        vocab=len(tokenizer),
        hidden=hidden,
        ffn=256,
        layers=layers,
        heads=heads,
        max_positions=max_positions,
        rope_theta=rope_theta,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
