import numpy as np
import pytest
import trimesh

from worldstereo.reconstruction._common import CameraArrays
from worldstereo.reconstruction.mesh import mesh_from_tsdf, poisson_mesh, tsdf_fusion


def _plane_views(c: float = 16.0):
    """Two cameras looking down +z at the plane z = 2 (colour = red) from x = -0.2 and x = +0.2.

    ``c`` = cx = cy; 16 = W/2 puts the optical axis through the image centre."""
    H = W = 32
    K = np.array([[30.0, 0, c], [0, 30.0, c], [0, 0, 1]])
    w2c = np.tile(np.eye(4), (2, 1, 1))
    w2c[0, 0, 3], w2c[1, 0, 3] = 0.2, -0.2  # camera centres at x = -0.2 / +0.2
    depth = np.full((2, H, W), 2.0)
    frames = np.zeros((2, 3, H, W))
    frames[:, 0] = 1.0
    return frames, depth, CameraArrays(w2c, np.stack([K, K]), H, W)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("c", [16.0, 15.5])  # 15.5: frustum edges cut the voxel grid right at the surface
def test_tsdf_plane_is_recovered(sparse, c):
    frames, depth, cams = _plane_views(c)
    surf = np.array([[x, y, 2.0] for x in np.linspace(-1, 1, 41) for y in np.linspace(-1, 1, 41)]) if sparse else None
    bounds = (np.array([-1.5, -1.5, 1.5]), np.array([1.5, 1.5, 2.5]))
    vol = tsdf_fusion(frames, depth, cams, voxel_size=0.05, bounds=bounds,
                      surface_points=surf)
    mesh = mesh_from_tsdf(vol)
    assert isinstance(mesh, trimesh.Trimesh)
    v = np.asarray(mesh.vertices)
    np.testing.assert_allclose(v[:, 2], 2.0, atol=1e-3)
    # the plane is seen over |x|, |y| <~ 0.5 * 2 * 16/30 ~ 1.07 (+-0.2 baseline): the mesh covers that area
    assert v[:, 0].min() < -0.9 and v[:, 0].max() > 0.9
    # normals point toward the cameras (-z) and colours are the frame colour
    assert (mesh.face_normals[:, 2] < -0.99).mean() > 0.99
    np.testing.assert_array_equal(np.asarray(mesh.visual.vertex_colors)[:, :3], [[255, 0, 0]] * len(v))


def test_tsdf_without_surface_raises():
    frames, depth, cams = _plane_views()
    vol = tsdf_fusion(frames, depth * 0, cams, voxel_size=0.1, bounds=(np.full(3, -1.0), np.full(3, 1.0)))
    with pytest.raises(ValueError, match="surface"):
        mesh_from_tsdf(vol)
    with pytest.raises(ValueError, match="voxel_size"):
        tsdf_fusion(frames, depth, cams, voxel_size=0, bounds=(np.full(3, -1.0), np.full(3, 1.0)))


def test_poisson_needs_open3d():
    try:
        import open3d  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="open3d"):
            poisson_mesh(np.zeros((10, 3)), np.zeros((10, 3)), np.zeros((10, 3)))
    else:  # pragma: no cover - optional dependency present
        pytest.skip("open3d installed")
