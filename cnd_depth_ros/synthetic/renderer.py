"""Render a scene exactly for a rectified stereo rig: images, depth and normals by ray casting.

Each view casts its own rays from its own optical centre (one per pixel centre), so occlusions,
depth and normals are exact for both views; nothing is warped. Shading is Lambertian (sun with
cast shadows, sky light, point lamps, emission), a function of the surface point alone, so a
point looks the same from both cameras. Fog fades radiance towards the sky light by depth along
the optical axis, which the two views of a rectified rig share, so it keeps that true. The one
exception is on purpose: glossy materials add a specular highlight that depends on where the
camera is, as on real glossy surfaces. The camera's own effects (vignetting, blur, gain, noise:
:mod:`~cnd_depth_ros.synthetic.sensor`) act on the images afterwards, never on the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnd_depth_ros.camera import PinholeCamera
from cnd_depth_ros.synthetic.raycast import cast_camera_rays, shade_points, shadowed
from cnd_depth_ros.synthetic.scene import CameraPose, Scene
from cnd_depth_ros.synthetic.textures import TextureBank

__all__ = ["RenderedView", "StereoRendering", "render_stereo", "render_view"]

#: Shadow rays start this far off the surface (metres), so they do not hit it again.
_SHADOW_OFFSET = 1e-4
#: Mean linear brightness that an exposure of 1 maps the image to.
_EXPOSURE_KEY = 0.2
#: Lamps light like a point outside this radius (metres) and stay finite within it.
_LAMP_RADIUS = 0.3


@dataclass(frozen=True)
class RenderedView:
    """One view before exposure: linear ``radiance`` (H x W x 3), ``depth`` along the optical
    axis (metres, inf on sky) and ``normals`` in this camera's optical frame (NaN on sky)."""

    radiance: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class StereoRendering:
    """A rectified pair as 8-bit RGB, with both depths and the left normals (float32)."""

    left: np.ndarray
    right: np.ndarray
    depth: np.ndarray
    right_depth: np.ndarray
    normals: np.ndarray


def _pixel_directions(camera: PinholeCamera, rotation: np.ndarray) -> np.ndarray:
    """World directions through every pixel centre, scaled to unit length along the optical axis
    (so a ray's parameter is the depth of the point it reaches)."""
    u = (np.arange(camera.width) - camera.cx) / camera.fx
    v = (np.arange(camera.height) - camera.cy) / camera.fy
    local = np.empty((camera.height, camera.width, 3))
    local[..., 0] = u[None, :]
    local[..., 1] = v[:, None]
    local[..., 2] = 1.0
    return local @ rotation.T


def _sky_radiance(scene: Scene, bank: TextureBank, directions: np.ndarray) -> np.ndarray:
    """Sky colour from direction alone: a gradient by elevation and a cloud layer projected
    onto a plane above the camera."""
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    up = np.clip(-unit[:, 1], 0.0, 1.0)[:, None]
    sky = scene.sky
    colour = sky.horizon + (sky.zenith - sky.horizon) * np.sqrt(up)
    height = np.maximum(up[:, 0], 0.05)
    cloud_u = unit[:, 0] / height * bank.size * 0.5
    cloud_v = unit[:, 2] / height * bank.size * 0.5
    texture = np.full(len(unit), sky.cloud_texture)
    clouds = bank.sample(texture, cloud_u, cloud_v, np.full(len(unit), 1.0)).mean(axis=1)
    cover = sky.clouds * np.clip(clouds * 2.5 - 0.5, 0.0, 1.0)[:, None] * np.sqrt(up)
    return colour * (1.0 - cover) + cover * 0.9


def _lamp_light(points: np.ndarray, normals: np.ndarray, lamp: np.ndarray) -> np.ndarray:
    """Lambertian irradiance from a unit point light at ``lamp``, falling off with the squared
    distance (softened within ``_LAMP_RADIUS``, where a real lamp is no point)."""
    to_lamp = lamp - points
    squared = np.einsum("ni,ni->n", to_lamp, to_lamp)
    facing = np.einsum("ni,ni->n", normals, to_lamp) / np.sqrt(squared)
    return np.clip(facing, 0.0, None) / (squared + _LAMP_RADIUS**2)


def _highlights(
    scene: Scene,
    material_ids: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    sun: np.ndarray,
    eye: np.ndarray,
) -> np.ndarray:
    """Blinn-Phong highlights of the sun (where it is not shadowed) and the lamps, seen from
    ``eye``: the view-dependent part of the radiance, 0 on matte materials."""
    materials, lighting = scene.materials, scene.lighting
    assert materials.specular is not None and materials.shininess is not None
    highlight = np.zeros_like(points)
    glossy = np.flatnonzero(materials.specular[material_ids] > 0.0)
    if glossy.size == 0:
        return highlight
    ids, at, facing = material_ids[glossy], points[glossy], normals[glossy]
    to_eye = eye - at
    to_eye /= np.linalg.norm(to_eye, axis=1, keepdims=True)
    strength = materials.specular[ids, None]
    exponent = materials.shininess[ids]

    def lobe(to_light: np.ndarray) -> np.ndarray:
        half = to_light + to_eye
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
        return np.clip(np.einsum("ni,ni->n", facing, half), 0.0, None) ** exponent

    sun_seen = (sun[glossy] > 0.0) * lobe(np.broadcast_to(lighting.to_sun, at.shape))
    light = sun_seen[:, None] * lighting.sun_colour
    for lamp, colour in zip(lighting.lamps, lighting.lamp_colours, strict=True):
        to_lamp = lamp - at
        squared = np.einsum("ni,ni->n", to_lamp, to_lamp)
        lit = np.einsum("ni,ni->n", facing, to_lamp) > 0.0
        direction = to_lamp / np.sqrt(squared)[:, None]
        light += (lit * lobe(direction) / (squared + _LAMP_RADIUS**2))[:, None] * colour
    highlight[glossy] = strength * light
    return highlight


