"""The synthetic engine's compiled kernels (numba), in one module so that numba's on-disk cache stays
valid (it tracks this file) and kernels may call each other. Each one's contract is documented where it
is used: ray casting in `training.synth.raycast`, `Grid.take` and `render_color` in
`training.synth.render`, procedural albedo in `training.synth.appearance.albedo_of`. Import this module
lazily (it imports numba; the first use in a fresh checkout compiles, later processes load the cache).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from training.synth.raycast import NEAR_M
from training.synth.render import _KIND_PERSON, _KIND_SOLID   # how a face is shaded

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")   # IEEE division: no zero-division checks
_inline = numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")   # small helpers


# ------------------------------------------------------------------------------------------ ray casting
@_jit
def projected_polygon(P, F, f, px, py):
    """The part of face f in front of the near plane (Sutherland-Hodgman against z >= NEAR_M: the vertices
    in front plus each crossing edge's point at z = NEAR_M) projected to z = 1: k <= 4 vertices in
    px, py, in order around the polygon. Straight edges stay straight under this projection."""
    k = 0
    for e in range(3):
        p, q = F[f, e], F[f, (e + 1) % 3]
        pz, qz = P[p, 2], P[q, 2]
        if pz >= NEAR_M:
            px[k] = P[p, 0] / pz
            py[k] = P[p, 1] / pz
            k += 1
        if (pz >= NEAR_M) != (qz >= NEAR_M):
            w = (NEAR_M - pz) / (qz - pz)
            px[k] = (P[p, 0] + w * (P[q, 0] - P[p, 0])) / NEAR_M
            py[k] = (P[p, 1] + w * (P[q, 1] - P[p, 1])) / NEAR_M
            k += 1
    return k


@_jit
def face_planes_kernel(P, F):
    nf = F.shape[0]
    out = np.empty((nf, 17), np.float64)
    px = np.empty(4, np.float64)
    py = np.empty(4, np.float64)
    # each vertex in front of the near plane projected once (the values projected_polygon computes)
    nv = P.shape[0]
    vx = np.empty(nv, np.float64)
    vy = np.empty(nv, np.float64)
    front = np.empty(nv, np.bool_)
    for p in range(nv):
        pz = P[p, 2]
        front[p] = pz >= NEAR_M
        if front[p]:
            vx[p] = P[p, 0] / pz
            vy[p] = P[p, 1] / pz
    for f in range(nf):
        ia, ib, ic = F[f, 0], F[f, 1], F[f, 2]
        ax, ay, az = P[ia, 0], P[ia, 1], P[ia, 2]
        e1x, e1y, e1z = P[ib, 0] - ax, P[ib, 1] - ay, P[ib, 2] - az
        e2x, e2y, e2z = P[ic, 0] - ax, P[ic, 1] - ay, P[ic, 2] - az
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        out[f, 0] = nx
        out[f, 1] = ny
        out[f, 2] = nz
        out[f, 3] = e2y * az - e2z * ay            # U = e2 x a
        out[f, 4] = e2z * ax - e2x * az
        out[f, 5] = e2x * ay - e2y * ax
        out[f, 6] = ay * e1z - az * e1y            # V = a x e1
        out[f, 7] = az * e1x - ax * e1z
        out[f, 8] = ax * e1y - ay * e1x
        out[f, 9] = ax * nx + ay * ny + az * nz
        if front[ia] and front[ib] and front[ic]:
            xlo, xhi = min(vx[ia], vx[ib], vx[ic]), max(vx[ia], vx[ib], vx[ic])
            ylo, yhi = min(vy[ia], vy[ib], vy[ic]), max(vy[ia], vy[ib], vy[ic])
        else:
            k = projected_polygon(P, F, f, px, py)
            xlo, xhi, ylo, yhi = np.inf, -np.inf, np.inf, -np.inf
            for m in range(k):
                xlo, xhi = min(xlo, px[m]), max(xhi, px[m])
                ylo, yhi = min(ylo, py[m]), max(yhi, py[m])
        out[f, 10] = xlo
        out[f, 11] = xhi
        out[f, 12] = ylo
        out[f, 13] = yhi
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        if norm > 0.0:
            out[f, 14] = nx / norm
            out[f, 15] = ny / norm
            out[f, 16] = nz / norm
        else:
            out[f, 14] = out[f, 15] = out[f, 16] = 0.0
    return out


@_inline
def lower_bound(arr, value):
    """First index i with arr[i] >= value (arr non-decreasing); len(arr) if none."""
    lo, hi = 0, arr.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if arr[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_inline
def upper_bound(arr, value):
    """First index i with arr[i] > value (arr non-decreasing); len(arr) if none."""
    lo, hi = 0, arr.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if arr[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_inline
def coefficients(planes, f):
    """Face f's n, U, V, s (planes[f, :10]) as a tuple: loaded once per face, kept in registers."""
    return (planes[f, 0], planes[f, 1], planes[f, 2], planes[f, 3], planes[f, 4], planes[f, 5],
            planes[f, 6], planes[f, 7], planes[f, 8], planes[f, 9])


@_inline
def hit(c, x, y, t_best):
    """Ray (x, y, 1) against the face with `coefficients` c: (t, u, v) with NEAR_M <= t < t_best, or t = inf.

    With the origin at the camera centre and d = (x, y, 1): u = d.U / d.n, v = d.V / d.n, t = s / d.n
    (Moller-Trumbore's determinant and scalar triple products, regrouped per face). The inside and depth
    tests compare the numerators with d.n (sign-normalised), so only accepted hits divide."""
    dn = c[0] * x + c[1] * y + c[2]
    du = c[3] * x + c[4] * y + c[5]
    dv = c[6] * x + c[7] * y + c[8]
    s = c[9]
    if dn < 0.0:
        dn, du, dv, s = -dn, -du, -dv, -s
    elif dn == 0.0:
        return np.inf, 0.0, 0.0
    if du < 0.0 or dv < 0.0 or du + dv > dn or s < NEAR_M * dn or s >= t_best * dn:
        return np.inf, 0.0, 0.0
    inv = 1.0 / dn
    return s * inv, du * inv, dv * inv


@_inline
def test_row(c, f, xy, valid, i, j0, j1, xlo, xhi, ylo, yhi, t_out, face_out, bary_out):
    """`hit` for the valid rays j0 <= j < j1 of row i inside the face's box; keeps the nearest."""
    for j in range(j0, j1):
        x = xy[i, j, 0]
        y = xy[i, j, 1]
        if x < xlo or x > xhi or y < ylo or y > yhi or not valid[i, j]:
            continue
        t, u, v = hit(c, x, y, t_out[i, j])
        if t < np.inf:
            t_out[i, j] = t
            face_out[i, j] = f
            bary_out[i, j, 0] = u
            bary_out[i, j, 1] = v


@_jit
def index_grid(xy, valid, T, cell_rays):
    """Search tables of a grid of rays (see `RayGrid`)."""
    h, w = valid.shape
    row_lo = np.full(h, np.inf)
    row_hi = np.full(h, -np.inf)
    col_lo = np.full(w, np.inf)
    col_hi = np.full(w, -np.inf)
    th, tw = (h + T - 1) // T, (w + T - 1) // T
    tiles = np.empty((th, tw, 4), np.float64)
    tiles[:, :, 0] = np.inf
    tiles[:, :, 1] = -np.inf
    tiles[:, :, 2] = np.inf
    tiles[:, :, 3] = -np.inf
    tile_col = np.empty(w, np.int64)       # (integer division is slow: once per column, not per ray)
    for j in range(w):
        tile_col[j] = j // T
    n = 0
    for i in range(h):
        ti = i // T
        rlo, rhi = np.inf, -np.inf
        for j in range(w):
            if not valid[i, j]:
                continue
            x, y = xy[i, j, 0], xy[i, j, 1]
            n += 1
            if y < rlo:
                rlo = y
            if y > rhi:
                rhi = y
            if x < col_lo[j]:
                col_lo[j] = x
            if x > col_hi[j]:
                col_hi[j] = x
            tj = tile_col[j]
            if x < tiles[ti, tj, 0]:
                tiles[ti, tj, 0] = x
            if x > tiles[ti, tj, 1]:
                tiles[ti, tj, 1] = x
            if y < tiles[ti, tj, 2]:
                tiles[ti, tj, 2] = y
            if y > tiles[ti, tj, 3]:
                tiles[ti, tj, 3] = y
        row_lo[i] = rlo
        row_hi[i] = rhi
    for i in range(h - 2, -1, -1):
        row_lo[i] = min(row_lo[i], row_lo[i + 1])
    for i in range(1, h):
        row_hi[i] = max(row_hi[i], row_hi[i - 1])
    for j in range(w - 2, -1, -1):
        col_lo[j] = min(col_lo[j], col_lo[j + 1])
    for j in range(1, w):
        col_hi[j] = max(col_hi[j], col_hi[j - 1])
    # cells: a regular grid over the rays' box on the z = 1 plane, about one ray per cell; each cell
    # keeps the row and column range of the rays inside it
    gx0, gx1, gy0, gy1 = col_lo[0], col_hi[w - 1], row_lo[0], row_hi[h - 1]
    if n == 0:
        return row_lo, row_hi, col_lo, col_hi, tiles, np.zeros((1, 1, 4), np.int32), 0.0, 0.0, 1.0
    cs = max(np.sqrt(max(gx1 - gx0, 1e-12) * max(gy1 - gy0, 1e-12) / n * cell_rays), 1e-9)
    nx = int((gx1 - gx0) / cs) + 1
    ny = int((gy1 - gy0) / cs) + 1
    cells = np.empty((ny, nx, 4), np.int32)
    cells[:, :, 0] = h
    cells[:, :, 1] = -1
    cells[:, :, 2] = w
    cells[:, :, 3] = -1
    inv_cs = 1.0 / cs
    for i in range(h):
        for j in range(w):
            if not valid[i, j]:
                continue
            cx = min(int((xy[i, j, 0] - gx0) * inv_cs), nx - 1)
            cy = min(int((xy[i, j, 1] - gy0) * inv_cs), ny - 1)
            if i < cells[cy, cx, 0]:
                cells[cy, cx, 0] = i
            if i > cells[cy, cx, 1]:
                cells[cy, cx, 1] = i
            if j < cells[cy, cx, 2]:
                cells[cy, cx, 2] = j
            if j > cells[cy, cx, 3]:
                cells[cy, cx, 3] = j
    return row_lo, row_hi, col_lo, col_hi, tiles, cells, gx0, gy0, cs


@_jit
def cast_grid_kernel(P, F, planes, xy, valid, row_lo, row_hi, col_lo, col_hi, tiles, T,
                     cells, gx0, gy0, cs, max_cells, t_out, face_out, bary_out):
    px = np.empty(4, np.float64)
    py = np.empty(4, np.float64)
    ea = np.empty(4, np.float64)
    eb = np.empty(4, np.float64)
    ec = np.empty(4, np.float64)
    ny, nx = cells.shape[0], cells.shape[1]
    inv_cs = 1.0 / cs
    for f in range(planes.shape[0]):
        xlo, xhi, ylo, yhi = planes[f, 10], planes[f, 11], planes[f, 12], planes[f, 13]
        if not xlo <= xhi:
            continue
        c = coefficients(planes, f)
        # small faces: the cells under the face's box hold every ray that can hit it
        fx0 = (xlo - gx0) * inv_cs
        fx1 = (xhi - gx0) * inv_cs
        fy0 = (ylo - gy0) * inv_cs
        fy1 = (yhi - gy0) * inv_cs
        if fx1 < 0.0 or fy1 < 0.0 or fx0 >= nx or fy0 >= ny:
            continue
        cx0, cx1 = max(int(fx0), 0), min(int(fx1), nx - 1)
        cy0, cy1 = max(int(fy0), 0), min(int(fy1), ny - 1)
        if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) <= max_cells:
            i0, i1, j0, j1 = 1 << 30, -1, 1 << 30, -1
            for cy in range(cy0, cy1 + 1):
                for cx in range(cx0, cx1 + 1):
                    if cells[cy, cx, 1] >= 0:
                        i0 = min(i0, cells[cy, cx, 0])
                        i1 = max(i1, cells[cy, cx, 1])
                        j0 = min(j0, cells[cy, cx, 2])
                        j1 = max(j1, cells[cy, cx, 3])
            for i in range(i0, i1 + 1):
                test_row(c, f, xy, valid, i, j0, j1 + 1, xlo, xhi, ylo, yhi, t_out, face_out, bary_out)
            continue
        # large faces: the rows and columns whose ranges meet the box, then the T x T tiles of that block
        # whose rays' box meets the face's box and is not wholly outside one of the half-planes
        # a x + b y + c >= 0 bounding its (convex) projection
        i0 = lower_bound(row_hi, ylo)
        i1 = upper_bound(row_lo, yhi)
        j0 = lower_bound(col_hi, xlo)
        j1 = upper_bound(col_lo, xhi)
        if i1 <= i0 or j1 <= j0:
            continue
        k = projected_polygon(P, F, f, px, py)
        area = 0.0
        for e in range(k):
            area += px[e] * py[(e + 1) % k] - px[(e + 1) % k] * py[e]
        n_edges = k if (k >= 3 and area != 0.0) else 0
        sgn = 1.0 if area > 0 else -1.0
        for e in range(n_edges):
            dx = px[(e + 1) % k] - px[e]
            dy = py[(e + 1) % k] - py[e]
            ea[e] = -dy * sgn
            eb[e] = dx * sgn
            ec[e] = (dy * px[e] - dx * py[e]) * sgn
        for ti in range(i0 // T, (i1 - 1) // T + 1):
            for tj in range(j0 // T, (j1 - 1) // T + 1):
                bx0, bx1, by0, by1 = tiles[ti, tj, 0], tiles[ti, tj, 1], tiles[ti, tj, 2], tiles[ti, tj, 3]
                if bx1 < xlo or bx0 > xhi or by1 < ylo or by0 > yhi:
                    continue
                outside = False
                for e in range(n_edges):
                    a, b = ea[e], eb[e]
                    best = a * (bx1 if a > 0 else bx0) + b * (by1 if b > 0 else by0) + ec[e]
                    if best < -1e-12 * (1.0 + abs(ec[e])):
                        outside = True
                        break
                if outside:
                    continue
                for i in range(max(i0, ti * T), min(i1, ti * T + T)):
                    test_row(c, f, xy, valid, i, max(j0, tj * T), min(j1, tj * T + T),
                             xlo, xhi, ylo, yhi, t_out, face_out, bary_out)


@_jit
def cast_list_kernel(planes, xy, order, xs_sorted, t_out, face_out, bary_out):
    for f in range(planes.shape[0]):
        xlo, xhi, ylo, yhi = planes[f, 10], planes[f, 11], planes[f, 12], planes[f, 13]
        if not xlo <= xhi:
            continue
        c = coefficients(planes, f)
        for k in range(lower_bound(xs_sorted, xlo), upper_bound(xs_sorted, xhi)):
            r = order[k]
            y = xy[r, 1]
            if y < ylo or y > yhi:
                continue
            t, u, v = hit(c, xy[r, 0], y, t_out[r])
            if t < np.inf:
                t_out[r] = t
                face_out[r] = f
                bary_out[r, 0] = u
                bary_out[r, 1] = v


@_jit
def depth_attributes(face, t, face_object, face_person, face_ir, face_normals, z, obj, person, refl, normals):
    """render_depth's per-pixel attributes of the hit faces (misses: z 0, obj -1, person -1, refl 0,
    normal 0)."""
    h, w = face.shape
    for i in range(h):
        for j in range(w):
            f = face[i, j]
            if f < 0:
                z[i, j] = 0.0
                obj[i, j] = -1
                person[i, j] = -1
                refl[i, j] = 0.0
                normals[i, j, 0] = normals[i, j, 1] = normals[i, j, 2] = 0.0
            else:
                z[i, j] = t[i, j]
                obj[i, j] = face_object[f]
                person[i, j] = face_person[f]
                refl[i, j] = face_ir[f]
                normals[i, j, 0] = face_normals[f, 0]
                normals[i, j, 1] = face_normals[f, 1]
                normals[i, j, 2] = face_normals[f, 2]


# ------------------------------------------------------------------------------------------ Grid.take
@_jit
def bilinear(table, iy, ix, fy, fx, out):
    one = np.float32(1.0)
    for i in range(iy.shape[0]):
        r, gy, wy = iy[i], one - fy[i], fy[i]
        for j in range(ix.shape[0]):
            c, gx, wx = ix[j], one - fx[j], fx[j]
            for k in range(table.shape[2]):
                r0 = table[r, c, k] * gy + table[r + 1, c, k] * wy
                r1 = table[r, c + 1, k] * gy + table[r + 1, c + 1, k] * wy
                out[i, j, k] = r0 * gx + r1 * wx


@_jit
def all_four(table, iy, ix, out):
    for i in range(iy.shape[0]):
        r = iy[i]
        for j in range(ix.shape[0]):
            c = ix[j]
            for k in range(table.shape[2]):
                out[i, j, k] = table[r, c, k] and table[r, c + 1, k] and table[r + 1, c, k] \
                    and table[r + 1, c + 1, k]


@_jit
def upsample_linear_u8(src, ix0, ix1, fx, iy, fy, out):
    """Bilinear expansion of a grid image to the window's pixels, rows flattened: src (h, w * C) uint8,
    out (H, W * C) uint8. Output element k of a row blends src elements ix0[k] and ix1[k] (one channel of
    two neighbouring grid columns) by fx[k]; output row y blends the rows so made from grid rows iy[y]
    and min(iy[y] + 1, h - 1) by fy[y] (float32 weights in [0, 1]; columns first, rounded half up)."""
    h = src.shape[0]
    n = ix0.shape[0]
    rows = np.empty((h, n), np.float32)
    for r in range(h):
        s = src[r]
        o = rows[r]
        for k in range(n):
            a = np.float32(s[ix0[k]])
            o[k] = a + (np.float32(s[ix1[k]]) - a) * fx[k]
    for y in range(out.shape[0]):
        a = rows[iy[y]]
        b = rows[min(iy[y] + 1, h - 1)]
        f = fy[y]
        o = out[y]
        for k in range(n):
            o[k] = np.uint8(np.int32(a[k] + (b[k] - a[k]) * f + np.float32(0.5)))


@_jit
def upsample_nearest_kernel(src, iy, ix, out):
    """out[y, k] = src[iy[y], ix[k]]: a grid image expanded to the window, rows flattened (src (h, w * C),
    out (H, W * C); ix holds flat source columns)."""
    for y in range(out.shape[0]):
        s = src[iy[y]]
        o = out[y]
        for k in range(out.shape[1]):
            o[k] = s[ix[k]]


# ------------------------------------------------------------------------------------------ shading
@_jit
def shade(face, bary, xy, R, faces, face_kind, face_material, mat_color, mat_table, mat_waves, person_attr,
          texcoords, face_normals, light_dirs, light_colors, ambient, irradiance, albedo):
    """render_color's per-pixel shading: for each hit, the shading normal (people: interpolated vertex
    normals, renormalised; else the face normal), turned to face the ray R (x, y, 1); irradiance = ambient
    + sum over lights of max(n . l, 0) colour; albedo (people: interpolated vertex albedo; solid
    materials: their colour; patterned ones: `material_albedo` at the interpolated texture coordinate)."""
    h, w = face.shape
    for i in range(h):
        for j in range(w):
            f = face[i, j]
            if f < 0:
                continue
            kind = face_kind[f]
            u, v = bary[i, j, 0], bary[i, j, 1]
            a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
            wa = np.float32(1.0) - u - v
            if kind == _KIND_PERSON:       # smooth normal and per-vertex albedo
                nx = wa * person_attr[a, 0] + u * person_attr[b, 0] + v * person_attr[c, 0]
                ny = wa * person_attr[a, 1] + u * person_attr[b, 1] + v * person_attr[c, 1]
                nz = wa * person_attr[a, 2] + u * person_attr[b, 2] + v * person_attr[c, 2]
                norm = np.sqrt(nx * nx + ny * ny + nz * nz)
                if norm > 1e-12:
                    nx, ny, nz = nx / norm, ny / norm, nz / norm
                for k in range(3):
                    albedo[i, j, k] = wa * person_attr[a, 3 + k] + u * person_attr[b, 3 + k] \
                        + v * person_attr[c, 3 + k]
            else:
                nx, ny, nz = face_normals[f, 0], face_normals[f, 1], face_normals[f, 2]
                if kind == _KIND_SOLID:
                    m = face_material[f]
                    for k in range(3):
                        albedo[i, j, k] = mat_color[m, k]
                else:
                    tx = wa * texcoords[a, 0] + u * texcoords[b, 0] + v * texcoords[c, 0]
                    ty = wa * texcoords[a, 1] + u * texcoords[b, 1] + v * texcoords[c, 1]
                    tz = wa * texcoords[a, 2] + u * texcoords[b, 2] + v * texcoords[c, 2]
                    r, g, bl = material_albedo(mat_table, mat_waves, face_material[f], tx, ty, tz)
                    albedo[i, j, 0] = r
                    albedo[i, j, 1] = g
                    albedo[i, j, 2] = bl
            # the ray in the depth frame, R (x, y, 1); normals facing along it are turned round
            x, y = xy[i, j, 0], xy[i, j, 1]
            dx = R[0, 0] * x + R[0, 1] * y + R[0, 2]
            dy = R[1, 0] * x + R[1, 1] * y + R[1, 2]
            dz = R[2, 0] * x + R[2, 1] * y + R[2, 2]
            if nx * dx + ny * dy + nz * dz > 0:
                nx, ny, nz = -nx, -ny, -nz
            e0, e1, e2 = ambient[0], ambient[1], ambient[2]     # (float32 sums in registers)
            for li in range(light_dirs.shape[0]):
                cos = nx * light_dirs[li, 0] + ny * light_dirs[li, 1] + nz * light_dirs[li, 2]
                if cos > 0:
                    e0 += cos * light_colors[li, 0]
                    e1 += cos * light_colors[li, 1]
                    e2 += cos * light_colors[li, 2]
            irradiance[i, j, 0] = e0
            irradiance[i, j, 1] = e1
            irradiance[i, j, 2] = e2


# ------------------------------------------------------------------------------------------ albedo
# (training.synth.appearance.albedo_of documents the patterns; table rows: appearance.material_table)
WAVE_TABLE_STEPS = 4096   # sine samples per period for the patterns' waves
_WAVE_TABLE = np.sin(np.arange(WAVE_TABLE_STEPS + 1) * (2.0 * math.pi / WAVE_TABLE_STEPS))
_WAVE_SCALE = WAVE_TABLE_STEPS / (2.0 * math.pi)


@_inline
def wave(x):
    """sin(x) for the patterns' waves: linear interpolation in a table of WAVE_TABLE_STEPS samples per
    period, within 3e-7 of math.sin (far below a colour code) at ~2 ns against libm's ~21 ns, and
    vectorisable."""
    t = x * _WAVE_SCALE
    k = math.floor(t)
    f = t - k
    i = int(k) & (WAVE_TABLE_STEPS - 1)
    return _WAVE_TABLE[i] + f * (_WAVE_TABLE[i + 1] - _WAVE_TABLE[i])


@_inline
def material_albedo(table, waves, row, px, py, pz):
    """(r, g, b) albedo of material `row` at texture coordinate (px, py, pz) metres."""
    code = int(table[row, 0])
    inv = table[row, 1]
    x = px + table[row, 11]
    y = py + table[row, 12]
    z = pz + table[row, 13]
    k = 0.0
    if code == 1 or code == 4:     # stripes / planks: coordinate across `axis`
        t = (x * table[row, 8] + y * table[row, 9] + z * table[row, 10]) * inv
        if code == 1:
            k = 1.0 if t - math.floor(t) < 0.5 else 0.0
        else:
            plank = math.floor(t)
            h = wave(plank * 12.9898 + 78.233) * 43758.547
            f = (0.75 + 0.5 * (h - math.floor(h))) * (1.0 - 0.25 * (0.5 + 0.5 * wave(40.0 * t + 3.0 * plank)))
            if t - plank < 0.03:
                return table[row, 5], table[row, 6], table[row, 7]
            return (min(max(table[row, 2] * f, 0.0), 1.0), min(max(table[row, 3] * f, 0.0), 1.0),
                    min(max(table[row, 4] * f, 0.0), 1.0))
    elif code == 2:
        cell = int(math.floor(x * inv)) + int(math.floor(y * inv)) + int(math.floor(z * inv))
        k = float(cell & 1)
    elif code == 3:
        start, count = int(table[row, 14]), int(table[row, 15])
        acc = 0.0
        for w in range(start, start + count):
            acc += wave(waves[w, 0] * x + waves[w, 1] * y + waves[w, 2] * z + waves[w, 3])
        if count:
            k = min(max(acc / count * 0.5 * math.sqrt(count) + 0.5, 0.0), 1.0)
    elif code == 5:
        fx = x * inv - math.floor(x * inv)
        fy = y * inv - math.floor(y * inv)
        k = 1.0 if (fx < 0.04 or fx > 0.96 or fy < 0.04 or fy > 0.96) else 0.0
    return (table[row, 2] * (1.0 - k) + table[row, 5] * k, table[row, 3] * (1.0 - k) + table[row, 6] * k,
            table[row, 4] * (1.0 - k) + table[row, 7] * k)


@_jit
def albedo_kernel(table, waves, material, p, out):
    for i in range(p.shape[0]):
        r, g, b = material_albedo(table, waves, material[i], p[i, 0], p[i, 1], p[i, 2])
        out[i, 0] = r
        out[i, 1] = g
        out[i, 2] = b


@_jit
def person_albedo_kernel(faces, face_person, face_material, table, waves, texcoords, out):
    """SceneMesh's per-vertex albedo of people into out[:, 3:6] (float32): each vertex of a face with
    face_person >= 0 in the material of the last of its faces (corner 0 of every face, then corner 1, then
    corner 2, as numpy's fancy assignment writes them) at its texture coordinates; other rows untouched."""
    vmat = np.full(out.shape[0], -1, np.int64)
    for corner in range(3):
        for k in range(faces.shape[0]):
            if face_person[k] >= 0:
                vmat[faces[k, corner]] = face_material[k]
    for i in range(out.shape[0]):
        if vmat[i] >= 0:
            r, g, b = material_albedo(table, waves, vmat[i], texcoords[i, 0], texcoords[i, 1], texcoords[i, 2])
            out[i, 3] = r
            out[i, 4] = g
            out[i, 5] = b


# ------------------------------------------------------------------------------------------ color sensor
@_jit
def color_sensor_kernel(img, gains, vx, vy, half_vignette, shot, read2, uniform, quantiles, out):
    """training.synth.render.color_sensor_image's exposure, white balance, vignetting and noise, per
    pixel (h, w, 3) float32; N(0, 1) = quantiles[uniform] (16-bit inverse-CDF lookup)."""
    one = np.float32(1.0)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            g = one - half_vignette * (vx[j] * vx[j] + vy[i] * vy[i])
            for c in range(img.shape[2]):
                v = img[i, j, c] * gains[c] * g
                var = max(v, np.float32(0.0)) * shot + read2
                out[i, j, c] = v + quantiles[uniform[i, j, c]] * np.sqrt(var)


@_jit
def encode_srgb_kernel(img, lut, bgr, out):
    """training.synth.render.encode_srgb on (N, C) rows."""
    top = np.float32(lut.shape[0] - 1)
    n_c = img.shape[1]
    for i in range(img.shape[0]):
        for c in range(n_c):
            s = img[i, c] * top + np.float32(0.5)
            s = min(max(s, np.float32(0.0)), top)
            out[i, n_c - 1 - c if bgr else c] = lut[int(s)]


# ------------------------------------------------------------------------------------------ depth sensor
@_inline
def depth_sigma(distance_term, rho, cos, has_rho, has_cos, rho_ref, rho_min, floor_term, sigma_max):
    """The random error's sigma (mm, float32) of `training.synth.depth_noise.noise_sigma_mm`:
    min(floor_term + distance_term * sqrt(rho_ref / max(rho_eff, rho_min)), sigma_max) with rho_eff =
    rho cos, rho or cos rho_ref (each product rounded once to float32, as numpy's ufuncs do; a product
    of two float32 values is exact in float64); the distance term alone when neither is given."""
    d = distance_term
    if has_rho or has_cos:
        if has_rho and has_cos:
            eff = np.float32(rho * cos)
        elif has_rho:
            eff = np.float32(rho)
        else:
            eff = np.float32(cos * rho_ref)
        d = d * np.sqrt(rho_ref / max(eff, rho_min))
    return min(d + floor_term, sigma_max)


@_jit
def sigma_kernel(distance_term, rho, cos, has_rho, has_cos, rho_ref, rho_min, floor_term, sigma_max, out):
    """`depth_sigma` over flat arrays: distance_term float32, rho and cos any float (read only when given)."""
    for i in range(distance_term.shape[0]):
        r = rho[i] if has_rho else 0.0
        c = cos[i] if has_cos else 0.0
        out[i] = depth_sigma(distance_term[i], r, c, has_rho, has_cos, rho_ref, rho_min, floor_term, sigma_max)


@_jit
def depth_error_kernel(z, uniform, quantiles, distance_lut, bias_lut, rho, has_rho, normals, has_normals, dx, dy,
                       inv_ray, rho_ref, rho_min, floor_term, sigma_max, meas, cos):
    """DepthNoiseModel's per-pixel random and systematic error on (H, W) float32 z (metres, 0 = no hit):
    cos = min(|n . (dx, dy, 1)| inv_ray, 1) when normals are given (written to `cos`); N(0, 1) =
    quantiles[uniform * 65536]; z in whole mm (capped at 65535) indexes the distance-term and bias
    tables; meas = min(1000 z, 65535) + N(0, 1) sigma + bias (float32 mm). Each step rounds to float32
    where the numpy formulation did, for float32 or float64 normals and reflectance."""
    h, w = z.shape
    n_q = quantiles.shape[0]
    top = np.float32(distance_lut.shape[0] - 1)
    scale = np.float32(n_q)
    for i in range(h):
        for j in range(w):
            c = np.float32(0.0)
            if has_normals:
                c = np.float32(normals[i, j, 0] * dx[j])
                c = np.float32(c + np.float32(normals[i, j, 1] * dy[i]))
                c = np.float32(c + normals[i, j, 2])
                c = min(abs(c) * inv_ray[i, j], np.float32(1.0))
                cos[i, j] = c
            q = quantiles[min(int(uniform[i, j] * scale), n_q - 1)]
            m = min(z[i, j] * np.float32(1000.0), top)
            k = int(m)
            r = rho[i, j] if has_rho else 0.0
            sigma = depth_sigma(distance_lut[k], r, c, has_rho, has_normals, rho_ref, rho_min, floor_term, sigma_max)
            m = m + q * sigma
            meas[i, j] = m + bias_lut[k]
