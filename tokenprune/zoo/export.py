"""The reference VLM in a layout vLLM loads: `tokenprune zoo export toy-vlm DIR`.

The committed `toy-vlm` is a transformers checkpoint. vLLM 0.32 loads the same function after two
layout changes, no new weights:

- vLLM's CLIP tower keeps the `vision_model` level in its weight names, which transformers 5 drops.
- vLLM's attention kernels implement a fixed set of head sizes (on CPU 32, 64, 80, ...), and the toy
  Llama's is 24. Its heads are zero-padded to the next size the kernels have, which keeps attention
  exact: q.k is unchanged (q scaled by sqrt(new/old) for the 1/sqrt(head size) factor), zero value
  dimensions meet zero output-projection columns, and each rotary half moves to the front of its new
  half, with rope_theta raised to the power new/old so those frequencies stay theta^(-2i/old).

The copy also gets a chat template that renders a user turn as the prompt the model was trained on
(`<s> <image> what color is at b3 ?`), so the OpenAI chat endpoint works.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenprune.zoo import path as model_path

EXPORTABLE = ("toy-vlm",)
# Head sizes vLLM's CPU attention kernel implements (CPUAttentionBackend.get_supported_head_sizes);
# the GPU backends have these too.
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages if message['role'] == 'user' %}"
    "{% if message['content'] is string %}{{ message['content'] }} {% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] in ['image', 'image_url'] %}<image> {% elif part['type'] == 'text' %}{{ part['text'] }} "
    "{% endif %}{% endfor %}{% endif %}{% endfor %}"
)


def export_vllm(name: str, directory: str | Path) -> Path:
    """Write reference model `name` to `directory` in the layout vLLM loads; returns the directory."""
    if name not in EXPORTABLE:
        raise ValueError(f"no vLLM export for {name!r}; exportable: {', '.join(EXPORTABLE)}")
    directory = vllm_llava_copy(model_path(name), directory)
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    return directory


def vllm_llava_copy(source: str | Path, directory: str | Path) -> Path:
    """A copy of the saved LLaVA checkpoint `source` (transformers 5 layout) that vLLM loads,
    computing the same function (see the module docstring)."""
    import torch
    from safetensors.torch import load_file, save_file

    source, directory = Path(source), Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.name != "model.safetensors":
            shutil.copy(file, directory / file.name)
    config = json.loads((source / "config.json").read_text())
    text = config["text_config"]
    heads = text["num_attention_heads"]
    kv_heads = text.get("num_key_value_heads") or heads
    old = text.get("head_dim") or text["hidden_size"] // heads
    new = min(size for size in VLLM_HEAD_SIZES if size >= old)
    state = {}
    for name, tensor in load_file(source / "model.safetensors").items():
        if name.startswith("vision_tower."):
            name = "vision_tower.vision_model." + name[len("vision_tower.") :]
        elif new != old and ".self_attn." in name:
            if name.endswith("bias"):
                raise ValueError(f"padding attention biases is not implemented ({name})")
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                count = heads if "q_proj" in name else kv_heads
                rows = tensor.view(count, old, -1)
                padded = rows.new_zeros(count, new, rows.shape[-1])
                padded[:, : old // 2] = rows[:, : old // 2]
                padded[:, new // 2 : new // 2 + old // 2] = rows[:, old // 2 :]
                if "q_proj" in name:
                    padded *= (new / old) ** 0.5
                tensor = padded.reshape(count * new, -1)
            elif name.endswith("v_proj.weight"):
                rows = tensor.view(kv_heads, old, -1)
                tensor = torch.cat([rows, rows.new_zeros(kv_heads, new - old, rows.shape[-1])], 1).flatten(
                    0, 1
                )
            elif name.endswith("o_proj.weight"):
                columns = tensor.view(tensor.shape[0], heads, old)
                tensor = torch.cat(
                    [columns, columns.new_zeros(tensor.shape[0], heads, new - old)], 2
                ).flatten(1)
        state[name] = tensor.contiguous()
    if new != old:
        text["head_dim"] = new
        rope = text.setdefault("rope_parameters", {"rope_type": "default", "rope_theta": 10000.0})
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"padding the head size of {rope['rope_type']} RoPE is not implemented")
        rope["rope_theta"] = rope["rope_theta"] ** (new / old)
        (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory
