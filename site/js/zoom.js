// Zoom and pan of an image inside a scrolling viewport (the box editor's). The image is drawn at
// `scale` CSS px per image px; the wheel zooms around the pointer and keeps the image point under
// it in place; space-drag or the middle button pans, as do the scrollbars.

const MAX_SCALE = 8; // 800 %
const STEP = 1.25;

/**
 * viewport: the scrolling element; img: the image inside it (its box sets the layout size);
 * width, height: the image's natural size; onChange(percent): after every change of scale.
 * Returns {fit, actual, zoomIn, zoomOut, detach}.
 */
export function zoomable(viewport, img, width, height, onChange) {
  let scale = 1;
  let fitted = true; // follows the viewport's size until the visitor zooms
  let pan = null;
  let space = false;

  const inner = () => {
    const cs = getComputedStyle(viewport);
    return [
      viewport.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight),
      viewport.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom),
    ];
  };
  const fitScale = () => {
    const [w, h] = inner();
    return Math.max(0.01, Math.min(w / width, h / height));
  };
  const center = () => {
    const v = viewport.getBoundingClientRect();
    return [v.left + v.width / 2, v.top + v.height / 2];
  };

  /** Draw at `next` px per image px; the image point at (clientX, clientY) stays there. */
  function setScale(next, clientX, clientY) {
    const r = img.getBoundingClientRect();
    const x = (clientX - r.left) / scale;
    const y = (clientY - r.top) / scale;
    scale = Math.max(Math.min(fitScale(), 1), Math.min(MAX_SCALE, next));
    img.style.width = `${width * scale}px`;
    img.style.height = `${height * scale}px`;
    const moved = img.getBoundingClientRect();
    viewport.scrollLeft += moved.left + x * scale - clientX;
    viewport.scrollTop += moved.top + y * scale - clientY;
    onChange(Math.round(scale * 100));
  }

  function fit() {
    fitted = true;
    setScale(fitScale(), ...center());
  }
  function actual() {
    fitted = false;
    setScale(1, ...center());
  }
  function zoomBy(factor, clientX, clientY) {
    fitted = false;
    const [cx, cy] = center();
    setScale(scale * factor, clientX ?? cx, clientY ?? cy);
  }

  const onWheel = (event) => {
    event.preventDefault();
    const pixels = event.deltaMode === 1 ? event.deltaY * 40 : event.deltaY; // lines -> px
    zoomBy(Math.exp(-pixels / 500), event.clientX, event.clientY);
  };
  // Capture phase: a pan starts before the image's own handlers would start drawing a box.
  const onDown = (event) => {
    if (event.button !== 1 && !(event.button === 0 && space)) return;
    event.preventDefault();
    event.stopPropagation();
    pan = { x: event.clientX, y: event.clientY, left: viewport.scrollLeft, top: viewport.scrollTop };
    viewport.setPointerCapture(event.pointerId);
    viewport.classList.add("panning");
  };
  const onMove = (event) => {
    if (!pan) return;
    viewport.scrollLeft = pan.left - (event.clientX - pan.x);
    viewport.scrollTop = pan.top - (event.clientY - pan.y);
  };
  const endPan = () => {
    pan = null;
    viewport.classList.remove("panning");
  };
  const onSpace = (event) => {
    if (event.key !== " " || event.target instanceof HTMLInputElement) return;
    event.preventDefault(); // no page scroll
    space = event.type === "keydown";
    viewport.classList.toggle("pan-ready", space);
  };
  viewport.addEventListener("wheel", onWheel, { passive: false });
  viewport.addEventListener("pointerdown", onDown, true);
  viewport.addEventListener("pointermove", onMove);
  viewport.addEventListener("pointerup", endPan);
  viewport.addEventListener("lostpointercapture", endPan);
  document.addEventListener("keydown", onSpace);
  document.addEventListener("keyup", onSpace);
  const resized = new ResizeObserver(() => fitted && fit());
  resized.observe(viewport);
  fit();

  return {
    fit,
    actual,
    zoomIn: () => zoomBy(STEP),
    zoomOut: () => zoomBy(1 / STEP),
    detach() {
      resized.disconnect();
      document.removeEventListener("keydown", onSpace);
      document.removeEventListener("keyup", onSpace);
    },
  };
}
