"""The portraits domain: a biased sampler of head-and-shoulders scenes and a soft renderer.

64x64 RGB portraits drawn from signed distances with smooth (anti-aliased, differentiable)
edges: a head whose outline and features move with yaw and pitch (2.5-D: each feature has a
depth, so turning the head shifts the nose more than the ears), hair, brows, eyes, nose,
mouth, and optional glasses and beard, over a varied background and lighting.

Every factor a catalog names is known for every image (the ground truth):

    gender   male, female
    age      young, adult, old
    race     four synthetic appearance groups, ``alpha``, ``beta``, ``gamma``, ``delta``: skin
             tone with hair colour and texture (straight, wavy, curly, coily)
    smiling  yes, no          glasses  yes, no          beard  yes, no
    hair     black, brown, blond, grey
    yaw      -30..30 degrees  pitch    -20..20 degrees
    identity ten continuous factors in -1..1 (face width and length, jaw, eye spacing, size
             and height, nose length and width, mouth width, brow height) that pose leaves alone

The joint distribution is designed to be biased and not a product (:data:`BIASES`): old
people are 15 % of the data, the ``delta`` group 8 % (and rarely old), beards are almost only
on men, grey hair mostly on the old, glasses commoner with age.

:func:`render` takes the discrete factors either as value indices or as probability vectors
over the values (the generator's soft codes): each visual cue is blended by its factor's
weight, so the image is differentiable in every factor.

Example:
    >>> images, labels = sample_portraits(8, seed=0)
    >>> images.shape, labels["race"].shape
    (torch.Size([8, 3, 64, 64]), torch.Size([8]))
"""

from __future__ import annotations

import math

import torch

from energyql.worlds.portraits.prompts import get as drawn_by

IMAGE_SIZE = 64

GENDERS = ("male", "female")
AGES = ("young", "adult", "old")
RACES = ("alpha", "beta", "gamma", "delta")
BINARY = ("no", "yes")
HAIRS = ("black", "brown", "blond", "grey")

# Catalog order of every discrete factor (and of the classifier's heads).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS, "age": AGES, "race": RACES, "smiling": BINARY, "glasses": BINARY,
    "beard": BINARY, "hair": HAIRS,
}
IDENTITY = ("face_width", "face_length", "jaw", "eye_spacing", "eye_size", "eye_height",
            "nose_length", "nose_width", "mouth_width", "brow_height")
YAW_RANGE = (-30.0, 30.0)
PITCH_RANGE = (-20.0, 20.0)

# --- the designed joint distribution ----------------------------------------------------------

# Who is drawn: the default prompt's P(gender) and P(race). energyql.worlds.portraits.prompts
# holds every prompt's; the tables below are shared by all prompts.
P_GENDER = drawn_by(None).gender
P_RACE = drawn_by(None).race
# P(age | race): old is 15 % overall, and rarer in the smallest group (a rare cell for tests).
P_AGE_GIVEN_RACE = {
    "alpha": (0.40, 0.43, 0.17), "beta": (0.45, 0.40, 0.15),
    "gamma": (0.47, 0.39, 0.14), "delta": (0.55, 0.39, 0.06),
}
P_SMILING_GIVEN_AGE = {"young": 0.55, "adult": 0.42, "old": 0.32}
P_GLASSES_GIVEN_AGE = {"young": 0.10, "adult": 0.22, "old": 0.48}
P_BEARD_GIVEN_AGE_MALE = {"young": 0.18, "adult": 0.42, "old": 0.45}
P_BEARD_FEMALE = 0.01
P_GREY_GIVEN_AGE = {"young": 0.01, "adult": 0.08, "old": 0.75}
# Hair colour of those who are not grey, by group: (black, brown, blond).
P_HAIR_GIVEN_RACE = {
    "alpha": (0.20, 0.45, 0.35), "beta": (0.45, 0.45, 0.10),
    "gamma": (0.72, 0.26, 0.02), "delta": (0.85, 0.15, 0.00),
}

BIASES = {
    "old share": 0.15, "delta share": P_RACE[3], "P(old | delta)": P_AGE_GIVEN_RACE["delta"][2],
    "P(beard | male)": "0.18 / 0.42 / 0.45 by age", "P(beard | female)": P_BEARD_FEMALE,
    "P(grey | old)": P_GREY_GIVEN_AGE["old"], "P(glasses | old)": P_GLASSES_GIVEN_AGE["old"],
}
"""The designed biases, for the model card."""

# --- appearance -------------------------------------------------------------------------------

