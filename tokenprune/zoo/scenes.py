"""Procedural scenes (shapes of several colours and kinds on a 4x4 grid over varied backgrounds) and
questions whose answers live in specific image regions.

A grid cell is 2x2 patches and its object fills one of them, at random: most patches show only
background, as in natural images, so a pruner can drop three quarters of the image and keep every
object, and the model must find an object's cell from whichever patch holds it.

Sample `index` of seed `seed` depends on (seed, index) alone, so any split can be regenerated or read
in any order. Rendering is batched torch code so training can draw scenes on the device it runs on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GRID = 4
PATCH = 12  # the vision tower's patch size
CELL_PATCHES = 2  # a grid cell is 2x2 patches; its object is centred on one of them
CELL = CELL_PATCHES * PATCH
IMAGE_SIZE = GRID * CELL
ROWS = "abcd"  # row a is the top of the image
POSITIONS = tuple(f"{r}{c + 1}" for r in ROWS for c in range(GRID))
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 250),
    "yellow": (235, 220, 40),
    "purple": (170, 60, 210),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square", "triangle", "cross")
BACKGROUNDS = ("solid", "gradient", "noise")
QUESTION_TYPES = ("color_at", "shape_at", "where", "count", "top_row")
MAX_COUNT = 8
# every word a question or answer uses, for the toy tokenizer
WORDS = (
    ("what", "color", "shape", "is", "at", "where", "the", "how", "many", "in", "top", "row", "?")
    + tuple(COLOURS)
    + SHAPES
    + POSITIONS
    + tuple(str(n) for n in range(MAX_COUNT + 1))
)


@dataclass(frozen=True)
class SceneObject:
    row: int
    col: int
    colour: str
    shape: str
    dx: int
    dy: int
    radius: int

    @property
    def position(self) -> str:
        return POSITIONS[self.row * GRID + self.col]

    @property
    def patch(self) -> tuple[int, int]:
        """(row, column) of the patch the object fills in the model's images (an 8x8 patch grid)."""
        return self.row * CELL_PATCHES + (self.dy > 0), self.col * CELL_PATCHES + (self.dx > 0)

    @property
    def token(self) -> int:
        """Index of that patch among the image's tokens (row-major, as the vision tower orders them)."""
        row, col = self.patch
        return row * GRID * CELL_PATCHES + col


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    base: tuple[int, int, int]
    second: tuple[int, int, int]
    noise_seed: int


@dataclass(frozen=True)
class Sample:
    scene: Scene
    question: str
    answer: str
    kind: str
    target: SceneObject | None  # the object the question is about (None for counts)

    @property
    def region(self) -> str | None:
        """The image row the answer lies in ("row a" is the top), or None for counts."""
        return None if self.target is None else f"row {ROWS[self.target.row]}"


def _scene(rng: np.random.Generator, top_row_objects: int | None = None) -> Scene:
    count = int(rng.integers(2, 6))
    cells = rng.permutation(GRID * GRID)
    if top_row_objects is not None:
        top = rng.permutation(GRID)[:top_row_objects]
        rest = rng.permutation(np.arange(GRID, GRID * GRID))[: max(count - top_row_objects, 1)]
        cells = np.concatenate([top, rest])
    objects = tuple(
        SceneObject(
            row=int(cell) // GRID,
            col=int(cell) % GRID,
            colour=str(rng.choice(list(COLOURS))),
            shape=str(rng.choice(SHAPES)),
            dx=int(rng.choice((-1, 1))) * PATCH // 2,  # the centre of one of the cell's 2x2 patches
            dy=int(rng.choice((-1, 1))) * PATCH // 2,
            radius=int(rng.integers(4, 6)),
        )
        for cell in sorted(cells[:count] if top_row_objects is None else cells)
    )
    return Scene(
        objects=objects,
        background=str(rng.choice(BACKGROUNDS)),
        base=tuple(int(v) for v in rng.integers(0, 70, 3)),
        second=tuple(int(v) for v in rng.integers(0, 70, 3)),
        noise_seed=int(rng.integers(2**31)),
    )


def sample(seed: int, index: int, kind: str | None = None) -> Sample:
    """Sample `index` of the split `seed`; `kind` fixes the question type (default: cycles through
    QUESTION_TYPES so every type is equally frequent)."""
    rng = np.random.default_rng([seed, index])
    kind = QUESTION_TYPES[index % len(QUESTION_TYPES)] if kind is None else kind
    if kind not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {kind!r}; supported: {QUESTION_TYPES}")
    if kind == "top_row":
        scene = _scene(rng, top_row_objects=1)
    else:
        scene = _scene(rng)
        while kind == "where" and not _unique_objects(scene):
            scene = _scene(rng)
    question, answer, target = _question(scene, kind, rng)
    return Sample(scene, question, answer, kind, target)


