/* The dashboard's only script (the CSP allows no inline one): confirmations before destructive
   plain forms, and a message in place when an HTMX request fails with any status. */
(function () {
  "use strict";

  // <form data-confirm="Archive Acme?">: ask first. HTMX forms use hx-confirm instead.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  var ADVICE = {
    401: "Your session ended. Sign in again in another tab, then send this form again: what you typed is still here.",
    403: "Your role may not do this. Ask an admin if you need it.",
    404: "This no longer exists; reload the page to see what is there now.",
    409: "Someone changed this at the same time. Reload the page, check, then try again.",
    413: "The form is too large to send.",
    429: "Too many requests. Wait a minute, then try again.",
    500: "Something went wrong on the server; nothing was changed. Try again; if it happens again, tell an admin.",
    503: "The service is busy or down for a moment. Try again: sending the same form again cannot apply it twice."
  };

  function serverMessage(xhr) {
    try {
      var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
      var node = doc.querySelector("[data-error-message]");
      return node ? node.textContent.trim() : "";
    } catch (e) {
      return "";
    }
  }

  function showError(elt, text, status) {
    var form = elt.closest("form") || elt;
    var box = form.querySelector(".http-error");
    if (!box) {
      box = document.createElement("p");
      box.className = "error form-error http-error";
      box.setAttribute("role", "alert");
      var heading = form.querySelector("h2");
      if (heading) heading.after(box); else form.prepend(box);
    }
    box.textContent = text;
    if (status === 401) {
      var link = document.createElement("a");
      link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = " Sign in";
      box.append(link);
    }
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var advice = ADVICE[xhr.status] || ADVICE[500];
    var said = serverMessage(xhr);
    showError(event.detail.elt, said && said !== advice ? said + " " + advice : advice, xhr.status);
  });
  document.addEventListener("htmx:sendError", function (event) {
    showError(event.detail.elt, "The server could not be reached. Check your connection and try again: sending the same form again cannot apply it twice.", 0);
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt.closest && event.detail.elt.closest("form");
    var box = form && form.querySelector(".http-error");
    if (box) box.remove();
  });

  // <button data-copy="#new-key">: copy the element's text.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });
})();