def render_view(
    scene: Scene, bank: TextureBank, camera: PinholeCamera, pose: CameraPose
) -> RenderedView:
    """Ray-cast one pinhole view of ``scene`` from ``pose``."""
    directions = _pixel_directions(camera, pose.rotation)
    intrinsics = (camera.fx, camera.fy, camera.cx, camera.cy)
    hits = cast_camera_rays(scene.primitives, pose.position, pose.rotation, directions, intrinsics)
    flat_directions = directions.reshape(-1, 3)
    depth = hits.t.reshape(-1)
    rows = np.flatnonzero(hits.hit.reshape(-1))
    points = pose.position + depth[rows, None] * flat_directions[rows]
    normals, uv, material_ids = shade_points(
        scene.primitives, hits.group.reshape(-1)[rows], hits.index.reshape(-1)[rows], points
    )

    materials = scene.materials
    texels_per_metre = bank.size / materials.scale[material_ids]
    texel_u = uv[:, 0] * texels_per_metre + materials.offset[material_ids, 0]
    texel_v = uv[:, 1] * texels_per_metre + materials.offset[material_ids, 1]
    footprint = depth[rows] / camera.fx * texels_per_metre
    texture_ids = materials.texture[material_ids]
    albedo = bank.sample(texture_ids, texel_u, texel_v, footprint)
    mean = bank.means[texture_ids]
    contrast = materials.contrast[material_ids, None]
    albedo = np.clip(mean + contrast * (albedo - mean), 0.0, 1.0) * materials.tint[material_ids]

    lighting = scene.lighting
    sun = np.clip(normals @ lighting.to_sun, 0.0, None)
    if lighting.shadows:
        lit = np.flatnonzero(sun > 0.0)
        casters = scene.primitives if scene.shadow_casters is None else scene.shadow_casters
        blocked = shadowed(casters, points[lit] + _SHADOW_OFFSET * normals[lit], lighting.to_sun)
        sun[lit[blocked]] = 0.0
    sky_light = 0.75 - 0.25 * normals[:, 1]
    irradiance = sun[:, None] * lighting.sun_colour + sky_light[:, None] * lighting.ambient_colour
    for lamp, colour in zip(lighting.lamps, lighting.lamp_colours, strict=True):
        irradiance += _lamp_light(points, normals, lamp)[:, None] * colour
    if materials.emission is not None:
        irradiance += materials.emission[material_ids, None]
    radiance = np.empty(flat_directions.shape)
    radiance[rows] = albedo * irradiance
    if materials.specular is not None:
        radiance[rows] += _highlights(scene, material_ids, points, normals, sun, pose.position)
    sky = np.flatnonzero(~hits.hit.reshape(-1))
    radiance[sky] = _sky_radiance(scene, bank, flat_directions[sky])
    if lighting.fog_density > 0:
        # Beer-Lambert extinction; the sky (depth inf) is all fog.
        transmittance = np.exp(-lighting.fog_density * depth)[:, None]
        airlight = lighting.ambient_colour + 0.2 * lighting.sun_colour
        radiance = radiance * transmittance + airlight * (1.0 - transmittance)

    camera_normals = np.full(flat_directions.shape, np.nan)
    camera_normals[rows] = normals @ pose.rotation
    shape = (camera.height, camera.width)
    return RenderedView(
        radiance=radiance.reshape(*shape, 3),
        depth=depth.reshape(shape),
        normals=camera_normals.reshape(*shape, 3),
    )


def _develop(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Exposed linear ``signal`` -> 8-bit sRGB, with additive noise after the curve."""
    encoded = np.clip(signal, 0.0, 1.0) ** (1.0 / 2.2) + noise
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


def render_stereo(
    scene: Scene,
    bank: TextureBank,
    camera: PinholeCamera,
    pose: CameraPose,
    rng: np.random.Generator,
) -> StereoRendering:
    """Render the left view at ``pose`` and the right one ``camera.baseline`` to its right.

    Both views share one exposure, metered on the left view (auto-exposure scaled by the scene's
    ``exposure``), the right camera's gain off by ``scene.sensor.right_gain``; ``rng`` draws the
    sensor noise, independently per view.
    """
    if camera.baseline is None:
        raise ValueError("render_stereo needs a stereo camera (baseline is None)")
    left = render_view(scene, bank, camera, pose)
    right = render_view(scene, bank, camera, pose.shifted(camera.baseline))
    lighting, sensor = scene.lighting, scene.sensor
    left_light = sensor.through_lens(left.radiance)
    right_light = sensor.through_lens(right.radiance)
    gain = lighting.exposure * _EXPOSURE_KEY / max(float(left_light.mean()), 1e-6)
    noise_shape = left.radiance.shape
    left_noise = rng.normal(0.0, lighting.sensor_noise, noise_shape)
    right_noise = rng.normal(0.0, lighting.sensor_noise, noise_shape)
    return StereoRendering(
        left=_develop(sensor.expose(left_light, gain, rng), left_noise),
        right=_develop(sensor.expose(right_light, gain * sensor.right_gain, rng), right_noise),
        depth=left.depth.astype(np.float32),
        right_depth=right.depth.astype(np.float32),
        normals=left.normals.astype(np.float32),
    )
