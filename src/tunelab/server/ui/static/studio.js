// tunelab studio: the little behaviour htmx does not give. No inline script anywhere (CSP).
// Forms and buttons with data-confirm ask first.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);
