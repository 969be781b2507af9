// Runs before first paint (classic script) so a stored theme does not flash.
(function () {
  try {
    var t = localStorage.getItem('tracedx-theme');
    if (t === 'dark' || t === 'light') document.documentElement.dataset.theme = t;
  } catch (e) { /* storage disabled: follow the system */ }
})();
