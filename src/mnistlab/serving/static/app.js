// mnistlab draw-a-digit page. No dependencies: Pointer Events for mouse, pen and touch; fetch
// for the API. The pad is sent as a PNG and preprocessed by the server, exactly like an upload,
// so the page and the API share the one preprocessing path.
"use strict";

(() => {
  const pad = document.getElementById("pad");
  const ctx = pad.getContext("2d");
  const seen = document.getElementById("seen");
  const seenCtx = seen.getContext("2d");
  const undoButton = document.getElementById("undo");
  const clearButton = document.getElementById("clear");
  const uploadButton = document.getElementById("upload-button");
  const upload = document.getElementById("upload");
  const labelEl = document.getElementById("label");
  const messageEl = document.getElementById("message");
  const barsEl = document.getElementById("bars");
  const modelInfoEl = document.getElementById("model-info");

  // A stroke ~1/12 of the pad is ~2 pixels at 28x28 after the 20-pixel box: like MNIST's pens.
  const STROKE = pad.width / 12;
  const LIVE_MS = 150; // at most one request per this many ms while the pointer moves

  let strokes = []; // each: array of [x, y] in pad pixels
  let current = null; // the stroke being drawn
  let photo = null; // an uploaded picture drawn under the strokes
  let classNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
  let sent = 0; // request counter: only the newest answer is shown
  let lastSent = 0;
  let timer = null;
  let queued = false; // a picture is waiting for its request (timer or PNG encoding pending)

  // body[data-predicting] is "yes" from a change of the picture until the answer for the newest
  // picture is shown, then "no": a fixed point for tests and assistive tools to wait for.
  function setPredicting(busy) {
    document.body.dataset.predicting = busy ? "yes" : "no";
  }

  // Drawing -----------------------------------------------------------------------------------

  function clearPad() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function drawStroke(points) {
    ctx.strokeStyle = "#000000";
    ctx.fillStyle = "#000000";
    ctx.lineWidth = STROKE;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    if (points.length === 1) {
      const [x, y] = points[0];
      ctx.beginPath();
      ctx.arc(x, y, STROKE / 2, 0, 2 * Math.PI);
      ctx.fill();
      return;
    }
    ctx.beginPath();
    ctx.moveTo(points[0][0], points[0][1]);
    for (let i = 1; i < points.length; i++) ctx.lineTo(points[i][0], points[i][1]);
    ctx.stroke();
  }

  function drawPhoto() {
    const scale = Math.min(pad.width / photo.width, pad.height / photo.height);
    const w = photo.width * scale;
    const h = photo.height * scale;
    ctx.drawImage(photo, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }

  function redraw() {
    clearPad();
    if (photo) drawPhoto();
    for (const s of strokes) drawStroke(s);
    updateButtons();
  }

  function updateButtons() {
    undoButton.disabled = strokes.length === 0;
    clearButton.disabled = strokes.length === 0 && !photo;
  }

  function padPoint(event) {
    const r = pad.getBoundingClientRect();
    return [
      ((event.clientX - r.left) / r.width) * pad.width,
      ((event.clientY - r.top) / r.height) * pad.height,
    ];
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    current = [padPoint(event)];
    strokes.push(current);
    drawStroke(current);
    updateButtons();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!current) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) current.push(padPoint(e));
    redraw();
    schedule(false);
  });

  function endStroke() {
    if (!current) return;
    current = null;
    schedule(true);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  undoButton.addEventListener("click", () => {
    strokes.pop();
    redraw();
    if (strokes.length || photo) schedule(true);
    else showEmpty();
  });

  clearButton.addEventListener("click", () => {
    strokes = [];
    photo = null;
    redraw();
    showEmpty();
  });

  uploadButton.addEventListener("click", () => upload.click());

  upload.addEventListener("change", async () => {
    const file = upload.files && upload.files[0];
    upload.value = "";
    if (!file) return;
    strokes = [];
    photo = null;
    try {
      photo = await createImageBitmap(file);
    } catch {
      photo = null; // e.g. TIFF: the browser cannot show it, the server can still read it
    }
    redraw();
    updateButtons();
    clearButton.disabled = false;
    await predict(file, file.name || "photo");
  });

  // Predicting --------------------------------------------------------------------------------

  function schedule(now) {
    clearTimeout(timer);
    queued = true;
    setPredicting(true);
    const wait = now ? 0 : Math.max(0, LIVE_MS - (performance.now() - lastSent));
    timer = setTimeout(() => {
      lastSent = performance.now();
      pad.toBlob((blob) => {
        if (blob) predict(blob, "drawing.png");
      }, "image/png");
    }, wait);
  }

  async function predict(blob, name) {
    // Answers can arrive out of order; only the newest request's answer is shown. Older ones
    // are not aborted: they cost the server a millisecond and aborting shows as failed requests.
    const id = ++sent;
    queued = false;
    setPredicting(true);
    const form = new FormData();
    form.append("file", blob, name);
    let response;
    let body;
    try {
      response = await fetch("/api/predict?return_image=true", { method: "POST", body: form });
      body = await response.json();
    } catch (err) {
      if (id === sent) showError("Cannot reach the server: " + err.message);
      if (id === sent && !queued) setPredicting(false);
      return;
    }
    if (id !== sent) return; // a newer picture is on its way
    if (!response.ok) {
      showError(body && body.detail ? body.detail : `The server answered ${response.status}.`);
    } else {
      showPrediction(body);
    }
    if (!queued) setPredicting(false);
  }

  // Showing -----------------------------------------------------------------------------------

  function buildBars() {
    barsEl.replaceChildren();
    classNames.forEach((name, i) => {
      const li = document.createElement("li");
      li.dataset.index = String(i);
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      const track = document.createElement("span");
      track.className = "track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      track.appendChild(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = "–";
      li.append(label, track, pct);
      barsEl.appendChild(li);
    });
  }

  function setBars(probabilities, top) {
    barsEl.querySelectorAll("li").forEach((li, i) => {
      const p = probabilities ? probabilities[i] : 0;
      li.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
      li.querySelector(".pct").textContent = probabilities ? `${(p * 100).toFixed(1)}%` : "–";
      li.classList.toggle("top", i === top);
    });
  }

  function showSeen(image) {
    if (!image) {
      seenCtx.fillStyle = "#000";
      seenCtx.fillRect(0, 0, seen.width, seen.height);
      return;
    }
    const size = image.length;
    if (seen.width !== size) {
      seen.width = size;
      seen.height = size;
    }
    const data = seenCtx.createImageData(size, size);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = image[y][x];
        const k = 4 * (y * size + x);
        data.data[k] = v;
        data.data[k + 1] = v;
        data.data[k + 2] = v;
        data.data[k + 3] = 255;
      }
    }
    seenCtx.putImageData(data, 0, 0);
  }

  function showPrediction(r) {
    showSeen(r.image);
    if (r.status === "ok") {
      labelEl.replaceChildren();
      labelEl.append("It looks like ");
      const strong = document.createElement("strong");
      strong.textContent = r.class_name;
      labelEl.append(strong, ` (${(r.confidence * 100).toFixed(1)}% sure)`);
      labelEl.dataset.label = String(r.label);
      messageEl.textContent = "";
      setBars(r.probabilities, r.label);
      pad.setAttribute("aria-label", `Drawing pad. The model reads your digit as ${r.class_name}.`);
    } else {
      labelEl.textContent = r.status === "blank" ? "No digit yet." : "That does not look like one digit.";
      delete labelEl.dataset.label;
      messageEl.textContent = r.message;
      setBars(null, -1);
    }
  }

  function showEmpty() {
    sent++; // any answer still on its way is for a picture that is gone
    clearTimeout(timer);
    queued = false;
    setPredicting(false);
    labelEl.textContent = "Draw a digit to see a prediction.";
    delete labelEl.dataset.label;
    messageEl.textContent = "";
    setBars(null, -1);
    showSeen(null);
    pad.setAttribute("aria-label", "Drawing pad: draw one digit here with a mouse, pen or finger");
  }

  function showError(text) {
    labelEl.textContent = "No prediction.";
    delete labelEl.dataset.label;
    messageEl.textContent = text;
    setBars(null, -1);
  }

  async function loadModelInfo() {
    try {
      const response = await fetch("/api/model");
      const info = await response.json();
      if (!response.ok) throw new Error(info.detail || response.status);
      classNames = info.class_names;
      const parts = [];
      parts.push(info.run_name ? `Run ${info.run_name}` : `Model: ${info.source}`);
      if (info.dataset) parts.push(`dataset ${info.dataset}`);
      if (info.test_accuracy != null) {
        parts.push(`test accuracy ${(info.test_accuracy * 100).toFixed(2)}%`);
      }
      if (info.params != null) parts.push(`${info.params.toLocaleString("en")} parameters`);
      parts.push(`${info.image_size}×${info.image_size} input`);
      modelInfoEl.textContent = parts.join(" · ");
      document.getElementById("seen-caption").textContent =
        `What the model saw (${info.image_size}×${info.image_size})`;
    } catch (err) {
      modelInfoEl.textContent = "Could not load the model description: " + err.message;
    }
    buildBars();
    setBars(null, -1);
  }

  clearPad();
  showSeen(null);
  buildBars();
  setPredicting(false);
  loadModelInfo();
})();
