// Study pages: JavaScript only saves taps; every page works without it (plain forms).
(function () {
  "use strict";
  // Telegram Mini App: Telegram puts initData in the address fragment; send it to the server.
  var login = document.getElementById("tg-login");
  if (login) {
    var hash = new URLSearchParams(location.hash.slice(1));
    var data = hash.get("tgWebAppData");
    if (data) {
      login.elements.init_data.value = data;
      login.submit();
    }
  }
  // Back to a page the browser kept in memory: show what is true now (e.g. the next question).
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { location.reload(); }
  });
  // One tap answers once: later taps while the page is on its way are ignored.
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
      if (event.submitter) { event.submitter.classList.add("chosen"); }
    });
  });
})();
