// Starts Swagger UI on /docs: a file of its own, not an inline script, so that the page runs
// under a Content-Security-Policy of `script-src 'self'`. The document's address is on the page.
window.addEventListener("load", () => {
  const root = document.getElementById("swagger-ui");
  // validatorUrl null: Swagger UI would otherwise load a badge from validator.swagger.io.
  window.ui = SwaggerUIBundle({ url: root.dataset.url, dom_id: "#swagger-ui", validatorUrl: null });
});
