"""Training loops of the reference models: fixed seeds, periodic checkpoints, a held-out check."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from tokenprune.pruners.divprune import max_min_diverse
from tokenprune.zoo import models, retrieval, scenes, scenes2

TRAIN_SEED = 1
HELD_OUT_SEED = 1000
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Schedule:
    steps: int
    lr: float
    warmup: int = 200
    weight_decay: float = 0.01
    checkpoint_every: int = 100
    log_every: int = 25


def pixel_values(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> what CLIPImageProcessor gives for images already at the model's size."""
    mean = torch.tensor(CLIP_MEAN, device=images.device)
    std = torch.tensor(CLIP_STD, device=images.device)
    return ((images.float() / 255.0 - mean) / std).permute(0, 3, 1, 2).contiguous()


def vlm_prompt(question: str) -> str:
    return f"{models.IMAGE_TOKEN} {question}"


def vlm_batch(
    tokenizer,
    seed: int,
    start: int,
    size: int,
    device,
    questions: int = 1,
    cell_patches: int = scenes.CELL_PATCHES,
) -> dict[str, torch.Tensor]:
    """Input ids `<s> <image>*64 question answer </s>`, with loss only on the answer and `</s>`. With
    `questions` > 1, further question-answer turns about the same image follow: training gets several
    answers per rendered image, while the first turn is exactly what evaluation asks. `cell_patches`
    1 renders the first stage's 48 px images (16 image tokens)."""
    return samples_batch(
        tokenizer, scenes.samples(seed, size, start), seed, start, device, questions, cell_patches
    )


def samples_batch(
    tokenizer,
    picked: list[scenes.Sample],
    seed: int,
    start: int,
    device,
    questions: int = 1,
    cell_patches: int = scenes.CELL_PATCHES,
) -> dict[str, torch.Tensor]:
    """`vlm_batch` of samples already drawn: `picked` holds samples `start`, `start` + 1, ... of split
    `seed`."""
    turns = [
        [(s.question, s.answer), *scenes.more_questions(s, seed, index, questions - 1)]
        for index, s in enumerate(picked, start)
    ]
    return {
        **_turn_rows(tokenizer, (scenes.GRID * cell_patches) ** 2, turns, device),
        "pixel_values": pixel_values(scenes.render([s.scene for s in picked], device, cell_patches)),
    }


def _turn_rows(
    tokenizer, image_tokens: int, turns: list[list[tuple[str, str]]], device
) -> dict[str, torch.Tensor]:
    """`<s> <image>*image_tokens` then each row's (question, answer) turns; targets: the answers and
    their `</s>`."""
    image_ids = [tokenizer.convert_tokens_to_ids(models.IMAGE_TOKEN)] * image_tokens
    rows, targets = [], []
    for row_turns in turns:
        row, target = [tokenizer.bos_token_id, *image_ids], [False] * (1 + len(image_ids))
        for question, answer in row_turns:
            question_ids = tokenizer(question, add_special_tokens=False).input_ids
            answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            row += question_ids + answer_ids
            target += [False] * len(question_ids) + [True] * len(answer_ids)
        rows.append(row)
        targets.append(target)
    return _pad(rows, targets, tokenizer.pad_token_id, device)


def _pad(rows: list[list[int]], targets: list[list[bool]], pad: int, device) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    target = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (row, tgt) in enumerate(zip(rows, targets)):
        ids[b, : len(row)] = torch.tensor(row)
        mask[b, : len(row)] = 1
        target[b, : len(row)] = torch.tensor(tgt)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "targets": target.to(device)}


# Steps of the copy stage: sequences `<s> x x` of random words, the loss on the repeat. Repeats of
# varying length can only be predicted by induction heads (find the current word earlier, copy its
# successor), which form here within ~2,000 steps; trained on retrieval alone they had not formed
# after 4,000 steps. Retrieval then reuses them.
LM_COPY_STEPS = 2500


