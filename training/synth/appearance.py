"""Appearance of synthetic scenes: garment regions from skinning weights, garment/skin/hair/surface materials.

A `Material` is a procedural albedo: a function of a 3D *texture coordinate* (metres) that returns linear
RGB albedo in [0, 1] (OpenCV channel order is applied only when images are written: everything here is
R, G, B). Texture coordinates are
- for bodies: the rest-pose (T-pose, beta = 0) position of the surface point, so patterns move with the
  skin and clothes do not "swim" when the person moves;
- for the room and boxes: (u, v, 0) metres in the face's own plane (v up on walls and box sides), so
  'tiles' and 'planks' lie flat on every face whatever its orientation.
Each material also has a near-infrared (850 nm) reflectance in [0, 1] for the depth sensor model
(`training.synth.depth_noise`): dark hair and some black fabrics return little light and drop out.

Garment regions come from the body model's skinning weights: each vertex belongs to the joint with the
largest weight (SMPL's convention: a joint's weights cover the segment it rotates, e.g. left_shoulder ->
upper arm), and a position along that bone (0 at the joint, 1 at the child joint) places sleeve, waist,
trouser and hair lines. Albedo is evaluated by a compiled kernel (numba, `albedo_of`); nothing is read from disk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from training.synth.rand import Choices, uniform

__all__ = [
    "Material", "PATTERNS", "REGION_NAMES", "SKIN", "HAIR", "TOP", "BOTTOM", "SHOES", "BodyRegions",
    "BodyAppearance", "body_regions", "sample_body_appearance", "sample_surface_material", "srgb_to_linear",
    "linear_to_srgb", "material_table", "albedo_of",
]

PATTERNS = ("solid", "stripes", "checker", "noise", "planks", "tiles")

# Garment regions (vertex labels); order = index into BodyAppearance.materials.
SKIN, HAIR, TOP, BOTTOM, SHOES = 0, 1, 2, 3, 4
REGION_NAMES = ("skin", "hair", "top", "bottom", "shoes")

# SMPL joint indices (model.body.SMPL_JOINT_NAMES order).
_PELVIS, _L_HIP, _R_HIP, _SPINE1, _L_KNEE, _R_KNEE, _SPINE2, _L_ANKLE, _R_ANKLE, _SPINE3 = range(10)
_L_FOOT, _R_FOOT, _NECK, _L_COLLAR, _R_COLLAR, _HEAD = 10, 11, 12, 13, 14, 15
_L_SHOULDER, _R_SHOULDER, _L_ELBOW, _R_ELBOW, _L_WRIST, _R_WRIST, _L_HAND, _R_HAND = range(16, 24)
# bone used to measure "how far along the limb": joint -> child joint
_BONE_CHILD = {_L_SHOULDER: _L_ELBOW, _R_SHOULDER: _R_ELBOW, _L_ELBOW: _L_WRIST, _R_ELBOW: _R_WRIST,
               _L_HIP: _L_KNEE, _R_HIP: _R_KNEE, _L_KNEE: _L_ANKLE, _R_KNEE: _R_ANKLE}

# Skin tones (sRGB 0..255, light to dark) and hair colours; sampled with interpolation / jitter.
_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 125], [198, 134, 90],
                        [160, 105, 65], [121, 80, 50], [90, 58, 38], [60, 40, 28]], dtype=np.float64)
_HAIR_COLORS = np.array([[20, 16, 14], [45, 30, 22], [85, 55, 35], [130, 90, 55], [190, 150, 95],
                         [150, 60, 30], [160, 160, 160], [230, 220, 200]], dtype=np.float64)
_HAIR_P = np.array([0.3, 0.25, 0.15, 0.08, 0.08, 0.04, 0.07, 0.03])
_HAIR_COLOR_PICK = Choices(range(len(_HAIR_COLORS)), _HAIR_P)
# Common garment colours (sRGB): black, greys, white, navy, denim, khaki, olive, burgundy, brown.
_GARMENT_COLORS = np.array([[22, 22, 24], [70, 70, 74], [140, 140, 140], [225, 225, 220], [30, 40, 80],
                            [60, 85, 130], [190, 170, 130], [85, 90, 50], [110, 25, 40], [100, 70, 45]],
                           dtype=np.float64)
_SHOE_COLOR_PICK = Choices([0, 1, 2, 3, 9])   # rows of _GARMENT_COLORS: black, greys, white, brown
_GARMENT_PATTERN_PICK = Choices(["stripes", "checker", "noise"], [0.45, 0.25, 0.3])
_SLEEVE_END_PICK = Choices([0.12, 0.45, 1.0, 1.9], [0.15, 0.4, 0.1, 0.35])     # along the arm
_TROUSER_END_PICK = Choices([0.35, 0.6, 1.1, 1.9], [0.15, 0.1, 0.1, 0.65])   # along the leg
_HAIR_STYLE_PICK = Choices(["bald", "short", "long"], [0.1, 0.6, 0.3])
# by joint index: the joints whose vertices fall to the bottom garment below the waist line
_TORSO_JOINT = np.zeros(256, bool)
_TORSO_JOINT[[_PELVIS, _SPINE1, _SPINE2, _SPINE3, _L_COLLAR, _R_COLLAR, _NECK]] = True


def _clip01(x: np.ndarray) -> np.ndarray:
    """np.clip(x, 0, 1) for the samplers' small arrays, without np.clip's ~3 us of per-call wrapping."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear [0, 1] (the standard piecewise curve); float64. Colours of a few values (the
    samplers' RGB triples) go through Python floats: the same C pow, a third of the numpy calls' cost."""
    c = _clip01(np.asarray(srgb, dtype=np.float64))
    if c.size <= 8:
        return np.array([v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c.ravel().tolist()],
                        np.float64).reshape(c.shape)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> sRGB [0, 1]; float32 in, float32 out."""
    c = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * np.float32(12.92),
                    np.float32(1.055) * np.power(c, np.float32(1 / 2.4)) - np.float32(0.055)).astype(np.float32)