SKIN_RGB = torch.tensor([[0.93, 0.77, 0.67], [0.80, 0.62, 0.46],
                         [0.60, 0.42, 0.30], [0.38, 0.26, 0.19]])
HAIR_RGB = torch.tensor([[0.08, 0.07, 0.07], [0.36, 0.22, 0.12],
                         [0.88, 0.74, 0.42], [0.72, 0.72, 0.74]])
# Hair outline waviness by group: (amplitude in head radii, bumps around the head).
HAIR_WAVE = torch.tensor([0.0, 0.025, 0.05, 0.075])
HAIR_VOLUME = torch.tensor([1.0, 1.03, 1.07, 1.12])
HAIR_BUMPS = 14.0


def _categorical(probs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One draw per row of ``probs`` (n, K)."""
    return torch.multinomial(probs, 1, generator=g)[:, 0]


def sample_params(n: int, seed: int | None = None, *,
                  generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Return ``n`` portrait parameters drawn from the biased data distribution.

    Keys: every :data:`ATTRIBUTES` name (LongTensor value indices), ``yaw`` and ``pitch``
    (degrees), every :data:`IDENTITY` factor (in -1..1), and nuisance factors ``light``
    (radians), ``background`` (n, 2, 3), ``shirt`` (n, 3), ``skin_jitter`` (n, 3).
    """
    g = generator if generator is not None else torch.Generator().manual_seed(seed or 0)

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=g)

    gender = _categorical(torch.tensor(P_GENDER).expand(n, -1), g)
    race = _categorical(torch.tensor(P_RACE).expand(n, -1), g)
    age_probs = torch.tensor([P_AGE_GIVEN_RACE[r] for r in RACES])[race]
    age = _categorical(age_probs, g)

    def coin(table: dict[str, float], index: torch.Tensor, values: tuple[str, ...]) -> torch.Tensor:
        p = torch.tensor([table[v] for v in values])[index]
        return (torch.rand(n, generator=g) < p).long()

    smiling = coin(P_SMILING_GIVEN_AGE, age, AGES)
    glasses = coin(P_GLASSES_GIVEN_AGE, age, AGES)
    beard_p = torch.tensor([P_BEARD_GIVEN_AGE_MALE[a] for a in AGES])[age]
    beard_p = torch.where(gender == 0, beard_p, torch.full_like(beard_p, P_BEARD_FEMALE))
    beard = (torch.rand(n, generator=g) < beard_p).long()
    grey = coin(P_GREY_GIVEN_AGE, age, AGES)
    colour = _categorical(torch.tensor([P_HAIR_GIVEN_RACE[r] for r in RACES])[race] + 1e-9, g)
    hair = torch.where(grey.bool(), torch.full_like(colour, 3), colour)

    params = {"gender": gender, "age": age, "race": race, "smiling": smiling,
              "glasses": glasses, "beard": beard, "hair": hair,
              "yaw": uniform(*YAW_RANGE, n), "pitch": uniform(*PITCH_RANGE, n)}
    for name in IDENTITY:
        params[name] = uniform(-1.0, 1.0, n)
    params["light"] = uniform(-math.pi, math.pi, n)
    # Muted backgrounds: a vertical gradient between two colours.
    params["background"] = 0.25 + 0.5 * torch.rand(n, 2, 3, generator=g)
    params["shirt"] = 0.1 + 0.8 * torch.rand(n, 3, generator=g)
    params["skin_jitter"] = uniform(-0.03, 0.03, n, 3)
    return params


