"""Cluttered procedural scenes for `toy-vlm-2`, built so that pruners can be told apart.

A 192 px image is 16x16 patches of 12 px (256 visual tokens) and a 4x4 grid of regions (`a1` top left
to `d4`), each 4x4 patches. 4-7 objects (circle, square, triangle, cross in six bright colours, small
or large) lie in distinct regions, at random patch offsets: a small object fills one patch (as in
`scenes`), a large one 2x2. Every scene has look-alikes of one anchor object: one of the
same colour, one of the same shape. The background is two or three zones of different dark textures
(stripes at any angle, checkers, dots, noise) crossed by thin bright scribbles in object colours:
many of its patches are as distinct as the objects', so "most different" is not "most informative".

Questions need one object (`color_at`, `shape_at`: addressed by region; `where`: addressed by colour
and shape, among look-alikes) or the whole scene (`count` of a colour or shape, `total`).

Sample `index` of seed `seed` depends on (seed, index) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tokenprune.zoo import scenes

PATCH = scenes.PATCH  # toy-vlm-2 starts from toy-vlm's weights
SIDE = 16  # patches per image side
IMAGE_SIZE = SIDE * PATCH
GRID = 4  # regions per image side
REGION = IMAGE_SIZE // GRID
ROWS = "abcd"
POSITIONS = tuple(f"{r}{c + 1}" for r in ROWS for c in range(GRID))
COLOURS = scenes.COLOURS
SHAPES = scenes.SHAPES
SIZES = {"small": 1, "large": 2}  # side of the object's box in patches
TEXTURES = ("stripes", "checker", "dots", "noise")
QUESTION_TYPES = ("color_at", "shape_at", "where", "count", "total")
MIN_OBJECTS, MAX_OBJECTS = 4, 7
DISTRACTOR_SHARE = 0.7  # of the regions without an object that hold a distractor
DISTRACTOR_SIDE = 2  # patches
NOISE_CELL = 3  # px
# toy-vlm's words first, in its order, so its token ids carry over
WORDS = scenes.WORDS + ("objects",)


@dataclass(frozen=True)
class SceneObject:
    region: int
    colour: str
    shape: str
    size: str
    cx: int  # centre in px
    cy: int

    @property
    def position(self) -> str:
        return POSITIONS[self.region]

    @property
    def row(self) -> int:
        return self.region // GRID


@dataclass(frozen=True)
class Zone:
    texture: str
    dark: tuple[int, int, int]
    light: tuple[int, int, int]
    period: int
    angle: float


@dataclass(frozen=True)
class Distractor:
    """A block of DISTRACTOR_SIDE x DISTRACTOR_SIDE patches of random colours in NOISE_CELL px cells."""

    x: int  # top left corner in px
    y: int
    seed: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    zones: tuple[Zone, ...]
    split: tuple[float, float, float]  # zone boundary lines a*x + b*y = c (zones: sides of the lines)
    scribbles: tuple[tuple[int, int, int, int, str], ...]  # x0, y0, x1, y1, colour
    noise_seed: int
    distractors: tuple[Distractor, ...] = ()


@dataclass(frozen=True)
class Sample:
    scene: Scene
    question: str
    answer: str
    kind: str
    target: SceneObject | None  # the object the question is about (None for counts)

    @property
    def region(self) -> str | None:
        return None if self.target is None else f"row {ROWS[self.target.row]}"


def _object(rng: np.random.Generator, region: int, colour: str, shape: str) -> SceneObject:
    """An object whose box of `SIZES[size]` x `SIZES[size]` patches lies at a random patch offset in
    its region."""
    size = str(rng.choice(list(SIZES)))
    box = SIZES[size] * PATCH
    top, left = divmod(region, GRID)
    cx = left * REGION + int(rng.integers(0, GRID - SIZES[size] + 1)) * PATCH + box // 2
    cy = top * REGION + int(rng.integers(0, GRID - SIZES[size] + 1)) * PATCH + box // 2
    return SceneObject(region, colour, shape, size, cx, cy)


def _scene(rng: np.random.Generator) -> Scene:
    count = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    regions = rng.permutation(GRID * GRID)[:count]
    colours, shapes = list(COLOURS), list(SHAPES)
    anchor = (str(rng.choice(colours)), str(rng.choice(shapes)))
    kinds = [
        anchor,
        (anchor[0], str(rng.choice([s for s in shapes if s != anchor[1]]))),  # same colour
        (str(rng.choice([c for c in colours if c != anchor[0]])), anchor[1]),  # same shape
    ]
    while len(kinds) < count:
        kind = (str(rng.choice(colours)), str(rng.choice(shapes)))
        if kind != anchor:
            kinds.append(kind)
    objects = [_object(rng, int(r), c, s) for r, (c, s) in zip(regions, kinds)]
    zones = tuple(
        Zone(
            texture=str(rng.choice(TEXTURES)),
            dark=tuple(int(v) for v in rng.integers(0, 60, 3)),
            light=tuple(int(v) for v in rng.integers(50, 130, 3)),
            period=int(rng.integers(PATCH // 3, PATCH + 4)),
            angle=float(rng.uniform(0, np.pi)),
        )
        for _ in range(3)
    )
    angle = rng.uniform(0, np.pi)
    split = (float(np.cos(angle)), float(np.sin(angle)), float(rng.uniform(0.3, 0.7) * IMAGE_SIZE))
    scribbles = tuple(
        (*(int(v) for v in rng.integers(0, IMAGE_SIZE, 4)), str(rng.choice(colours)))
        for _ in range(int(rng.integers(2, 6)))
    )
    noise_seed = int(rng.integers(2**31))
    return Scene(
        objects=tuple(sorted(objects, key=lambda o: o.region)),
        zones=zones,
        split=split,
        scribbles=scribbles,
        noise_seed=noise_seed,
        distractors=_distractors(np.random.default_rng([noise_seed, 1]), {o.region for o in objects}),
    )


def _distractors(rng: np.random.Generator, taken: set[int]) -> tuple[Distractor, ...]:
    """Blocks of coloured noise in DISTRACTOR_SHARE of the regions no object is in, at random patch
    offsets: they differ from each other and from every object more than objects differ among
    themselves, and no question is about them. Drawn from their own generator, so the objects and
    questions of a (seed, index) are those of the scenes without them."""
    blocks = []
    for region in range(GRID * GRID):
        if region in taken or rng.random() >= DISTRACTOR_SHARE:
            continue
        top, left = divmod(region, GRID)
        x = left * REGION + int(rng.integers(0, GRID - DISTRACTOR_SIDE + 1)) * PATCH
        y = top * REGION + int(rng.integers(0, GRID - DISTRACTOR_SIDE + 1)) * PATCH
        blocks.append(Distractor(x, y, int(rng.integers(2**31))))
    return tuple(blocks)


def _anchor(scene: Scene) -> SceneObject:
    """The object whose colour and shape no other object has, with a look-alike of each kind."""
    pairs = [(o.colour, o.shape) for o in scene.objects]
    for o in scene.objects:
        unique = pairs.count((o.colour, o.shape)) == 1
        same_colour = any(p[0] == o.colour and p[1] != o.shape for p in pairs)
        same_shape = any(p[1] == o.shape and p[0] != o.colour for p in pairs)
        if unique and same_colour and same_shape:
            return o
    raise AssertionError("every scene has an anchor")


def _question(scene: Scene, kind: str, rng: np.random.Generator) -> tuple[str, str, SceneObject | None]:
    if kind in ("color_at", "shape_at"):
        target = scene.objects[int(rng.integers(len(scene.objects)))]
        if kind == "color_at":
            return f"what color is at {target.position} ?", target.colour, target
        return f"what shape is at {target.position} ?", target.shape, target
    if kind == "where":
        target = _anchor(scene)
        return f"where is the {target.colour} {target.shape} ?", target.position, target
    if kind == "count":
        attribute = str(rng.choice(list(COLOURS) + list(SHAPES)))
        count = sum(attribute in (o.colour, o.shape) for o in scene.objects)
        return f"how many {attribute} ?", str(count), None
    return "how many objects ?", str(len(scene.objects)), None


def question_kind(question: str) -> str:
    """The type (QUESTION_TYPES) of a question as `_question` and `all_questions` write it."""
    for prefix, kind in (
        ("what color is at ", "color_at"),
        ("what shape is at ", "shape_at"),
        ("where is the ", "where"),
        ("how many objects ?", "total"),
        ("how many ", "count"),
    ):
        if question.startswith(prefix):
            return kind
    raise ValueError(f"not a scenes2 question: {question!r}")


def sample(seed: int, index: int, kind: str | None = None) -> Sample:
    """Sample `index` of split `seed`; `kind` fixes the question type (default: QUESTION_TYPES in turn)."""
    rng = np.random.default_rng([seed, index])
    kind = QUESTION_TYPES[index % len(QUESTION_TYPES)] if kind is None else kind
    if kind not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {kind!r}; supported: {QUESTION_TYPES}")
    scene = _scene(rng)
    question, answer, target = _question(scene, kind, rng)
    return Sample(scene, question, answer, kind, target)


def samples(seed: int, count: int, start: int = 0) -> list[Sample]:
    return [sample(seed, i) for i in range(start, start + count)]


def more_questions(sample: Sample, seed: int, index: int, count: int) -> list[tuple[str, str]]:
    """`count` further (question, answer) pairs about the scene of sample `index` of split `seed`."""
    rng = np.random.default_rng([seed, index, 1])
    return [_question(sample.scene, str(rng.choice(QUESTION_TYPES)), rng)[:2] for _ in range(count)]


def all_questions(sample: Sample, seed: int, index: int) -> list[tuple[str, str]]:
    """Every distinct (question, answer) pair about the scene of sample `index` of split `seed`, in a
    random order, `sample`'s own first: `where` for every object no other shares colour and shape
    with, `count` for every colour and shape. Training asks them all about one rendered image."""
    scene = sample.scene
    pairs = [(o.colour, o.shape) for o in scene.objects]
    asked = [(f"what color is at {o.position} ?", o.colour) for o in scene.objects]
    asked += [(f"what shape is at {o.position} ?", o.shape) for o in scene.objects]
    asked += [
        (f"where is the {o.colour} {o.shape} ?", o.position)
        for o in scene.objects
        if pairs.count((o.colour, o.shape)) == 1
    ]
    asked += [
        (f"how many {a} ?", str(sum(a in (o.colour, o.shape) for o in scene.objects)))
        for a in (*COLOURS, *SHAPES)
    ]
    asked.append(("how many objects ?", str(len(scene.objects))))
    rest = [qa for qa in asked if qa[0] != sample.question]
    order = np.random.default_rng([seed, index, 1]).permutation(len(rest))
    return [(sample.question, sample.answer), *(rest[i] for i in order)]


def _grid(device) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.arange(IMAGE_SIZE, device=device, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def _texture(zone: Zone, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) texture of `zone`: a two-colour pattern, `noise` for the "noise" texture."""
    u = x * np.cos(zone.angle) + y * np.sin(zone.angle)
    v = -x * np.sin(zone.angle) + y * np.cos(zone.angle)
    if zone.texture == "stripes":
        t = (torch.floor(u / zone.period) % 2)[..., None]
    elif zone.texture == "checker":
        t = ((torch.floor(x / zone.period) + torch.floor(y / zone.period)) % 2)[..., None]
    elif zone.texture == "dots":
        du = (u % (2 * zone.period)) - zone.period
        dv = (v % (2 * zone.period)) - zone.period
        t = (du**2 + dv**2 <= (0.45 * zone.period) ** 2).float()[..., None]
    else:
        t = noise[..., None]
    dark = torch.tensor(zone.dark, device=x.device, dtype=torch.float32)
    light = torch.tensor(zone.light, device=x.device, dtype=torch.float32)
    return dark * (1 - t) + light * t