@dataclass(frozen=True)
class Material:
    """Procedural albedo. color/color2: linear RGB in [0, 1]; pattern: one of PATTERNS;
    scale_m: pattern period (m); axis: unit 3-vector the stripes/planks run across; waves: (k, 4) rows
    (kx, ky, kz in rad/m, phase) for the 'noise' pattern; ir_reflectance: 850 nm reflectance in [0, 1]."""

    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: str = "solid"
    scale_m: float = 0.1
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    waves: tuple[tuple[float, float, float, float], ...] = ()
    ir_reflectance: float = 0.5

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"Material.pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not self.scale_m > 0:
            raise ValueError(f"Material.scale_m must be > 0 metres, got {self.scale_m}")
        if not 0.0 <= self.ir_reflectance <= 1.0:
            raise ValueError(f"Material.ir_reflectance must be in [0, 1], got {self.ir_reflectance}")

    def albedo(self, texcoord: np.ndarray) -> np.ndarray:
        """Texture coordinates (N, 3) metres -> linear RGB albedo (N, 3) float32 in [0, 1]."""
        table, waves = material_table([self])
        p = np.asarray(texcoord, dtype=np.float32).reshape(-1, 3)
        return albedo_of(table, waves, np.zeros(p.shape[0], np.int64), p)


# material_table columns: code, 1 / scale, color (3), color2 (3), axis (3), offset (3), wave start, wave count
_MAT_COLUMNS = 16


def material_table(materials: list[Material]) -> tuple[np.ndarray, np.ndarray]:
    """Materials as arrays for the compiled albedo: table (M, 16) float32, one row per material (pattern
    code = index in PATTERNS, 1 / scale_m, color, color2, axis, offset, first wave row, wave count), and
    waves (K, 4) float32, the 'noise' materials' wave rows one after another."""
    table = np.zeros((len(materials), _MAT_COLUMNS), np.float32)
    waves = []
    start = 0
    for i, m in enumerate(materials):
        w = np.asarray(m.waves, np.float32).reshape(-1, 4)
        table[i] = (PATTERNS.index(m.pattern), 1.0 / m.scale_m, *m.color, *m.color2, *m.axis, *m.offset, start, len(w))
        waves.append(w)
        start += len(w)
    return table, (np.concatenate(waves) if waves else np.zeros((0, 4), np.float32))


def albedo_of(table: np.ndarray, waves: np.ndarray, material: np.ndarray, texcoord: np.ndarray) -> np.ndarray:
    """Linear RGB albedo (N, 3) float32 of points with texture coordinates texcoord (N, 3) metres made of
    material[i] (rows of `material_table`). Patterns (period s = scale_m along `axis` or per coordinate,
    p = texcoord + offset): solid color; stripes color2 where frac(p.axis / s) < 0.5; checker color2 on odd
    cells of floor(p / s); noise: mean of sin(k . p + phase) over the waves, scaled by sqrt(k)/2 around 1/2,
    blends color -> color2; planks: per-plank brightness 0.75 + 0.5 h(plank) (h a hash in [0, 1)), grain
    1 - 0.25 (1/2 + 1/2 sin(40 t + 3 plank)), color2 joints where frac(t) < 0.03; tiles: color2 grout where
    frac(p_x / s) or frac(p_y / s) is within 0.04 of a tile edge. Compiled (numba); the waves' sines come
    from a table (`_kernels.wave`, within 3e-7 of sin)."""
    p = np.ascontiguousarray(texcoord, dtype=np.float32).reshape(-1, 3)
    out = np.empty((p.shape[0], 3), np.float32)
    if p.shape[0]:
        from training.synth import _kernels
        _kernels.albedo_kernel(np.ascontiguousarray(table, np.float32), np.ascontiguousarray(waves, np.float32),
                         np.ascontiguousarray(material, np.int64), p, out)
    return out


