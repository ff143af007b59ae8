"""Question sets for the harness: the toy generators, or JSONL files for real checkpoints."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from tokenprune.eval.harness import Example

TOY_VLM_PROMPT = "<image> {question}"
HELD_OUT_SEED = 1000
# unlabelled toy scenes the adaptive configurations calibrate their target on (`harness.calibrated`)
CALIBRATION_SEED = 2000
CALIBRATION_IMAGES = 64
TOY_SCENES = {"toy": "scenes", "toy2": "scenes2"}  # --data name: generator module of tokenprune.zoo


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(
                f"{path}:{number}: row lacks {missing}; rows need {list(required)}"
                " (and optional 'type', 'region')"
            )
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return rows


def vlm_examples(
    processor,
    data: str,
    limit: int,
    prompt: str = TOY_VLM_PROMPT,
    max_new_tokens: int = 4,
    device="cpu",
    seed: int = HELD_OUT_SEED,
) -> list[Example]:
    """`data` = "toy" or "toy2" (generated scenes of `zoo.scenes` or `zoo.scenes2` from split `seed`,
    held-out by default, question types in turn) or a JSONL file of {"image": path (relative to the file), "question", "answer",
    "type"?, "region"?} rows. `region` names where in the image the answer lies (the toys': the grid
    row of the asked object)."""
    if data in TOY_SCENES:
        scenes = importlib.import_module(f"tokenprune.zoo.{TOY_SCENES[data]}")
        picked = scenes.samples(seed, limit)
        images = scenes.render([s.scene for s in picked])
        rows = [
            {
                "image": scenes.to_pil(image),
                "question": s.question,
                "answer": s.answer,
                "type": s.kind,
                "region": s.region,
            }
            for s, image in zip(picked, images)
        ]
    else:
        from PIL import Image

        path = Path(data)
        rows = read_jsonl(path, ("image", "question", "answer"))[:limit]
        for row in rows:
            row["image"] = Image.open(path.parent / row["image"]).convert("RGB")
    image_token_id = getattr(processor, "image_token_id", None)
    examples = []
    for row in rows:
        inputs = processor(
            text=prompt.format(question=row["question"]), images=row["image"], return_tensors="pt"
        )
        examples.append(
            Example(
                {k: v.to(device) for k, v in inputs.items()},
                str(row["answer"]),
                row.get("type", "all"),
                max_new_tokens,
                row.get("region"),
                None if image_token_id is None else int((inputs["input_ids"] == image_token_id).sum()),
            )
        )
    return examples


def lm_examples(
    tokenizer, data: str, limit: int, lengths: tuple[int, ...] = (512, 1024, 2048), device="cpu"
) -> list[Example]:
    """`data` = "toy" (held-out retrieval prompts, single- and two-hop, lengths in turn) or a JSONL
    file of {"prompt", "answer", "type"?} rows."""
    if data == "toy":
        from tokenprune.zoo import retrieval

        picked = [retrieval.sample(HELD_OUT_SEED, i, lengths[i // 2 % len(lengths)]) for i in range(limit)]
        rows = [{"prompt": s.prompt, "answer": " ".join(s.answer), "type": s.kind} for s in picked]
    else:
        rows = read_jsonl(Path(data), ("prompt", "answer"))[:limit]
    examples = []
    for row in rows:
        inputs = tokenizer(row["prompt"], return_tensors="pt")
        answer_tokens = len(tokenizer(row["answer"], add_special_tokens=False).input_ids)
        examples.append(
            Example(
                {k: v.to(device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")},
                str(row["answer"]),
                row.get("type", "all"),
                max(1, answer_tokens),
                tokens=inputs["input_ids"].shape[1],
            )
        )
    return examples