def _question(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[str, str, SceneObject | None]:
    """A question of `kind` about `scene`, its answer and the object it is about (None for counts);
    `kind` must be askable (see `askable`)."""
    if kind == "top_row":
        target = next(o for o in scene.objects if o.row == 0)
        attribute = str(rng.choice(["color", "shape"]))
        answer = target.colour if attribute == "color" else target.shape
        return f"what {attribute} is in the top row ?", answer, target
    if kind in ("color_at", "shape_at"):
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        if kind == "color_at":
            return f"what color is at {target.position} ?", target.colour, target
        return f"what shape is at {target.position} ?", target.shape, target
    if kind == "where":
        unique = _unique_objects(scene)
        target = unique[int(rng.integers(len(unique)))]
        return f"where is the {target.colour} {target.shape} ?", target.position, target
    attribute = str(rng.choice(list(COLOURS) + list(SHAPES)))
    count = sum(attribute in (o.colour, o.shape) for o in scene.objects)
    return f"how many {attribute} ?", str(count), None


def askable(scene: Scene) -> tuple[str, ...]:
    """Question types with a unique answer on `scene`."""
    top_row = sum(o.row == 0 for o in scene.objects) == 1
    return tuple(
        kind
        for kind in QUESTION_TYPES
        if (kind != "top_row" or top_row) and (kind != "where" or _unique_objects(scene))
    )


def more_questions(sample: Sample, seed: int, index: int, count: int) -> list[tuple[str, str]]:
    """`count` further (question, answer) pairs about the scene of sample `index` of split `seed`, of
    askable types drawn uniformly: training asks several questions per rendered image."""
    rng = np.random.default_rng([seed, index, 1])
    kinds = askable(sample.scene)
    return [_question(sample.scene, str(rng.choice(kinds)), rng)[:2] for _ in range(count)]


def _unique_objects(scene: Scene) -> list[SceneObject]:
    """Objects no other object shares both colour and shape with."""
    pairs = [(o.colour, o.shape) for o in scene.objects]
    return [o for o in scene.objects if pairs.count((o.colour, o.shape)) == 1]


def samples(seed: int, count: int, start: int = 0) -> list[Sample]:
    return [sample(seed, i) for i in range(start, start + count)]


def render(
    scenes: list[Scene], device: str | torch.device = "cpu", cell_patches: int = CELL_PATCHES
) -> torch.Tensor:
    """(B, size, size, 3) uint8 images, size = GRID * cell_patches * PATCH. `cell_patches` 2 gives the
    model's 96 px images; 1 gives 48 px images whose cells are single patches with the object at
    their centre (the first stage of training)."""
    if cell_patches not in (1, CELL_PATCHES):
        raise ValueError(f"cell_patches must be 1 or {CELL_PATCHES}, got {cell_patches}")
    cell = cell_patches * PATCH
    size = GRID * cell
    shifted = cell_patches > 1  # single-patch cells keep their object centred
    y, x = torch.meshgrid(
        torch.arange(size, device=device, dtype=torch.float32),
        torch.arange(size, device=device, dtype=torch.float32),
        indexing="ij",
    )
    images = []
    for scene in scenes:
        base = torch.tensor(scene.base, device=device, dtype=torch.float32)
        if scene.background == "solid":
            image = base.expand(size, size, 3).clone()
        elif scene.background == "gradient":
            second = torch.tensor(scene.second, device=device, dtype=torch.float32)
            t = (x / (size - 1))[..., None]
            image = base * (1 - t) + second * t
        else:
            noise = np.random.default_rng(scene.noise_seed).normal(0.0, 14.0, (size // 4, size // 4, 3))
            coarse = torch.tensor(noise, device=device, dtype=torch.float32)
            image = base + coarse.repeat_interleave(4, 0).repeat_interleave(4, 1)
        for obj in scene.objects:
            cx = obj.col * cell + cell / 2 + shifted * obj.dx
            cy = obj.row * cell + cell / 2 + shifted * obj.dy
            mask = _shape_mask(obj.shape, x - cx, y - cy, float(obj.radius))
            image[mask] = torch.tensor(COLOURS[obj.colour], device=device, dtype=torch.float32)
        images.append(image.clamp(0, 255).round().to(torch.uint8))
    return torch.stack(images)


def _shape_mask(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r)
    if shape == "triangle":
        return (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) * 0.55)
    arm = r / 3
    return ((dx.abs() <= r) & (dy.abs() <= arm)) | ((dy.abs() <= r) & (dx.abs() <= arm))


def to_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.cpu().numpy())