def _shape_mask(obj: SceneObject, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx, dy, r = x - obj.cx, y - obj.cy, SIZES[obj.size] * PATCH / 2 - 1
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        return (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r)
    if obj.shape == "triangle":
        return (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= (dy + r) * 0.55)
    arm = r / 3
    return ((dx.abs() <= r) & (dy.abs() <= arm)) | ((dy.abs() <= r) & (dx.abs() <= arm))


def _scribble_mask(x0, y0, x1, y1, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A line segment about 1.5 px wide."""
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1)
    t = (((x - x0) * dx + (y - y0) * dy) / length2).clamp(0, 1)
    return (x - (x0 + t * dx)) ** 2 + (y - (y0 + t * dy)) ** 2 <= 0.75**2


def _noise_block(distractor: Distractor, device) -> torch.Tensor:
    cells = DISTRACTOR_SIDE * PATCH // NOISE_CELL
    colours = np.random.default_rng(distractor.seed).integers(0, 256, (cells, cells, 3))
    block = torch.tensor(colours, device=device, dtype=torch.float32)
    return block.repeat_interleave(NOISE_CELL, 0).repeat_interleave(NOISE_CELL, 1)


def render(scenes: list[Scene], device: str | torch.device = "cpu", distractors: bool = True) -> torch.Tensor:
    """(B, 192, 192, 3) uint8 images; `distractors` False leaves the noise blocks out (the scenes the
    first training stages saw)."""
    x, y = _grid(device)
    images = []
    for scene in scenes:
        coarse = np.random.default_rng(scene.noise_seed).random((IMAGE_SIZE // 4, IMAGE_SIZE // 4))
        noise = torch.tensor(coarse > 0.5, device=device, dtype=torch.float32)
        noise = noise.repeat_interleave(4, 0).repeat_interleave(4, 1)
        a, b, c = scene.split
        side = (a * (x - IMAGE_SIZE / 2) + b * (y - IMAGE_SIZE / 2)) > c - IMAGE_SIZE / 2
        other = (b * (x - IMAGE_SIZE / 2) - a * (y - IMAGE_SIZE / 2)) > 0
        zone = torch.where(side, torch.where(other, 2, 1), 0)[..., None]
        image = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, 3, device=device)
        for index, z in enumerate(scene.zones):
            image = torch.where(zone == index, _texture(z, x, y, noise), image)
        for x0, y0, x1, y1, colour in scene.scribbles:
            image[_scribble_mask(x0, y0, x1, y1, x, y)] = torch.tensor(COLOURS[colour], device=device).float()
        side = DISTRACTOR_SIDE * PATCH
        for block in scene.distractors if distractors else ():
            image[block.y : block.y + side, block.x : block.x + side] = _noise_block(block, device)
        for obj in scene.objects:
            image[_shape_mask(obj, x, y)] = torch.tensor(COLOURS[obj.colour], device=device).float()
        images.append(image.clamp(0, 255).round().to(torch.uint8))
    return torch.stack(images)


def object_tokens(scene: Scene, min_cover: float = 0.1) -> list[np.ndarray]:
    """Per object, the indices (row-major, as the tower orders them) of the image tokens whose patch it
    covers at least `min_cover` of, and each one's share in the same order."""
    x, y = _grid("cpu")
    owned = []
    for obj in scene.objects:
        cover = _shape_mask(obj, x, y).float().view(SIDE, PATCH, SIDE, PATCH).mean(dim=(1, 3)).flatten()
        owned.append(torch.nonzero(cover >= min_cover).flatten().numpy())
    return owned


def to_pil(image: torch.Tensor):
    from PIL import Image

    return Image.fromarray(image.cpu().numpy())
