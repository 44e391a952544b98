// Live updates without a reload: poll a small stamp of what the control
// plane knows (newest version, served version, each proxy's state); when it
// changes, fetch this page again and swap its <main>.
(function () {
  var stamp = null;
  function swap() {
    return fetch(location.pathname, { cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (fresh && main) { main.replaceWith(fresh); }
      });
  }
  function tick() {
    fetch("/ui/live", { cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (s) {
        var changed = stamp !== null && s !== stamp;
        stamp = s;
        return changed ? swap() : null;
      })
      .catch(function () {})
      .then(function () { setTimeout(tick, 1000); });
  }
  tick();
})();
