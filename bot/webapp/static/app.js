// Study pages: JavaScript only saves taps and reloads; every page works without it (plain forms).
(function () {
  "use strict";
  // Telegram Mini App: Telegram puts initData in the address fragment; send it to the server.
  var login = document.getElementById("tg-login");
  if (login) {
    var data = new URLSearchParams(location.hash.slice(1)).get("tgWebAppData");
    if (data) {
      login.elements.init_data.value = data;
      login.submit();
    }
  }
  // Back to a page the browser kept in memory: show what is true now (e.g. the next question).
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { location.reload(); }
  });
  // One tap answers once; an answer goes without reloading the page (the server's next page
  // replaces this one, and the address becomes the page's own, so back never re-answers).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.sent) { event.preventDefault(); return; }
    form.dataset.sent = "1";
    if (event.submitter) { event.submitter.classList.add("chosen"); }
    if (!form.classList.contains("quiz") || !window.fetch || !window.DOMParser) { return; }
    event.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    if (event.submitter && event.submitter.name) { body.append(event.submitter.name, event.submitter.value); }
    fetch(form.action, { method: "POST", body: body, credentials: "same-origin" })
      .then(function (response) {
        return response.text().then(function (html) {
          var page = new DOMParser().parseFromString(html, "text/html");
          document.title = page.title;
          document.body.replaceWith(page.body);
          history.replaceState(null, "", response.url);
          window.scrollTo(0, 0);
        });
      })
      .catch(function () { location.reload(); });
  });
})();
