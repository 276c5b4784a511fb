// Batchwatch page: the drift heatmap draws each run of equal verdicts as one link to its first window.
// This refines a click to the window under the pointer and shows which window that is while hovering.
// Without it the page still works, one run per link.
(function () {
  function windowUnder(svg, event) {
    const windows = svg.dataset.windows.split(" ");
    const labelWidth = Number(svg.dataset.labelWidth);
    const box = svg.viewBox.baseVal;
    const point = new DOMPoint(event.clientX, event.clientY).matrixTransform(svg.getScreenCTM().inverse());
    const index = Math.floor(((point.x - labelWidth) / (box.width - labelWidth)) * windows.length);
    return index >= 0 && index < windows.length ? windows[index] : null;
  }
  document.querySelectorAll("svg.heatmap").forEach(function (svg) {
    const readout = document.getElementById("heatmap-readout");
    svg.addEventListener("click", function (event) {
      const link = event.target.closest("a");
      const window = windowUnder(svg, event);
      if (!link || !window) return;
      event.preventDefault();
      const url = new URL(link.getAttribute("href"), document.baseURI);
      url.searchParams.set("window_end", window.replace("Z", "+00:00"));
      document.location.assign(url.toString());
    });
    svg.addEventListener("mousemove", function (event) {
      const check = event.target.closest("g.check");
      const window = windowUnder(svg, event);
      if (!readout) return;
      const link = event.target.closest("a");
      readout.textContent = check && window
        ? check.dataset.check.replace(":", " · ") + ", window ending " + window.replace("T", " ").replace(":00Z", " UTC") +
          ": " + (link ? link.dataset.verdict : "not run")
        : "\u00a0";
    });
  });
})();