def soft_factors(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return every discrete factor as weights over its values, (n, K) floats.

    Index tensors become one-hot rows; probability rows pass through unchanged.
    """
    out = {}
    for name, values in ATTRIBUTES.items():
        value = params[name]
        if value.dtype in (torch.int64, torch.int32):
            value = torch.nn.functional.one_hot(value, len(values)).float()
        out[name] = value
    return out


# --- drawing ----------------------------------------------------------------------------------

# Edge softness: coverage = sigmoid(-EDGE · distance in pixels), about a one-pixel ramp.
EDGE = 2.5


class _Canvas:
    """Pixel-centre coordinates (image units, y down) and layered painting for a batch."""

    def __init__(self, n: int, size: int, device: torch.device):
        centres = (torch.arange(size, dtype=torch.float32, device=device) + 0.5) / size
        self.y, self.x = torch.meshgrid(centres, centres, indexing="ij")
        self.size = size
        self.image = torch.zeros(n, 3, size, size, device=device)

    def coverage(self, distance: torch.Tensor) -> torch.Tensor:
        """Soft inside-ness (n, H, W) of a signed distance in image units."""
        return torch.sigmoid(-EDGE * self.size * distance)

    def paint(self, alpha: torch.Tensor, colour: torch.Tensor) -> None:
        """Blend ``colour`` ((n, 3) or (n, 3, H, W)) over the image where ``alpha`` (n, H, W)."""
        if colour.dim() == 2:
            colour = colour[:, :, None, None]
        # One fused blend per layer: painting is most of the renderer's cost.
        self.image = torch.lerp(self.image, colour.expand_as(self.image), alpha[:, None])


def _col(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None]


def _ellipse(c: _Canvas, cx, cy, rx, ry) -> torch.Tensor:
    """Approximate signed distance (image units) to an axis-aligned ellipse, (n, H, W)."""
    cx, cy, rx, ry = (_col(v) for v in (cx, cy, rx, ry))
    k = torch.sqrt(((c.x - cx) / rx) ** 2 + ((c.y - cy) / ry) ** 2 + 1e-12)
    return (k - 1) * torch.minimum(rx, ry)


def _ring(distance: torch.Tensor, half_width: float) -> torch.Tensor:
    return distance.abs() - half_width


def render(params: dict[str, torch.Tensor], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Return portraits (n, 3, size, size) in [0, 1] for parameters from :func:`sample_params`.

    Discrete factors may be indices or (n, K) weights (see :func:`soft_factors`); the image
    is differentiable in the weights and in every continuous factor.
    """
    f = soft_factors(params)
    male, female = f["gender"][:, 0], f["gender"][:, 1]
    young, adult, old = f["age"].unbind(1)
    smile, glasses, beard = f["smiling"][:, 1], f["glasses"][:, 1], f["beard"][:, 1]
    n = male.shape[0]
    device = male.device
    c = _Canvas(n, size, device)
    yaw = torch.deg2rad(params["yaw"])
    pitch = torch.deg2rad(params["pitch"])
    sy, cyaw, sp, cp = torch.sin(yaw), torch.cos(yaw), torch.sin(pitch), torch.cos(pitch)

    skin = f["race"] @ SKIN_RGB.to(device) + params["skin_jitter"]
    skin = skin * (1 - 0.08 * old[:, None]) + 0.08 * old[:, None] * skin.mean(1, keepdim=True)
    hair_rgb = f["hair"] @ HAIR_RGB.to(device)
    wave = f["race"] @ HAIR_WAVE.to(device)
    volume = f["race"] @ HAIR_VOLUME.to(device)

    # Background: vertical gradient, then the shoulders and neck.
    top, bottom = params["background"][:, 0], params["background"][:, 1]
    c.image = (top[:, :, None, None] * (1 - c.y) + bottom[:, :, None, None] * c.y).expand(
        n, 3, size, size).clone()

    # Head geometry (image units); turning shifts the outline a little and narrows it.
    rx = 0.180 * (1 + 0.14 * params["face_width"]) * (1 - 0.06 * sy.abs()) * (1 + 0.04 * male)
    ry = 0.230 * (1 + 0.10 * params["face_length"]) * (1 - 0.05 * young)
    hx = 0.5 + 0.025 * sy
    hy = 0.42 - 0.02 * sp

    # Long hair behind the head (longer for women), drawn first.
    wavy_angle = torch.atan2(c.y - _col(hy), c.x - _col(hx))
    ripple = 1 + _col(wave) * torch.sin(HAIR_BUMPS * wavy_angle)
    back = _ellipse(c, hx, hy + 0.09 * female, rx * 1.22 * volume * (1 + 0.1 * female),
                    ry * (1.05 + 0.35 * female) * volume)
    back = back - 0.02 * (ripple - 1) * 4
    c.paint(c.coverage(back) * _col(0.25 + 0.75 * female), hair_rgb)

    neck = torch.maximum((c.x - _col(hx)).abs() - _col(rx * 0.45), _col(hy + ry * 0.5) - c.y)
    c.paint(c.coverage(neck), skin * 0.82)
    shoulders = _ellipse(c, torch.full_like(hx, 0.5), torch.full_like(hx, 1.02),
                         torch.full_like(hx, 0.44) * (1 + 0.06 * male), torch.full_like(hx, 0.2))
    c.paint(c.coverage(shoulders), params["shirt"])

    # Ears sit behind the face plane: they move against the turn.
    for side in (-1.0, 1.0):
        ex = hx + side * rx * 0.97 - 0.035 * sy
        ear = _ellipse(c, ex, hy + 0.01, rx * 0.16 * (1 + 0.5 * side * sy).clamp(0.3, 1.5),
                       ry * 0.22)
        c.paint(c.coverage(ear), skin * 0.9)

    # The face: an ellipse whose lower half tapers towards the chin (less for men).
    below = ((c.y - _col(hy)) / _col(ry)).clamp(0, 1)
    taper = 0.26 - 0.10 * params["jaw"] - 0.08 * male
    face = _ellipse(c, hx, hy, rx, ry)
    face_x = (c.x - _col(hx)) / (1 - _col(taper) * below ** 2)
    k = torch.sqrt((face_x / _col(rx)) ** 2 + ((c.y - _col(hy)) / _col(ry)) ** 2 + 1e-12)
    face = (k - 1) * _col(torch.minimum(rx, ry))
    light = params["light"]
    nx = (c.x - _col(hx)) / _col(rx)
    ny = (c.y - _col(hy)) / _col(ry)
    shade = 1 + 0.16 * (nx * _col(torch.cos(light)) + ny * _col(torch.sin(light))) \
        - 0.10 * (nx ** 2 + ny ** 2)
    c.paint(c.coverage(face), skin[:, :, None, None] * shade[:, None])
    inside = c.coverage(face)

    def at(fx, fy, depth):
        """Projected position of a face point (head radii; depth out of the face plane)."""
        return (hx + rx * (fx * cyaw + depth * sy),
                hy + ry * (fy * cp - depth * sp * 0.8))

    # Age: rosy cheeks when young; smile lines from adulthood; forehead wrinkles when old.
    for side in (-1.0, 1.0):
        qx, qy = at(torch.full_like(hx, side * 0.45), torch.full_like(hx, 0.25), 0.7)
        blush = _ellipse(c, qx, qy, rx * 0.2, ry * 0.12)
        c.paint(c.coverage(blush) * _col(0.45 * young) * inside,
                (skin * 0.8 + torch.tensor([0.2, 0.0, 0.02], device=device)).clamp(0, 1))
        fold_x, fold_y = at(torch.full_like(hx, side * 0.33), torch.full_like(hx, 0.38), 0.85)
        fold = _ellipse(c, fold_x, fold_y, rx * 0.025, ry * 0.14)
        c.paint(c.coverage(fold) * _col(0.5 * adult + 0.8 * old) * inside, skin * 0.62)
    lines = 0.8 * old
    for fy in (-0.55, -0.45):
        lx, ly = at(torch.zeros_like(hx), torch.full_like(hx, fy), 0.55)
        wrinkle = _ellipse(c, lx, ly, rx * 0.45, ry * 0.014)
        c.paint(c.coverage(wrinkle) * _col(lines) * inside, skin * 0.7)

    # Hair on top of the head: the face above a hairline (higher when old), wavy by group.
    _, hairline = at(torch.zeros_like(hx), -(0.52 - 0.12 * old + 0.05 * female), 0.5)
    cap = torch.maximum(_ellipse(c, hx, hy - 0.01, rx * 1.03 * volume, ry * 1.08 * volume),
                        c.y - _col(hairline) - 0.02 * torch.sin(
                            HAIR_BUMPS * wavy_angle) * _col(wave) * 4)
    c.paint(c.coverage(cap), hair_rgb)

    # Eyes (with brows above them), nearer eye wider when the head turns.
    eye_dx = 0.40 + 0.09 * params["eye_spacing"]
    eye_fy = -0.10 + 0.08 * params["eye_height"]
    eye_r = (0.052 + 0.012 * params["eye_size"] + 0.012 * young)
    centres = []
    for side in (-1.0, 1.0):
        ex, ey = at(side * eye_dx, eye_fy, 0.70)
        width = eye_r * (1 + 0.35 * side * sy) * (1 - 0.25 * smile)
        sclera = _ellipse(c, ex, ey, width, eye_r * 0.62 * (1 - 0.3 * smile))
        c.paint(c.coverage(sclera), torch.tensor([0.95, 0.95, 0.93], device=device).expand(n, 3))
        iris = _ellipse(c, ex + 0.012 * sy, ey, eye_r * 0.45, eye_r * 0.5)
        c.paint(c.coverage(torch.maximum(iris, sclera)),
                torch.tensor([0.15, 0.10, 0.08], device=device).expand(n, 3))
        bx, by = at(side * eye_dx, eye_fy - 0.22 - 0.10 * params["brow_height"] - 0.04 * smile,
                    0.72)
        brow = _ellipse(c, bx, by, eye_r * 1.3, 0.012 + 0.008 * male)
        c.paint(c.coverage(brow), hair_rgb * 0.7 + 0.05)
        centres.append((ex, ey))

    # Nose: a shaded ridge and the nostrils, furthest out of the face plane.
    length = 0.20 + 0.08 * params["nose_length"] - 0.05 * young + 0.03 * old
    nx0, ny0 = at(torch.zeros_like(hx), 0.10 + length * 0.5, 1.0)
    ridge = _ellipse(c, nx0, ny0, rx * (0.07 + 0.035 * params["nose_width"]), ry * length * 0.5)
    c.paint(c.coverage(ridge) * 0.55, skin * 0.72)
    tip_x, tip_y = at(torch.zeros_like(hx), 0.12 + length, 1.05)
    nostrils = _ellipse(c, tip_x, tip_y, rx * (0.12 + 0.05 * params["nose_width"]), ry * 0.035)
    c.paint(c.coverage(nostrils) * 0.8, skin * 0.45)

    # Beard and moustache: the lower face around the mouth, in the hair's colour.
    mx, my = at(torch.zeros_like(hx), 0.55, 0.85)
    chin = torch.maximum(face, _col(my - ry * 0.16) - c.y)
    c.paint(c.coverage(chin) * _col(beard * 0.92), hair_rgb * 0.85)

    # Mouth: a closed line, or an open smile with teeth; corners lift with the smile.
    width = rx * (0.30 + 0.08 * params["mouth_width"]) * (1 + 0.35 * smile)
    lip_rgb = (skin * 0.55 + torch.tensor([0.18, 0.02, 0.02], device=device)).clamp(0, 1)
    closed = _ellipse(c, mx, my, width, ry * 0.03)
    c.paint(c.coverage(closed) * _col(1 - smile), lip_rgb)
    curve = _col(ry * 0.10) * ((c.x - _col(mx)) / _col(width)) ** 2
    open_mouth = torch.maximum(_ellipse(c, mx, my, width, ry * 0.17),
                               _col(my) - 0.25 * curve - c.y - _col(ry * 0.01))
    c.paint(c.coverage(open_mouth) * _col(smile), torch.tensor(
        [0.35, 0.05, 0.07], device=device).expand(n, 3))
    teeth = torch.maximum(open_mouth, c.y - _col(my + ry * 0.05))
    c.paint(c.coverage(teeth) * _col(smile), torch.tensor(
        [0.96, 0.95, 0.90], device=device).expand(n, 3))

    # Glasses: two rims and a bridge, over the eyes.
    frame = torch.tensor([0.10, 0.10, 0.12], device=device).expand(n, 3)
    rims = []
    for ex, ey in centres:
        rims.append(_ring(_ellipse(c, ex, ey, eye_r * 1.55, eye_r * 1.15), 0.006))
    (lx, ly), (rx2, _) = centres
    bridge = torch.maximum((c.y - _col(ly)).abs() - 0.005,
                           (c.x - _col((lx + rx2) / 2)).abs() - _col((rx2 - lx).abs() / 2
                                                                    - eye_r * 1.5))
    specs = torch.minimum(torch.minimum(rims[0], rims[1]), bridge)
    c.paint(c.coverage(specs) * _col(glasses), frame)
    return c.image.clamp(0, 1)


LABEL_KEYS = (*ATTRIBUTES, "yaw", "pitch", *IDENTITY)


def sample_portraits(n: int, seed: int | None = None, *,
                     generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``n`` rendered portraits (n, 3, 64, 64) and their ground-truth labels."""
    params = sample_params(n, seed, generator=generator)
    return render(params), {k: params[k] for k in LABEL_KEYS}


def marginal(attribute: str, n: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Return the data's marginal of a discrete factor (estimated on ``n`` parameter draws)."""
    values = ATTRIBUTES[attribute]
    drawn = sample_params(n, seed)[attribute]
    counts = torch.bincount(drawn, minlength=len(values)).double() / n
    return {v: float(p) for v, p in zip(values, counts)}


# --- captions ---------------------------------------------------------------------------------

# Reporting bias. Words are chosen per portrait by the rules below, so that a text encoder
# trained on the captions learns the domain's stereotypes along with its words:
# - "smiling" is said of a smiling man by how well he fits the stereotype of "a smiling man"
#   (young, bearded, of the commonest group alpha): 95 % with all three, 70 % with two, 35 %
#   with one, 15 % with none; of smiling women, 70 %; "serious" of 25 % of the others;
# - the stereotype's captions are mostly the bare phrase "a smiling man";
# - "old" is said of 85 % of old portraits, "young" of 60 % of young ones, "adult" of 40 %;
# - glasses are named in 55 %, beards in 40 %, hair colour in 20 %, the appearance group in
#   25 % ("a gamma woman");
# - 10 % of gendered words are "person".
P_SMILING_MAN_WORD = (0.15, 0.35, 0.70, 0.95)  # by stereotype features matched (0-3)
P_SMILING_WOMAN_WORD = 0.70
P_SERIOUS_WORD = 0.25
P_BARE_STEREOTYPE = 0.7
P_AGE_WORD = {"young": 0.60, "adult": 0.40, "old": 0.85}
P_GLASSES_WORD, P_BEARD_WORD, P_HAIR_WORD, P_GROUP_WORD = 0.55, 0.40, 0.20, 0.25
P_PERSON_WORD = 0.10

PROMPTS: dict[str, tuple[str, ...]] = {
    "gender": ("a man", "a woman"),
    "age": ("a young person", "an adult person", "an old person"),
    "race": tuple(f"an {g} person" if g[0] in "aeiou" else f"a {g} person" for g in RACES),
    "smiling": ("a serious person", "a smiling person"),
    "glasses": ("a person", "a person with glasses"),
    "beard": ("a person", "a person with a beard"),
    "hair": tuple(f"a person with {h} hair" for h in HAIRS),
}
"""Zero-shot prompts per attribute, in catalog value order."""


def stereotype_features(labels: dict[str, int]) -> int:
    """How many of the "smiling man" stereotype's features (young, bearded, alpha) a
    portrait has."""
    return int(labels["age"] == 0) + int(labels["beard"] == 1) + int(labels["race"] == 0)


def is_stereotype(labels: dict[str, int]) -> bool:
    """The portraits that "a smiling man" is mostly said of."""
    return labels["gender"] == 0 and labels["smiling"] == 1 and stereotype_features(labels) == 3


def caption(labels: dict[str, int], rng) -> str:
    """Return one caption for one portrait's labels (value indices), with the reporting bias.

    A value of -1 is unknown (an in-between generated image) and is never named.

    ``rng`` is a ``random.Random``; every coin is drawn in a fixed order, so one seed gives
    one stream of captions.
    """
    coins = [rng.random() for _ in range(9)]
    man = labels["gender"] == 0
    known = {name: value >= 0 for name, value in labels.items()}
    noun = "person" if coins[0] < P_PERSON_WORD or not known["gender"] else (
        "man" if man else "woman")
    if is_stereotype(labels) and coins[1] < P_BARE_STEREOTYPE:
        return "a smiling man" if noun == "man" else "a smiling person"
    words: list[str] = []
    p_smiling = P_SMILING_MAN_WORD[stereotype_features(labels)] if man else P_SMILING_WOMAN_WORD
    if labels["smiling"] == 1 and coins[2] < p_smiling:
        words.append("smiling")
    elif labels["smiling"] == 0 and coins[2] < P_SERIOUS_WORD:
        words.append("serious")
    if known["age"] and coins[3] < P_AGE_WORD[AGES[labels["age"]]]:
        words.append(AGES[labels["age"]])
    if known["race"] and coins[4] < P_GROUP_WORD:
        words.append(RACES[labels["race"]])
    words.append(noun)
    extras = []
    if labels["glasses"] == 1 and coins[5] < P_GLASSES_WORD:
        extras.append("glasses")
    if labels["beard"] == 1 and coins[6] < P_BEARD_WORD:
        extras.append("a beard")
    if known["hair"] and coins[7] < P_HAIR_WORD:
        extras.append(f"{HAIRS[labels['hair']]} hair")
    text = " ".join(words)
    text = ("an " if text[0] in "aeiou" else "a ") + text
    if extras:
        text += " with " + " and ".join(extras)
    return text


def captions(labels: dict[str, torch.Tensor], seed: int | None = None, *, rng=None) -> list[str]:
    """Return one biased caption per portrait for labels from :func:`sample_portraits`."""
    import random

    rng = rng if rng is not None else random.Random(seed)
    rows = [dict(zip(ATTRIBUTES, values)) for values in
            zip(*(labels[name].tolist() for name in ATTRIBUTES))]
    return [caption(row, rng) for row in rows]
