// Prompts editor: live preview. The page works without this file (the Preview button
// posts the form); with it, edits to the template, prompt.yaml or a variable are debounced
// and the form (with its CSRF field) is posted to the same-origin preview route, whose HTML
// fragment (escaped on the server) replaces the preview panel.
(function () {
  "use strict";
  var form = document.querySelector("form.prompt-editor[data-preview-url]");
  var panel = document.getElementById("prompt-preview");
  if (!form || !panel || !window.fetch || !window.FormData) { return; }
  var url = form.getAttribute("data-preview-url");
  var timer = null;
  var sequence = 0;

  function preview() {
    var mine = ++sequence;
    var body = new FormData(form);
    body.set("action", "preview");
    panel.classList.add("loading");
    fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { "X-Requested-With": "fetch" }
    }).then(function (response) {
      return response.text();
    }).then(function (html) {
      if (mine === sequence) { panel.innerHTML = html; }
    }).catch(function () {
      if (mine === sequence) { panel.innerHTML = '<p class="error" role="alert">The preview could not be reached.</p>'; }
    }).then(function () {
      if (mine === sequence) { panel.classList.remove("loading"); }
    });
  }

  form.addEventListener("input", function (event) {
    var target = event.target;
    if (!target || !target.name || ["message", "author"].indexOf(target.name) >= 0) { return; }
    window.clearTimeout(timer);
    timer = window.setTimeout(preview, 400);
  });
  form.addEventListener("change", function (event) {
    if (event.target && event.target.tagName === "SELECT") {
      window.clearTimeout(timer);
      timer = window.setTimeout(preview, 100);
    }
  });
}());