# ------------------------------------------------------------------------------------------ body regions
@dataclass(frozen=True)
class BodyRegions:
    """Per-vertex geometry that garment boundaries are drawn on (rest pose, beta = 0, body frame, metres).

    rest_vertices (V, 3); joint (V,) dominant skinning joint; along (V,) position along that joint's bone
    (0 at the joint, 1 at its child; 0 for joints without a tracked bone); arm (V,) arm coordinate
    (upper arm 0..1, forearm 1..2, hand 2+, -1 elsewhere); leg (V,) (thigh 0..1, shin 1..2, foot 2+, -1
    elsewhere); rest_joints (24, 3); head_top_y: highest head vertex y.
    """

    rest_vertices: np.ndarray
    rest_joints: np.ndarray
    joint: np.ndarray
    along: np.ndarray
    arm: np.ndarray
    leg: np.ndarray
    head_top_y: float


def body_regions(rest_vertices: np.ndarray, rest_joints: np.ndarray, weights: np.ndarray) -> BodyRegions:
    """Compute `BodyRegions` from a body model's rest vertices (V,3), joints (24,3) and weights (V,24)."""
    v = np.asarray(rest_vertices, dtype=np.float64)
    j = np.asarray(rest_joints, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or w.shape != (v.shape[0], 24) or j.shape != (24, 3):
        raise ValueError(f"body_regions needs vertices (V,3), joints (24,3), weights (V,24); "
                         f"got {v.shape}, {j.shape}, {w.shape}")
    joint = np.argmax(w, axis=1)
    along = np.zeros(len(v))
    for parent, child in _BONE_CHILD.items():
        sel = joint == parent
        bone = j[child] - j[parent]
        along[sel] = np.clip((v[sel] - j[parent]) @ bone / max(bone @ bone, 1e-9), 0.0, 1.0)
    arm = np.full(len(v), -1.0)
    leg = np.full(len(v), -1.0)
    for upper, lower, distal in ((_L_SHOULDER, _L_ELBOW, (_L_WRIST, _L_HAND)),
                                 (_R_SHOULDER, _R_ELBOW, (_R_WRIST, _R_HAND))):
        arm[joint == upper] = along[joint == upper]
        arm[joint == lower] = 1.0 + along[joint == lower]
        arm[np.isin(joint, distal)] = 2.5
    for upper, lower, distal in ((_L_HIP, _L_KNEE, (_L_ANKLE, _L_FOOT)), (_R_HIP, _R_KNEE, (_R_ANKLE, _R_FOOT))):
        leg[joint == upper] = along[joint == upper]
        leg[joint == lower] = 1.0 + along[joint == lower]
        leg[np.isin(joint, distal)] = 2.5
    head = joint == _HEAD
    head_top = float(v[head, 1].max()) if head.any() else float(j[_HEAD, 1] + 0.2)
    return BodyRegions(rest_vertices=v.astype(np.float32), rest_joints=j.astype(np.float32),
                       joint=joint.astype(np.int16), along=along.astype(np.float32),
                       arm=arm.astype(np.float32), leg=leg.astype(np.float32), head_top_y=head_top)


@dataclass(frozen=True)
class BodyAppearance:
    """One person's look: vertex_region (V,) int8 index into `materials` (SKIN, HAIR, TOP, BOTTOM, SHOES)."""

    vertex_region: np.ndarray
    materials: tuple[Material, ...]
    description: dict = field(default_factory=dict)


def _rand_srgb_color(rng: np.random.Generator, saturated_p: float = 0.45) -> np.ndarray:
    """A garment colour, linear RGB: a common neutral/denim colour or a random saturated one."""
    if rng.random() < saturated_p:
        h, s, v = rng.random(), uniform(rng, 0.35, 0.95), uniform(rng, 0.25, 0.95)
        i = int(h * 6) % 6
        f = h * 6 - int(h * 6)
        p_, q_, t_ = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
        rgb = [(v, t_, p_), (q_, v, p_), (p_, v, t_), (p_, q_, v), (t_, p_, v), (v, p_, q_)][i]
        srgb = np.array(rgb)
    else:
        srgb = _GARMENT_COLORS[rng.integers(len(_GARMENT_COLORS))] / 255.0
        srgb = srgb * uniform(rng, 0.85, 1.15) + rng.normal(0, 0.03, 3)
    return srgb_to_linear(_clip01(srgb))


def _random_waves(rng: np.random.Generator, k_lo: float, k_hi: float, n: int = 4) -> tuple:
    """n rows (kx, ky, kz, phase) of a 'noise' material: random directions scaled by a wave number drawn
    in [k_lo, k_hi) rad/m (per row, times a standard normal 3-vector), phases in [0, 6.3)."""
    rows = np.empty((n, 4))
    rows[:, :3] = rng.normal(size=(n, 3)) * rng.uniform(k_lo, k_hi, (n, 1))
    rows[:, 3] = rng.uniform(0, 6.3, n)
    return tuple(map(tuple, rows.tolist()))


def _garment_material(rng: np.random.Generator, pattern_p: float) -> Material:
    c1 = _rand_srgb_color(rng)
    pattern = "solid"
    if rng.random() < pattern_p:
        pattern = _GARMENT_PATTERN_PICK.draw(rng)
    c2 = _rand_srgb_color(rng) if rng.random() < 0.7 else _clip01(c1 * uniform(rng, 0.3, 0.7))
    axis = np.array([0.0, 1.0, 0.0]) if rng.random() < 0.7 else rng.normal(size=3)
    axis = axis / np.linalg.norm(axis)
    waves = _random_waves(rng, 8, 40)
    # 850 nm: most fabrics reflect well whatever their visible colour; a few black synthetics absorb.
    ir = float(uniform(rng, 0.03, 0.12) if rng.random() < 0.1 else uniform(rng, 0.3, 0.9))
    return Material(color=tuple(c1), color2=tuple(c2), pattern=pattern, scale_m=float(uniform(rng, 0.04, 0.2)),
                    axis=tuple(axis), offset=tuple(rng.uniform(-1, 1, 3)), waves=waves, ir_reflectance=ir)


def sample_body_appearance(rng: np.random.Generator, regions: BodyRegions, pattern_p: float = 0.45) -> BodyAppearance:
    """Random skin tone, hair, top (sleeve length), bottom (trouser length, waist line) and shoes."""
    # --- materials
    tone = uniform(rng, 0, len(_SKIN_TONES) - 1)
    i = int(tone)
    k = tone - i
    skin_srgb = (_SKIN_TONES[i] * (1 - k) + _SKIN_TONES[min(i + 1, len(_SKIN_TONES) - 1)] * k) / 255.0
    skin = srgb_to_linear(_clip01(skin_srgb * uniform(rng, 0.92, 1.05)))
    skin_mat = Material(color=tuple(skin), color2=tuple(skin * 0.85), pattern="noise", scale_m=0.1,
                        waves=tuple((float(a), float(b), float(c), float(d))
                                    for a, b, c, d in np.c_[rng.normal(size=(3, 3)) * 15, rng.uniform(0, 6.3, 3)]),
                        ir_reflectance=float(uniform(rng, 0.45, 0.65)))
    hair_srgb = _HAIR_COLORS[_HAIR_COLOR_PICK.draw(rng)] / 255.0
    hair = srgb_to_linear(_clip01(hair_srgb * uniform(rng, 0.85, 1.15)))
    hair_mat = Material(color=tuple(hair), color2=tuple(hair * 0.6), pattern="stripes", scale_m=0.008,
                        axis=(1.0, 0.0, 0.0), ir_reflectance=float(uniform(rng, 0.05, 0.35)))
    top_mat = _garment_material(rng, pattern_p)
    bottom_mat = _garment_material(rng, pattern_p * 0.6)
    shoe_srgb = _GARMENT_COLORS[_SHOE_COLOR_PICK.draw(rng)] / 255.0
    shoes_mat = Material(color=tuple(srgb_to_linear(shoe_srgb)), ir_reflectance=float(uniform(rng, 0.1, 0.6)))

    # --- region boundaries
    sleeve_end = _SLEEVE_END_PICK.draw(rng)
    trouser_end = _TROUSER_END_PICK.draw(rng)
    waist_k = float(uniform(rng, 0.2, 0.9))            # waist between pelvis (0) and spine1 (1) joints
    hair_style = _HAIR_STYLE_PICK.draw(rng)
    v, j, joint = regions.rest_vertices, regions.rest_joints, regions.joint

    region = np.full(len(v), TOP, dtype=np.int8)       # torso, collars, upper neck default to the top
    torso = _TORSO_JOINT[joint]
    waist_y = j[_PELVIS, 1] + waist_k * (j[_SPINE1, 1] - j[_PELVIS, 1])
    region[torso & (v[:, 1] < waist_y)] = BOTTOM
    region[(joint == _NECK) & (v[:, 1] > j[_NECK, 1] - 0.01)] = SKIN
    arm = regions.arm >= 0
    region[arm] = np.where(regions.arm[arm] < sleeve_end, TOP, SKIN)
    leg = regions.leg >= 0
    region[leg] = np.where(regions.leg[leg] < trouser_end, BOTTOM, SKIN)
    region[regions.leg >= 2.0] = SHOES
    head = joint == _HEAD
    region[head] = SKIN
    if hair_style != "bald":
        top_y = regions.head_top_y
        hy = j[_HEAD, 1]
        front = v[:, 2] > j[_HEAD, 2] + 0.03        # face side (+Z forward)
        line_front = hy + 0.62 * (top_y - hy)
        line_back = hy + (0.1 if hair_style == "short" else -0.05) * (top_y - hy)
        hair = head & np.where(front, v[:, 1] > line_front, v[:, 1] > line_back)
        if hair_style == "long":
            hair |= (joint == _NECK) & (v[:, 2] < j[_NECK, 2] - 0.01)
        region[hair] = HAIR
    description = dict(sleeve_end=sleeve_end, trouser_end=trouser_end, waist=waist_k, hair=hair_style,
                       top=top_mat.pattern, bottom=bottom_mat.pattern)
    return BodyAppearance(vertex_region=region,
                          materials=(skin_mat, hair_mat, top_mat, bottom_mat, shoes_mat), description=description)


# ------------------------------------------------------------------------------------------ surfaces
_SURFACE_KINDS = {
    # kind -> (patterns, weights)
    "floor": (("planks", "tiles", "noise", "solid", "checker"), (0.35, 0.25, 0.2, 0.1, 0.1)),
    "wall": (("solid", "noise", "stripes", "tiles", "planks"), (0.45, 0.25, 0.15, 0.1, 0.05)),
    "box": (("solid", "noise", "planks", "stripes", "checker"), (0.4, 0.2, 0.2, 0.1, 0.1)),
}


_SURFACE_PATTERN_PICKS = {kind: Choices(patterns, weights) for kind, (patterns, weights) in _SURFACE_KINDS.items()}


def sample_surface_material(rng: np.random.Generator, kind: str) -> Material:
    """Random material for a 'floor', 'wall' or 'box' (texture coordinates: (u, v, 0) metres in the face plane)."""
    if kind not in _SURFACE_KINDS:
        raise ValueError(f"surface kind must be one of {sorted(_SURFACE_KINDS)}, got {kind!r}")
    pattern = _SURFACE_PATTERN_PICKS[kind].draw(rng)
    if kind == "wall" and rng.random() < 0.6:        # painted walls: light, low saturation
        c1 = srgb_to_linear(_clip01(uniform(rng, 0.6, 0.95) + rng.normal(0, 0.04, 3)))
    elif pattern == "planks":                          # wood
        base = np.array([0.55, 0.38, 0.22]) * uniform(rng, 0.6, 1.5)
        c1 = srgb_to_linear(_clip01(base + rng.normal(0, 0.04, 3)))
    else:
        c1 = _rand_srgb_color(rng, saturated_p=0.35)
    c2 = _clip01(c1 * uniform(rng, 0.3, 0.8) + uniform(rng, 0, 0.1)) if rng.random() < 0.6 \
        else _rand_srgb_color(rng)
    axis = np.array([0.0, 1.0, 0.0]) if rng.random() < 0.5 else np.array([1.0, 0.0, 0.0])  # in the face plane
    scale = {"planks": uniform(rng, 0.1, 0.25), "tiles": uniform(rng, 0.2, 0.6), "stripes": uniform(rng, 0.05, 0.4),
             "checker": uniform(rng, 0.1, 0.5), "noise": uniform(rng, 0.2, 1.0), "solid": 1.0}[pattern]
    waves = _random_waves(rng, 2, 15)
    return Material(color=tuple(c1), color2=tuple(c2), pattern=pattern, scale_m=float(scale), axis=tuple(axis),
                    offset=tuple(rng.uniform(-2, 2, 3)), waves=waves, ir_reflectance=float(uniform(rng, 0.15, 0.9)))
