// worldstereo app: 3D viewport of a point cloud and camera frusta.
//
// Runs as the `js_on_load` of a gr.HTML component (Gradio gives `element`, `props` and `watch`).
// No WebGL and nothing fetched: points are splatted with a software z-buffer into a 2D canvas
// (a few milliseconds for the 40k points the server sends), frusta are drawn as lines on top.
//
// World axes are those of the scene (OpenCV: x right, y down, z forward; the condition camera is
// the identity). The view camera orbits `target` at `distance` with yaw (turn right) and pitch
// (look up); it starts at the condition view. Its world-to-camera matrix (row-major, OpenCV) is
// what "Add keyframe" sends to the server: window.worldstereoViewports[<name>].pose().
//
// Mouse: drag = orbit, shift/right drag = pan, wheel = dolly, double-click = back to the
// condition view. Keys (click the view first): W/S forward/back, A/D left/right, R/F up/down.
(function () {
  const root = element;
  const canvas0 = root.querySelector("canvas");
  const name = (canvas0 && canvas0.dataset.viewport) || "scene";
  const st = {
    n: 0, xyz: null, rgb: null, pointSize: 0.01, cameras: [], sceneKey: null,
    fov: 60, aspect: 4 / 3, yaw: 0, pitch: 0, distance: 1, target: [0, 0, 1],
    home: null, drag: null, queued: false, step: 0.05,
  };

  function decode(b64, Type) {
    const bin = atob(b64 || "");
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function load(value) {
    const v = value || {};
    const pts = v.points || {};
    st.xyz = pts.xyz ? decode(pts.xyz, Float32Array) : new Float32Array(0);
    st.rgb = pts.rgb ? decode(pts.rgb, Uint8Array) : new Uint8Array(0);
    st.n = Math.min(st.xyz.length / 3, st.rgb.length / 3);
    st.pointSize = v.point_size || 0.01;
    st.cameras = v.cameras || [];
    const view = v.view || {};
    st.fov = view.fov_deg || 60;
    st.aspect = view.aspect || 4 / 3;
    if (view.home && view.scene !== st.sceneKey) {  // a new scene: back to its condition view
      st.sceneKey = view.scene;
      st.home = view.home;
      st.step = view.step || 0.05;
      home();
    }
  }

  function home() {
    const h = st.home || {target: [0, 0, 1], distance: 1};
    st.target = h.target.slice();
    st.distance = h.distance;
    st.yaw = 0;
    st.pitch = 0;
  }

  // camera axes (rows of the world-to-camera rotation) for the current yaw / pitch
  function axes() {
    const cy = Math.cos(st.yaw), sy = Math.sin(st.yaw), cp = Math.cos(st.pitch), sp = Math.sin(st.pitch);
    const z = [sy * cp, -sp, cy * cp];
    const x = [cy, 0, -sy];
    const y = [z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0]];
    return [x, y, z];
  }

  function eye(ax) {
    const z = ax[2];
    return [st.target[0] - st.distance * z[0], st.target[1] - st.distance * z[1], st.target[2] - st.distance * z[2]];
  }

  function pose() {  // world-to-camera 4x4, row-major, OpenCV axes
    const ax = axes(), e = eye(ax);
    const m = [];
    for (let r = 0; r < 3; r++) {
      const a = ax[r];
      m.push(a[0], a[1], a[2], -(a[0] * e[0] + a[1] * e[1] + a[2] * e[2]));
    }
    m.push(0, 0, 0, 1);
    return JSON.stringify({w2c: m, fov_deg: st.fov});
  }

  function draw() {
    st.queued = false;
    const canvas = root.querySelector("canvas");
    if (!canvas) return;
    const W = Math.max(64, Math.round(canvas.clientWidth || 640));
    const H = Math.max(48, Math.round(W / st.aspect));
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(W, H);
    const px = new Uint32Array(img.data.buffer);
    px.fill(0xff241e1e);  // ABGR: #1e1e24
    const zbuf = new Float32Array(W * H).fill(Infinity);
    const f = 0.5 * W / Math.tan(st.fov * Math.PI / 360), cx = 0.5 * W, cyy = 0.5 * H;
    const ax = axes(), e = eye(ax), X = ax[0], Y = ax[1], Z = ax[2];
    const near = 1e-3 * st.distance;
    const P = st.xyz, C = st.rgb;
    for (let i = 0; i < st.n; i++) {
      const dx = P[3 * i] - e[0], dy = P[3 * i + 1] - e[1], dz = P[3 * i + 2] - e[2];
      const zc = Z[0] * dx + Z[1] * dy + Z[2] * dz;
      if (zc <= near) continue;
      const u = f * (X[0] * dx + X[1] * dy + X[2] * dz) / zc + cx;
      const v = f * (Y[0] * dx + Y[1] * dy + Y[2] * dz) / zc + cyy;
      const r = Math.min(6, Math.max(0.5, 0.5 * st.pointSize * f / zc));
      const u0 = Math.max(0, Math.floor(u - r)), u1 = Math.min(W - 1, Math.floor(u + r));
      const v0 = Math.max(0, Math.floor(v - r)), v1 = Math.min(H - 1, Math.floor(v + r));
      if (u0 > u1 || v0 > v1) continue;
      const color = 0xff000000 | (C[3 * i + 2] << 16) | (C[3 * i + 1] << 8) | C[3 * i];
      for (let yy = v0; yy <= v1; yy++) {
        let k = yy * W + u0;
        for (let xx = u0; xx <= u1; xx++, k++) {
          if (zc < zbuf[k]) { zbuf[k] = zc; px[k] = color; }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    const project = (p) => {
      const dx = p[0] - e[0], dy = p[1] - e[1], dz = p[2] - e[2];
      const zc = Z[0] * dx + Z[1] * dy + Z[2] * dz;
      if (zc <= near) return null;
      return [f * (X[0] * dx + X[1] * dy + X[2] * dz) / zc + cx, f * (Y[0] * dx + Y[1] * dy + Y[2] * dz) / zc + cyy];
    };
    for (const cam of st.cameras) {
      ctx.strokeStyle = cam.color || "#ff8c00";
      ctx.lineWidth = cam.width || 1.5;
      for (const fr of cam.frusta || []) {
        const q = fr.map(project);
        if (q.some((p) => p === null)) continue;
        ctx.beginPath();
        for (let k = 1; k < 5; k++) { ctx.moveTo(q[0][0], q[0][1]); ctx.lineTo(q[k][0], q[k][1]); }
        ctx.moveTo(q[1][0], q[1][1]);
        for (const k of [2, 3, 4, 1]) ctx.lineTo(q[k][0], q[k][1]);
        ctx.stroke();
      }
      if (cam.path && cam.path.length > 1) {
        ctx.beginPath();
        let started = false;
        for (const p of cam.path) {
          const q = project(p);
          if (q === null) { started = false; continue; }
          if (started) ctx.lineTo(q[0], q[1]); else ctx.moveTo(q[0], q[1]);
          started = true;
        }
        ctx.stroke();
      }
    }
    ctx.fillStyle = "#dddddd";
    ctx.font = "12px sans-serif";
    let y = 16;
    for (const cam of st.cameras) {
      if (!cam.label) continue;
      ctx.fillStyle = cam.color || "#dddddd";
      ctx.fillText(cam.label, 8, y);
      y += 15;
    }
    ctx.fillStyle = "#aaaaaa";
    ctx.fillText(st.n ? "drag: orbit  shift/right-drag: pan  wheel: dolly  W/A/S/D/R/F: fly  double-click: condition view"
      : "no scene yet: load an image or an example", 8, H - 8);
    canvas.dataset.points = String(st.n);
    canvas.dataset.frusta = String(st.cameras.reduce((s, c) => s + (c.frusta || []).length, 0));
  }

  function redraw() {
    if (st.queued) return;
    st.queued = true;
    requestAnimationFrame(draw);
  }

  function move(dx, dy, dz) {  // in camera axes, scene units
    const ax = axes();
    for (let i = 0; i < 3; i++) st.target[i] += dx * ax[0][i] + dy * ax[1][i] + dz * ax[2][i];
    redraw();
  }

  root.addEventListener("contextmenu", (ev) => { if (ev.target.tagName === "CANVAS") ev.preventDefault(); });
  root.addEventListener("pointerdown", (ev) => {
    if (ev.target.tagName !== "CANVAS") return;
    ev.target.focus();
    st.drag = {x: ev.clientX, y: ev.clientY, pan: ev.shiftKey || ev.button === 2};
  });
  window.addEventListener("pointerup", () => { st.drag = null; });
  window.addEventListener("pointermove", (ev) => {
    if (!st.drag) return;
    const dx = ev.clientX - st.drag.x, dy = ev.clientY - st.drag.y;
    st.drag.x = ev.clientX;
    st.drag.y = ev.clientY;
    if (st.drag.pan) {
      const s = st.distance * 0.002;
      move(-dx * s, -dy * s, 0);
    } else {
      st.yaw += dx * 0.005;  // grab the scene: drag right -> the camera goes left around the target
      st.pitch = Math.max(-1.5, Math.min(1.5, st.pitch - dy * 0.005));
      redraw();
    }
  });
  root.addEventListener("wheel", (ev) => {
    if (ev.target.tagName !== "CANVAS") return;
    ev.preventDefault();
    st.distance = Math.max(1e-3, st.distance * Math.exp(ev.deltaY * 0.001));
    redraw();
  }, {passive: false});
  root.addEventListener("dblclick", (ev) => { if (ev.target.tagName === "CANVAS") { home(); redraw(); } });
  root.addEventListener("keydown", (ev) => {
    if (ev.target.tagName !== "CANVAS") return;
    const s = st.step, k = ev.key.toLowerCase();
    const moves = {w: [0, 0, s], s: [0, 0, -s], a: [-s, 0, 0], d: [s, 0, 0], r: [0, -s, 0], f: [0, s, 0]};
    if (moves[k]) { ev.preventDefault(); move(...moves[k]); }
  });
  window.addEventListener("resize", redraw);

  window.worldstereoViewports = window.worldstereoViewports || {};
  window.worldstereoViewports[name] = {
    pose: pose,
    orbit: (dyaw, dpitch) => { st.yaw += dyaw; st.pitch += dpitch; redraw(); },
    home: () => { home(); redraw(); },
  };
  load(props.value);
  redraw();
  watch("value", () => { load(props.value); redraw(); });
})();