def lm_length(step: int, steps: int, rng: np.random.Generator) -> int:
    """Retrieval context length: 64-512 tokens for the first 30 % of the retrieval steps, then
    512-2,048 (rotary positions do not extrapolate past the longest trained context, and retrieval
    across 2,000 tokens needs most of the steps)."""
    low, high = (64, 512) if step < steps * 3 // 10 else (512, 2048)
    return int(rng.integers(low, high + 1))


def copy_batch(tokenizer, rng: np.random.Generator, tokens: int, device) -> dict[str, torch.Tensor]:
    """Sequences `<s> x x` with x 8-64 distinct random retrieval words; targets: the repeat after its first word."""
    first_word = len(models.SPECIALS)
    rows, targets = [], []
    while sum(len(r) for r in rows) < tokens:
        x = (first_word + rng.choice(len(retrieval.WORDS), int(rng.integers(8, 65)), replace=False)).tolist()
        rows.append([tokenizer.bos_token_id, *x, *x])
        targets.append([False] * (len(x) + 2) + [True] * (len(x) - 1))
    return _pad(rows, targets, tokenizer.pad_token_id, device)


def lm_batch(
    tokenizer, rng: np.random.Generator, length: int, tokens: int, device
) -> dict[str, torch.Tensor]:
    rows, targets = [], []
    for _ in range(max(1, tokens // length)):
        # one query per 64 context tokens: long sequences give as many answers per token as short ones
        words, target = retrieval.training_sequence(rng, length, queries=max(8, length // 64))
        rows.append([tokenizer.bos_token_id, *tokenizer.convert_tokens_to_ids(words)])
        targets.append([False, *target])
    return _pad(rows, targets, tokenizer.pad_token_id, device)


def answer_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy on the target tokens, and the fraction of them predicted exactly."""
    inputs = {k: v for k, v in batch.items() if k != "targets"}
    logits = model(**inputs).logits[:, :-1].float()
    labels = batch["input_ids"][:, 1:]
    targets = batch["targets"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[targets], labels[targets])
    accuracy = (logits[targets].argmax(-1) == labels[targets]).float().mean()
    return loss, accuracy


def fit(
    model,
    next_batch: Callable[[int], dict[str, torch.Tensor]],
    schedule: Schedule,
    save: Callable[[], None],
    log: Callable[[str], None] = print,
) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)

    def factor(step: int) -> float:
        if step < schedule.warmup:
            return (step + 1) / schedule.warmup
        progress = (step - schedule.warmup) / max(1, schedule.steps - schedule.warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    started = time.perf_counter()
    for step in range(schedule.steps):
        loss, accuracy = answer_loss(model, next_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        if step % schedule.log_every == 0 or step == schedule.steps - 1:
            elapsed = time.perf_counter() - started
            log(f"step {step:5d}  loss {loss.item():.4f}  answer acc {accuracy.item():.3f}  {elapsed:7.1f}s")
        if (step + 1) % schedule.checkpoint_every == 0:
            save()
    model.eval()
    save()


# Share of the VLM's steps spent on 48 px scenes whose cells are single patches. Trained directly on
# the 96 px scenes, where a cell's object fills one of its four patches, the model had learned colours
# but not shapes after 5,500 steps (shape questions at chance); on one-patch cells it learns both, and
# the second stage only has to find the object among its cell's patches.
VLM_DENSE_SHARE = 0.5
# Second-stage rows whose background tokens are partly masked out (see `mask_image_tokens`)
MASKED_ROWS = 0.5


def mask_image_tokens(
    batch: dict[str, torch.Tensor],
    image_token_id: int,
    batch_scenes: list[scenes.Scene],
    seed: int,
    start: int,
) -> None:
    """Hide a uniform 0-100 % share of the background tokens (the patches no object fills) from
    attention in a random MASKED_ROWS of the rows: attention_mask 0, positions unchanged, as pruning
    with `positions="keep"` does. Object tokens always stay, so the answers stay true for what the
    model sees. Trained only on whole images, the model read its answers from the background tokens
    the tower mixes object information into, and failed once they were pruned (of 80 colour and
    position questions, DivPrune kept every object in 78 and 45 were answered). Masking random tokens,
    objects included, taught it to guess counts upward whenever tokens were missing."""
    rng = np.random.default_rng([seed, start, 2])
    mask = batch["attention_mask"]
    for row, scene in enumerate(batch_scenes):
        if rng.random() >= MASKED_ROWS:
            continue
        image = (batch["input_ids"][row] == image_token_id).nonzero().flatten()
        background = np.setdiff1d(np.arange(len(image)), [o.token for o in scene.objects])
        hidden = rng.choice(background, round(rng.uniform(0.0, 1.0) * len(background)), replace=False)
        mask[row, image[torch.from_numpy(hidden).to(image.device)]] = 0


POSITION_EMBEDDING = "model.vision_tower.embeddings.position_embedding.weight"


def upsampled_positions(weight: torch.Tensor, factor: int) -> torch.Tensor:
    """CLIP position embeddings ([CLS] + side x side patches) for a grid `factor` times finer: every
    new patch starts from the embedding of the old patch it lies in."""
    side = math.isqrt(weight.shape[0] - 1)
    grid = weight[1:].view(side, side, -1)
    finer = grid.repeat_interleave(factor, 0).repeat_interleave(factor, 1)
    return torch.cat([weight[:1], finer.reshape(-1, weight.shape[1])])


def train_vlm(
    out: Path, steps: int = 10000, batch_size: int = 32, questions: int = 3, device: str = "cpu", log=print
) -> float:
    """Train the toy VLM into `out` (48 px scenes first, then the 96 px ones); returns its held-out
    accuracy."""
    torch.manual_seed(TRAIN_SEED)
    processor = models.vlm_processor()
    tokenizer = processor.tokenizer
    dense_steps = round(steps * VLM_DENSE_SHARE)
    # at 2e-3 the image features collapsed to a constant early and the model answered from priors;
    # 1e-3 learned slower than 5e-4
    lr = 5e-4
    dense_size = scenes.GRID * scenes.PATCH
    model = models.build_vlm(tokenizer, image_size=dense_size).to(device)
    log(f"stage 1: {dense_steps} steps on {dense_size} px scenes, one patch per cell")
    fit(
        model,
        lambda step: vlm_batch(tokenizer, TRAIN_SEED, step * batch_size, batch_size, device, questions, 1),
        Schedule(steps=dense_steps, lr=lr, warmup=200, checkpoint_every=steps),
        lambda: None,
        log,
    )
    dense = model.state_dict()
    model = models.build_vlm(tokenizer).to(device)
    dense[POSITION_EMBEDDING] = upsampled_positions(dense[POSITION_EMBEDDING], scenes.CELL_PATCHES)
    model.load_state_dict(dense)

    def save() -> None:
        model.save_pretrained(out)
        processor.save_pretrained(out)

    log(
        f"stage 2: {steps - dense_steps} steps on {scenes.IMAGE_SIZE} px scenes, background tokens partly masked"
    )
    first = dense_steps * batch_size  # stage 2 sees new scenes
    image_token_id = tokenizer.convert_tokens_to_ids(models.IMAGE_TOKEN)

    def sparse_batch(step: int) -> dict[str, torch.Tensor]:
        start = first + step * batch_size
        picked = scenes.samples(TRAIN_SEED, batch_size, start)
        batch = samples_batch(tokenizer, picked, TRAIN_SEED, start, device, questions)
        mask_image_tokens(batch, image_token_id, [s.scene for s in picked], TRAIN_SEED, start)
        return batch

    fit(
        model,
        sparse_batch,
        Schedule(steps=steps - dense_steps, lr=lr, warmup=100, checkpoint_every=500),
        save,
        log,
    )
    accuracy = held_out_accuracy(model, lambda i: vlm_batch(tokenizer, HELD_OUT_SEED, i * 100, 100, device))
    log(f"held-out accuracy (seed {HELD_OUT_SEED}, 400 questions): {accuracy:.4f}")
    return accuracy


def train_lm(out: Path, steps: int = 12000, tokens: int = 1024, device: str = "cpu", log=print) -> float:
    """Train the toy retrieval LM into `out` (a copy stage, then retrieval); returns its held-out
    answer-token accuracy at 512-1,024 tokens."""
    torch.manual_seed(TRAIN_SEED)
    tokenizer = models.lm_tokenizer()
    model = models.build_lm(tokenizer).to(device)
    rng = np.random.default_rng(TRAIN_SEED)
    copy_steps = min(LM_COPY_STEPS, steps // 2)

    def batch(step: int) -> dict[str, torch.Tensor]:
        if step < copy_steps:
            return copy_batch(tokenizer, rng, tokens, device)
        length = lm_length(step - copy_steps, steps - copy_steps, rng)
        return lm_batch(tokenizer, rng, length, max(tokens, length), device)

    def save() -> None:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    fit(model, batch, Schedule(steps=steps, lr=1e-3, warmup=200, checkpoint_every=250), save, log)
    held_out = np.random.default_rng(HELD_OUT_SEED)
    accuracy = held_out_accuracy(
        model, lambda i: lm_batch(tokenizer, held_out, 512 * (1 + i % 2), 2048, device)
    )
    log(f"held-out answer-token accuracy (seed {HELD_OUT_SEED}): {accuracy:.4f}")
    return accuracy


@torch.no_grad()
def held_out_accuracy(model, batch: Callable[[int], dict[str, torch.Tensor]], batches: int = 4) -> float:
    model.eval()
    return sum(answer_loss(model, batch(i))[1].item() for i in range(batches)) / batches


def vlm2_batch(
    tokenizer,
    seed: int,
    start: int,
    size: int,
    device,
    questions: int | None = 1,
    repeats: int = 1,
    distractors: bool = True,
) -> dict[str, torch.Tensor]:
    """`vlm_batch` over the cluttered scenes of `scenes2` (256 image tokens); `questions` None asks every
    distinct question about each image (`scenes2.all_questions`), its `where` and `total` turns
    `repeats` times (with `isolate_turns`, a repeat weighs that turn's loss as an extra copy would)."""
    picked = scenes2.samples(seed, size, start)
    turns = [
        weighted_turns(scenes2.all_questions(s, seed, index), repeats)
        if questions is None
        else [(s.question, s.answer), *scenes2.more_questions(s, seed, index, questions - 1)]
        for index, s in enumerate(picked, start)
    ]
    return {
        **_turn_rows(tokenizer, scenes2.SIDE**2, turns, device),
        "pixel_values": pixel_values(scenes2.render([s.scene for s in picked], device, distractors)),
    }


def weighted_turns(turns: list[tuple[str, str]], repeats: int) -> list[tuple[str, str]]:
    """`turns`, then `repeats` - 1 more copies of each `where` and `total` turn: every image has about 5
    `where` turns and one `total` among about 30, and these are the types the model learns last."""
    weak = [t for t in turns if scenes2.question_kind(t[0]) in ("where", "total")]
    return turns + weak * (repeats - 1)


# Rows of a toy-vlm-2 batch whose image tokens are partly hidden (see `mask_object_scenes`)
MASKED_ROWS_2 = 0.5


def mask_object_scenes(
    batch: dict[str, torch.Tensor],
    image_token_id: int,
    batch_scenes: list[scenes2.Scene],
    seed: int,
    start: int,
) -> None:
    """Hide image tokens from attention in a random MASKED_ROWS_2 of the rows, as pruning with
    `positions="keep"` does: background tokens with a uniform 0-100 % probability, object tokens with
    another, but never every token of an object, so the answers stay true for what the model sees."""
    rng = np.random.default_rng([seed, start, 2])
    mask = batch["attention_mask"]
    for row, scene in enumerate(batch_scenes):
        if rng.random() >= MASKED_ROWS_2:
            continue
        image = (batch["input_ids"][row] == image_token_id).nonzero().flatten()
        owned = scenes2.object_tokens(scene)
        hidden = rng.random(len(image)) < rng.uniform(0.0, 1.0)
        on_objects = np.concatenate(owned)
        hidden[on_objects] = rng.random(len(on_objects)) < rng.uniform(0.0, 1.0)
        for tokens in owned:
            hidden[rng.choice(tokens)] = False
        mask[row, image[torch.from_numpy(np.flatnonzero(hidden)).to(image.device)]] = 0


# Pruner-like rows of the last three toy-vlm-2 stages (see `sparse_object_scenes`)
SPARSE_ROWS = 0.5
SPARSE_KEEP = (6, 96)  # visible image tokens per sparse row, log-uniform between these
DIVERSE_FILL = 0.5  # of the sparse rows of a `diverse` stage


def _patch_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (patches, 3 * PATCH * PATCH), patches in the tower's row-major order."""
    patch = scenes2.PATCH
    channels, height, width = pixels.shape
    grid = pixels.reshape(channels, height // patch, patch, width // patch, patch)
    return grid.permute(1, 3, 0, 2, 4).reshape((height // patch) * (width // patch), -1)


def sparse_object_scenes(
    batch: dict[str, torch.Tensor],
    image_token_id: int,
    batch_scenes: list[scenes2.Scene],
    seed: int,
    start: int,
    diverse: bool = False,
) -> None:
    """Show only a few image tokens in a random SPARSE_ROWS of the rows, as a pruner at a small budget
    does: a number log-uniform in SPARSE_KEEP, made of one random token of every object, each other
    object token with a probability drawn per row, and random background tokens up to the number.
    `mask_object_scenes` hides a uniform share, so rows that keep a tenth of the image are rare there;
    trained on them, the model undercounted objects it saw one patch of and overcounted objects it saw
    all of. Rows not chosen keep the hiding of `mask_object_scenes` (called before).

    With `diverse`, DIVERSE_FILL of the sparse rows take the rest in farthest-point order over
    the patches' pixels instead: diversity pruners keep the most distinct patches, the noise blocks
    among them, far more often than random ones (DivPrune kept 13 of 26 there, random fills 3), and
    the model undercounted the objects among them."""
    rng = np.random.default_rng([seed, start, 3])
    mask = batch["attention_mask"]
    low, high = np.log(SPARSE_KEEP[0]), np.log(SPARSE_KEEP[1])
    for row, scene in enumerate(batch_scenes):
        if rng.random() >= SPARSE_ROWS:
            continue
        image = (batch["input_ids"][row] == image_token_id).nonzero().flatten()
        owned = scenes2.object_tokens(scene)
        keep = round(float(np.exp(rng.uniform(low, high))))
        visible = np.zeros(len(image), dtype=bool)
        for tokens in owned:
            visible[rng.choice(tokens)] = True
        on_objects = np.concatenate(owned)
        visible[on_objects] |= rng.random(len(on_objects)) < rng.uniform(0.0, 1.0)
        shown = int(visible.sum())
        missing = max(0, keep - shown)
        if diverse and rng.random() < DIVERSE_FILL:
            # the first shown + missing farthest points hold at least `missing` tokens not yet shown
            order = max_min_diverse(_patch_pixels(batch["pixel_values"][row]), shown + missing).numpy()
            visible[order[~visible[order]][:missing]] = True
        else:
            free = np.flatnonzero(~visible)
            visible[rng.choice(free, min(len(free), missing), replace=False)] = True
        mask[row, image] = torch.from_numpy(visible).to(mask.dtype).to(mask.device)


def isolate_turns(batch: dict[str, torch.Tensor], prefix: int, eos_token_id: int) -> None:
    """Let every question-answer turn after the first `prefix` tokens (`<s>` and the image) see only the
    prefix and itself, at the positions it would have as the first turn: a 4-D attention mask and
    position ids. Otherwise later turns can answer from earlier ones (the questions about an image name
    where its objects are)."""
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    length = ids.shape[1]
    ended = (ids == eos_token_id).long().cumsum(1)
    turn = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1) + 1
    turn[:, :prefix] = 0
    index = torch.arange(length, device=ids.device)
    starts = torch.full_like(turn, length)
    starts.scatter_reduce_(1, turn, index.expand_as(turn), reduce="amin")
    positions = torch.where(turn > 0, prefix + index - starts.gather(1, turn), index)
    causal = index[None, :, None] >= index[None, None, :]
    same_turn = (turn[:, :, None] == turn[:, None, :]) | (turn[:, None, :] == 0)
    batch["attention_mask"] = (causal & same_turn & mask[:, None, :])[:, None]
    batch["position_ids"] = positions


class VLM2Stage(NamedTuple):
    steps: int
    lr: float
    warmup: int
    questions: int | None  # per image; None: every distinct question, each turn seeing only the image
    repeats: int = 1  # times each `where` and `total` turn is asked (see `weighted_turns`)
    sparse: bool = False  # pruner-like rows (`sparse_object_scenes`)
    # the tower, projector and word embeddings (FROZEN) kept as they are: the image tokens, and so
    # every pre-LLM pruner's choice, stay those of the stage before
    frozen: bool = False
    distractors: bool = False  # scenes with their noise blocks (`scenes2.Distractor`)
    diverse: bool = False  # sparse rows also filled with the most distinct patches (`sparse_object_scenes`)


# toy-vlm-2 is fine-tuned from toy-vlm: trained from scratch at 256 image tokens, a step of 16 scenes
# took 3.6 s on a shared 2-core CPU and the loss had barely moved after 25 steps. Each stage runs on new
# scenes with a new cosine schedule: ten questions per image (held-out 38 % of first answers after 200
# steps and still after 700), then every distinct question about each image (about 30; 1.4x the tokens
# per row), each turn seeing only the image (`isolate_turns`; without it, 46 % after 200 more steps);
# stage 4 weighs up the `where` and `total` turns, still the weakest after stage 3. Stages 5-7 teach the
# model to read the few tokens pruners leave, first on the images stage 4 sees (frozen), then on scenes
# with distractors, then with diversity-filled rows (docs/reference-models.md has the measurements).
VLM2_STAGES = (
    VLM2Stage(700, 1e-3, 50, 10),
    VLM2Stage(700, 1e-3, 20, None),
    VLM2Stage(600, 5e-4, 20, None),
    VLM2Stage(4000, 5e-4, 50, None, repeats=3),
    VLM2Stage(1500, 3e-4, 50, None, repeats=3, sparse=True, frozen=True),
    VLM2Stage(2000, 5e-4, 50, None, repeats=3, sparse=True, distractors=True),
    VLM2Stage(2000, 3e-4, 50, None, repeats=3, sparse=True, distractors=True, diverse=True),
)
VLM2_STEPS = sum(stage.steps for stage in VLM2_STAGES)


FROZEN = (
    "model.vision_tower.",
    "model.multi_modal_projector.",
    "model.language_model.embed_tokens.",
)


def vlm2_start(tokenizer, device) -> torch.nn.Module:
    """toy-vlm-2 initialised from the committed toy-vlm: its tower's 8x8 position embeddings upsampled to
    16x16 (each of toy-vlm's 2x2-patch grid cells becomes a 4x4-patch region, which keeps the names
    a1-d4), and embeddings for the words toy-vlm lacks initialised at the mean of the others."""
    from tokenprune import zoo

    state = zoo.load_vlm("toy-vlm")[0].state_dict()
    state[POSITION_EMBEDDING] = upsampled_positions(state[POSITION_EMBEDDING], scenes2.SIDE // 8)
    for name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        old = state[name]
        extra = len(tokenizer) - old.shape[0]
        state[name] = torch.cat([old, old.mean(0, keepdim=True).expand(extra, -1)])
    model = models.build_vlm2(tokenizer).to(device)
    model.load_state_dict(state)
    return model


def train_vlm2(
    out: Path,
    steps: int = VLM2_STEPS,
    batch_size: int = 8,
    device: str = "cpu",
    log=print,
) -> float:
    """Fine-tune toy-vlm into toy-vlm-2 on `scenes2` into `out` (VLM2_STAGES, cut to `steps` in all);
    returns its held-out accuracy. Each earlier stage's result is kept in `out`/stage<n>, and a rerun
    starts from the latest one present."""
    torch.manual_seed(TRAIN_SEED)
    processor = models.vlm2_processor()
    tokenizer = processor.tokenizer
    image_token_id = tokenizer.convert_tokens_to_ids(models.IMAGE_TOKEN)

    def batches(first: int, stage: VLM2Stage) -> Callable[[int], dict[str, torch.Tensor]]:
        def batch(step: int) -> dict[str, torch.Tensor]:
            start = first + step * batch_size
            rows = vlm2_batch(
                tokenizer,
                TRAIN_SEED,
                start,
                batch_size,
                device,
                stage.questions,
                stage.repeats,
                stage.distractors,
            )
            picked = [s.scene for s in scenes2.samples(TRAIN_SEED, batch_size, start)]
            mask_object_scenes(rows, image_token_id, picked, TRAIN_SEED, start)
            if stage.sparse:
                sparse_object_scenes(rows, image_token_id, picked, TRAIN_SEED, start, stage.diverse)
            if stage.questions is None:
                isolate_turns(rows, 1 + scenes2.SIDE**2, tokenizer.eos_token_id)
            return rows

        return batch

    def saver(model, where: Path) -> Callable[[], None]:
        def save() -> None:
            model.save_pretrained(where)
            processor.save_pretrained(where)

        return save

    def stage_dir(number: int) -> Path:
        return out / f"stage{number}"

    # the latest earlier stage whose result a previous run left (the last stage always trains)
    resume = max(
        (n for n in range(1, len(VLM2_STAGES)) if (stage_dir(n) / "model.safetensors").exists()),
        default=0,
    )
    model, done = None, 0
    for number, stage in enumerate(VLM2_STAGES, 1):
        stage_steps = min(stage.steps, steps - done)
        if stage_steps <= 0:
            break
        last = done + stage_steps >= steps or number == len(VLM2_STAGES)
        where = out if last else stage_dir(number)
        if not last and number <= resume:
            if number == resume:
                from transformers import LlavaForConditionalGeneration

                log(f"stage {number}: starting from {where}")
                model = LlavaForConditionalGeneration.from_pretrained(where).to(device)
        else:
            model = vlm2_start(tokenizer, device) if model is None else model
            asked = (
                "ten questions per image"
                if stage.questions
                else f"every question about each image, alone, where/total x{stage.repeats}"
            )
            for flag in ("sparse", "frozen", "distractors", "diverse"):
                asked += f", {flag}" if getattr(stage, flag) else ""
            log(f"stage {number}: {stage_steps} steps at lr {stage.lr:g}, {asked}")
            model.train()
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(not (stage.frozen and name.startswith(FROZEN)))
            schedule = Schedule(steps=stage_steps, lr=stage.lr, warmup=stage.warmup, checkpoint_every=100)
            fit(model, batches(done * batch_size, stage), schedule, saver(model, where), log)
        done += stage_steps
    accuracy = held_out_accuracy(model, lambda i: vlm2_batch(tokenizer, HELD_OUT_SEED, i * 100, 100, device))
    log(f"held-out accuracy (seed {HELD_OUT_SEED}, 400 questions): {accuracy:.4f}")
    return accuracy
